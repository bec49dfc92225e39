"""The migrations are the schema: applying them gives exactly the models' tables (no drift),
they have one head, and they downgrade and upgrade again cleanly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from tallygate.db.engine import Database
from tallygate.db.migrate import alembic_config, downgrade, upgrade
from tallygate.models import metadata


class TestMigrations:
    def test_there_is_a_single_head(self) -> None:
        heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
        assert len(heads) == 1, heads

    def test_the_migrated_schema_equals_the_models(self, db: Database) -> None:
        engine = create_engine(db.url)
        try:
            with engine.connect() as conn:
                diff = compare_metadata(MigrationContext.configure(conn), metadata)
        finally:
            engine.dispose()
        assert diff == []

    def test_downgrade_and_upgrade_round_trip(self, tmp_path: object) -> None:
        url = f"sqlite:///{tmp_path}/round-trip.db"
        upgrade(url)
        downgrade(url, "base")
        upgrade(url)
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        finally:
            engine.dispose()
