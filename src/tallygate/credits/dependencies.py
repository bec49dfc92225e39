"""The claim guard: the failed-attempt limit around ``POST /api/credits/redeem``.

Declare it before ``WriteConn``: it checks the limit before the claim's transaction opens,
and because dependencies close in reverse order, it sees a refused claim only after that
transaction rolled back — then it records the failure in a transaction of its own (on
SQLite a second write transaction could not start while the first held the lock)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from tallygate.credits import throttle
from tallygate.credits.claims import ClaimRefused
from tallygate.state import State
from tallygate.users.dependencies import CurrentUser


@dataclass(frozen=True, slots=True)
class Attempt:
    user_id: int
    client_address: str


def claim_attempt(request: Request, user: CurrentUser, state: State) -> Iterator[Attempt]:
    settings = state.settings
    peer = request.client.host if request.client else None
    address = throttle.client_address(
        peer, request.headers.get("x-forwarded-for"), settings.trusted_proxies
    )
    with state.db.read() as conn:
        throttle.check(
            conn,
            user_id=user.id,
            address=address,
            now_us=state.now_us(),
            max_failures=settings.redeem_max_failures,
            window_seconds=settings.redeem_failure_window_seconds,
        )
    try:
        yield Attempt(user.id, address)
    except ClaimRefused as refused:
        with state.db.begin() as conn:
            throttle.record_failure(
                conn,
                user_id=user.id,
                address=address,
                reason=refused.code,
                now_us=state.now_us(),
                window_seconds=settings.redeem_failure_window_seconds,
            )
        raise


ClaimAttempt = Annotated[Attempt, Depends(claim_attempt, scope="function")]
"""The claimant and their client address, after the failed-attempt limit let them through."""
