"""The failed-claim limit: guessing codes must be slow.

Once an account, or a client address, has ``redeem_max_failures`` failed claims within
``redeem_failure_window_seconds``, every further claim is refused with 429 and a Retry-After —
even one with a valid code — until the oldest of them age out of the window. Failures are rows
in the database (``redeem_failures``), so the limit holds across gateway processes and
restarts; a 429 itself is not counted, so waiting always ends the lockout.

The client address is the TCP peer, unless the peer is one of ``trusted_proxies``: then
``X-Forwarded-For`` is read from the right, skipping trusted proxies, and the first address
that is not one of them is the client."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from sqlalchemy import Connection
from starlette.exceptions import HTTPException

from tallygate.credits import repository as repo

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TooManyAttempts(HTTPException):
    """429 with Retry-After (rendered by the HTTP error handler as ``rate_limited``)."""

    def __init__(self, retry_after: int, scope: str) -> None:
        super().__init__(
            429,
            detail=f"too many failed code claims from this {scope}: try again in "
            f"{retry_after} seconds",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


@lru_cache(maxsize=32)
def _networks(trusted: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(t.strip(), strict=False) for t in trusted if t.strip())


def _trusted(address: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[str]) -> str:
    """The client's address: ``forwarded_for`` is believed only from a trusted peer."""
    peer = peer or "unknown"
    networks = _networks(tuple(trusted))
    if not forwarded_for or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a garbled header: fall back to what we know
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else peer


def check(
    conn: Connection,
    *,
    user_id: int,
    address: str,
    now_us: int,
    max_failures: int,
    window_seconds: int,
) -> None:
    """Raise TooManyAttempts when the account or the address has used up its failures."""
    window_us = window_seconds * 1_000_000
    since = now_us - window_us
    for scope, times in (
        ("account", repo.failures_by_user(conn, user_id, since)),
        ("address", repo.failures_by_address(conn, address, since)),
    ):
        if len(times) >= max_failures:
            # Claims resume once all but max_failures - 1 of these have left the window.
            frees_at = times[len(times) - max_failures] + window_us
            raise TooManyAttempts(max(1, -(-(frees_at - now_us) // 1_000_000)), scope)


def record_failure(
    conn: Connection,
    *,
    user_id: int,
    address: str,
    reason: str,
    now_us: int,
    window_seconds: int,
) -> None:
    repo.record_failure(
        conn,
        user_id=user_id,
        address=address,
        reason=reason[:32],
        now_us=now_us,
        prune_before=now_us - window_seconds * 1_000_000,
    )
