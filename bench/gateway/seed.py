"""Seed a fresh Tallygate database for the gateway benchmark (run BEFORE starting the server).

Creates (direct SQL + the ledger API, like /tmp/gateway_seed_example.py): the ledger's platform
accounts, one user with a large balance in both buckets, one API key (sha256 stored), the model
``mock-model`` with a routed offer and a price version, one channel pointing at the mock
upstream's ``/v1`` base URL, and bumps the configuration version.

    TALLYGATE_SECRET_KEY=… python bench/gateway/seed.py DATABASE_URL UPSTREAM_BASE_URL API_KEY
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from tallygate.config import Settings  # noqa: E402
from tallygate.db.engine import Database  # noqa: E402
from tallygate.db.migrate import upgrade  # noqa: E402
from tallygate.kit import config_version, crypto  # noqa: E402
from tallygate.ledger import Ledger  # noqa: E402

BALANCE_NANOS = 10**18  # 1e9 currency units: never runs out during a benchmark


def seed(url: str, upstream_v1: str, key: str) -> None:
    upgrade(url)
    settings = Settings(database_url=url)
    db = Database(url)
    ledger = Ledger({"credit": settings.credit_currency, "routed": settings.routed_currency})
    try:
        with db.begin() as conn:
            tx = ledger.tx(conn)
            ledger.bootstrap(tx)
            tx.run(
                "INSERT INTO users (email, password_hash, role, created_at) "
                "VALUES ('bench@example.com', 'x', 'user', 0)"
            )
            user_id = int(tx.one("SELECT id FROM users WHERE email = 'bench@example.com'")[0])
            ledger.open_user(tx, user_id)
            for bucket in ("credit", "routed"):
                ledger.credit(
                    tx,
                    user_id=user_id,
                    bucket=bucket,
                    amount_nanos=BALANCE_NANOS,
                    kind="topup",
                    source="clearing:sandbox",
                    idempotency_key=f"bench-seed:{bucket}",
                )
            tx.run(
                "INSERT INTO api_keys (user_id, prefix, key_hash, label, created_at) "
                "VALUES (?, ?, ?, 'bench', 0)",
                (user_id, key[:8], hashlib.sha256(key.encode()).hexdigest()),
            )
            key_id = int(tx.one("SELECT id FROM api_keys WHERE label = 'bench'")[0])
            tx.run(
                "INSERT INTO key_spend (key_id, bucket) VALUES (?, 'credit'), (?, 'routed')",
                (key_id, key_id),
            )
            tx.run(
                "INSERT INTO models (name, context_length, output_cap, created_at) "
                "VALUES ('mock-model', 8192, 1000, 0)"
            )
            model_id = int(tx.one("SELECT id FROM models WHERE name = 'mock-model'")[0])
            tx.run(
                "INSERT INTO model_offers (model_id, route_type) VALUES (?, 'routed')", (model_id,)
            )
            offer_id = int(tx.one("SELECT id FROM model_offers WHERE model_id = ?", (model_id,))[0])
            tx.run(
                "INSERT INTO price_versions (offer_id, currency, input_per_m_nanos, "
                "output_per_m_nanos, cached_input_per_m_nanos, source, created_by, created_at) "
                "VALUES (?, ?, 1000000000, 2000000000, 500000000, 'manual', 'bench', 0)",
                (offer_id, settings.routed_currency),
            )
            pv = int(tx.one("SELECT id FROM price_versions WHERE offer_id = ?", (offer_id,))[0])
            tx.run("UPDATE model_offers SET price_version_id = ? WHERE id = ?", (pv, offer_id))
            tx.run(
                "INSERT INTO channels (name, label, base_url, secret_ciphertext, route_type, "
                "created_at) VALUES ('mock', 'Mock', ?, ?, 'routed', 0)",
                (upstream_v1, crypto.encrypt(settings.secret_key, "sk-mock-upstream")),
            )
            channel_id = int(tx.one("SELECT id FROM channels WHERE name = 'mock'")[0])
            tx.run(
                "INSERT INTO channel_models (channel_id, model_name, upstream_model) "
                "VALUES (?, 'mock-model', 'mock-model')",
                (channel_id,),
            )
            config_version.bump(tx, 0)
    finally:
        db.dispose()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    seed(sys.argv[1], sys.argv[2], sys.argv[3])
