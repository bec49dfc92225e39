"""The operator's charge policy (see ``charge_policy``): read it, change it (audited, config
version bumped, in the caller's transaction). Without a stored policy the defaults apply."""

from __future__ import annotations

import orjson
from sqlalchemy import Connection

from tallygate.audit import service as audit
from tallygate.billing import policy_repository as repo
from tallygate.billing.charge_policy import SETTINGS_KEY, ChargePolicy, parse
from tallygate.kit import config_version
from tallygate.ledger.tx import from_connection


def current(conn: Connection) -> ChargePolicy:
    stored = repo.read(conn, SETTINGS_KEY)
    return ChargePolicy() if stored is None else parse(orjson.loads(stored))


def set_policy(
    conn: Connection, values: dict[str, object], *, operator: str, now_us: int, reason: str = ""
) -> ChargePolicy:
    """Validate and store ``values`` (classes left out keep their defaults)."""
    policy = parse(values)
    before = current(conn)
    if policy == before and repo.read(conn, SETTINGS_KEY) is not None:
        return policy
    repo.write(conn, SETTINGS_KEY, orjson.dumps(policy.as_dict()).decode(), now_us)
    tx = from_connection(conn)
    audit.record(
        tx,
        now_us=now_us,
        actor=operator,
        source="operator",
        action="charge_policy.set",
        target="charge_policy",
        before=before.as_dict(),
        after=policy.as_dict(),
        reason=reason,
    )
    config_version.bump(tx, now_us)
    return policy
