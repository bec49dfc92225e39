"""Channels for operators (``/admin/api/channels``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from tallygate.channels import probe, service
from tallygate.channels.schemas import (
    ChannelCreate,
    ChannelOut,
    ChannelTest,
    ChannelTestResult,
    ChannelUpdate,
    MappingsPut,
)
from tallygate.channels.service import TestTarget
from tallygate.state import ReadConn, State, WriteConn
from tallygate.users.dependencies import CurrentOperator

admin_router = APIRouter(prefix="/channels", tags=["admin"])

ChannelId = Annotated[int, Path(ge=1)]


@admin_router.get("")
def list_channels(conn: ReadConn) -> list[ChannelOut]:
    return service.list_channels(conn)


@admin_router.post("", status_code=201)
def create_channel(
    body: ChannelCreate, operator: CurrentOperator, conn: WriteConn, state: State
) -> ChannelOut:
    return service.create_channel(
        conn,
        body,
        operator=operator.email,
        secret_key=state.settings.secret_key,
        now_us=state.now_us(),
    )


@admin_router.get("/{channel_id}")
def get_channel(channel_id: ChannelId, conn: ReadConn) -> ChannelOut:
    return service.get_channel(conn, channel_id)


@admin_router.patch("/{channel_id}")
def update_channel(
    channel_id: ChannelId,
    body: ChannelUpdate,
    operator: CurrentOperator,
    conn: WriteConn,
    state: State,
) -> ChannelOut:
    return service.update_channel(
        conn,
        channel_id,
        body,
        operator=operator.email,
        secret_key=state.settings.secret_key,
        now_us=state.now_us(),
    )


@admin_router.post("/{channel_id}/enable")
def enable_channel(
    channel_id: ChannelId, operator: CurrentOperator, conn: WriteConn, state: State
) -> ChannelOut:
    return service.set_enabled(
        conn, channel_id, True, operator=operator.email, now_us=state.now_us()
    )


@admin_router.post("/{channel_id}/disable")
def disable_channel(
    channel_id: ChannelId, operator: CurrentOperator, conn: WriteConn, state: State
) -> ChannelOut:
    return service.set_enabled(
        conn, channel_id, False, operator=operator.email, now_us=state.now_us()
    )


@admin_router.put("/{channel_id}/models")
def put_models(
    channel_id: ChannelId,
    body: MappingsPut,
    operator: CurrentOperator,
    conn: WriteConn,
    state: State,
) -> ChannelOut:
    return service.put_mappings(
        conn, channel_id, body, operator=operator.email, now_us=state.now_us()
    )


def _test_target(
    channel_id: ChannelId, conn: ReadConn, state: State, body: ChannelTest | None = None
) -> TestTarget:
    return service.test_target(
        conn,
        channel_id,
        model=body.model if body else None,
        secret_key=state.settings.secret_key,
    )


@admin_router.post("/{channel_id}/test")
async def test_channel(
    target: Annotated[TestTarget, Depends(_test_target)],
) -> ChannelTestResult:
    """A real minimal chat completion (``max_tokens: 1``) through the channel."""
    return await probe.run(target)
