"""The receipts' index on the upstream Responses id covers only the receipts that have one
(decision 0021), and the gateway's lookup of a previous response still uses it."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from tallygate.db.engine import Database

LOOKUP = (
    "SELECT channel_id FROM receipts WHERE upstream_response_id = :rid "
    "AND channel_id IS NOT NULL ORDER BY id DESC LIMIT 1"
)


def test_the_previous_response_lookup_uses_the_partial_index(db: Database) -> None:
    engine = create_engine(db.url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SET enable_seqscan = off"))
                plan = "\n".join(
                    r[0] for r in conn.execute(text("EXPLAIN " + LOOKUP), {"rid": "resp_1"})
                )
                definition = conn.execute(
                    text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                    {"n": "ix_receipts_upstream_response_id"},
                ).scalar_one()
            else:
                plan = "\n".join(
                    str(r[-1])
                    for r in conn.execute(
                        text("EXPLAIN QUERY PLAN " + LOOKUP.replace(":rid", "'resp_1'"))
                    )
                )
                definition = conn.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = :n"),
                    {"n": "ix_receipts_upstream_response_id"},
                ).scalar_one()
    finally:
        engine.dispose()
    assert "ix_receipts_upstream_response_id" in plan
    assert "upstream_response_id IS NOT NULL" in definition
