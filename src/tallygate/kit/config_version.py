"""A counter that every configuration change bumps (keys, models, prices, channels, policies),
so each gateway process can refresh its in-memory snapshot with one cheap read."""

from __future__ import annotations

from tallygate.ledger.tx import Tx

KEY = "config_version"


def bump(tx: Tx, now_us: int) -> None:
    """Call in the same transaction as the change."""
    updated = tx.run(
        "UPDATE settings_kv SET value_json = CAST(CAST(value_json AS INTEGER) + 1 AS TEXT), "
        "updated_at = ? WHERE key = ?",
        (now_us, KEY),
    )
    if not updated:
        tx.run(
            "INSERT INTO settings_kv (key, value_json, updated_at) VALUES (?, '1', ?) "
            "ON CONFLICT (key) DO UPDATE SET value_json = "
            "CAST(CAST(settings_kv.value_json AS INTEGER) + 1 AS TEXT)",
            (KEY, now_us),
        )


def read(tx: Tx) -> int:
    row = tx.one("SELECT value_json FROM settings_kv WHERE key = ?", (KEY,))
    return int(row[0]) if row else 0
