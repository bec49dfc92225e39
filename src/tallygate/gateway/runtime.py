"""Per-process gateway state, built in the app's lifespan: the group-commit ledger executor, the
shared upstream HTTP session, the configuration snapshot (refreshed when its version moves),
route health and rate limits (in Redis when ``TALLYGATE_REDIS_URL`` is set: gateway.shared)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict

import aiohttp
import anyio

from tallygate.gateway import snapshot as snap
from tallygate.gateway.shared import Health, Limiter, RedisLink
from tallygate.kit.clock import to_epoch_us
from tallygate.ledger.executor import LedgerExecutor
from tallygate.routing.health import HealthBoard
from tallygate.state import AppState
from tallygate.upstream.client import make_session
from tallygate.upstream.lean import LeanClient

logger = logging.getLogger(__name__)


class Runtime:
    def __init__(
        self, state: AppState, snapshot: snap.Snapshot, session: aiohttp.ClientSession
    ) -> None:
        settings = state.settings
        self.state = state
        self.settings = settings
        self.ledger = state.ledger
        self.clock = state.clock
        self.snapshot = snapshot
        self.session = session
        self.lean = LeanClient()
        """Plain-HTTP upstreams (decision 0007); aiohttp (``session``) for the rest."""
        self.executor = LedgerExecutor(state.db.engine, fault=state.ledger.fault)
        self.redis = (
            RedisLink(
                settings.redis_url,
                settings.redis_prefix,
                retry_seconds=settings.redis_retry_seconds,
            )
            if settings.redis_url
            else None
        )
        board = HealthBoard(
            state.clock,
            window=settings.circuit_window_seconds,
            min_failures=settings.circuit_min_failures,
            failure_ratio=settings.circuit_failure_ratio,
            cool_down=settings.circuit_cool_down_seconds,
        )
        self.health = Health(board, self.redis)
        self.limiter = Limiter(state.clock, self.redis)
        self.rng = random.Random()
        self._responses: OrderedDict[str, int] = OrderedDict()
        self._refresher: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()

    @classmethod
    async def start(cls, state: AppState) -> Runtime:
        first = await anyio.to_thread.run_sync(_load, state)
        runtime = cls(state, first, make_session())
        runtime._refresher = asyncio.create_task(runtime._refresh_loop(), name="gateway-refresh")
        return runtime

    def now_us(self) -> int:
        return to_epoch_us(self.clock.now())

    async def refresh(self) -> bool:
        """Reload the snapshot if the configuration version moved; True if it did."""
        async with self._reload_lock:
            version = await anyio.to_thread.run_sync(_version, self.state)
            if version == self.snapshot.version:
                return False
            self.snapshot = await anyio.to_thread.run_sync(_load, self.state)
            return True

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.config_refresh_seconds)
            try:
                await self.refresh()
            except Exception:
                logger.exception("gateway: configuration refresh failed; keeping the last one")

    def remember_response(self, response_id: str, channel_id: int | None) -> None:
        if channel_id is None:
            return
        self._responses[response_id] = channel_id
        if len(self._responses) > 50_000:
            self._responses.popitem(last=False)

    async def response_owner(self, response_id: str) -> int | None:
        """The channel that created an upstream response (memory, then the receipts)."""
        owner = self._responses.get(response_id)
        if owner is None:
            owner = await anyio.to_thread.run_sync(_response_owner, self.state, response_id)
        return owner

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.session.close()
        await self.lean.close()
        if self.redis is not None:
            await self.redis.close()
        await anyio.to_thread.run_sync(self.executor.close)


def _load(state: AppState) -> snap.Snapshot:
    with state.db.read() as conn:
        return snap.load(state.ledger.tx(conn), state.settings.secret_key)


def _response_owner(state: AppState, response_id: str) -> int | None:
    with state.db.read() as conn:
        row = state.ledger.tx(conn).one(
            "SELECT channel_id FROM receipts WHERE upstream_response_id = ? "
            "AND channel_id IS NOT NULL ORDER BY id DESC LIMIT 1",
            (response_id,),
        )
    return int(row[0]) if row else None


def _version(state: AppState) -> int:
    with state.db.read() as conn:
        return snap.current_version(state.ledger.tx(conn))
