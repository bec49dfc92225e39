"""``python -m tallygate`` as a subprocess, against a throw-away SQLite file and a throw-away
PostgreSQL database: what an operator types, what they read, and the exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from tallygate.config import Settings
from tallygate.db.engine import Database
from tallygate.kit.clock import SystemClock, to_epoch_us
from tallygate.users import recovery, totp
from tallygate.users import repository as users_repo
from tallygate.users import service as users
from tests.fixtures import databases

PASSWORD = "correct horse battery"


@dataclass
class Cli:
    url: str

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
        env["TALLYGATE_DATABASE_URL"] = self.url
        return subprocess.run(
            [sys.executable, "-m", "tallygate", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            start_new_session=True,  # no controlling terminal: password prompts read stdin
        )


@pytest.fixture
def cli(backend: str, tmp_path: Path) -> Iterator[Cli]:
    """A CLI bound to a brand-new, unmigrated database of the parametrised backend."""
    if backend == "sqlite":
        yield Cli(f"sqlite:///{tmp_path / 'cli.db'}")
        return
    databases.ensure_postgres()
    url = databases.create_pg_database("tg_cli")
    try:
        yield Cli(url)
    finally:
        databases.drop_pg_database(url)


@pytest.fixture
def migrated(cli: Cli) -> Cli:
    result = cli("migrate")
    assert result.returncode == 0, result.stderr
    return cli


class TestMigrate:
    def test_creates_the_schema_and_is_idempotent(self, cli: Cli) -> None:
        first = cli("migrate")
        assert first.returncode == 0, first.stderr
        assert "to the latest schema" in first.stdout
        assert cli("migrate").returncode == 0
        db = Database(cli.url)
        try:
            with db.read() as conn:
                assert conn.execute(text("SELECT COUNT(*) FROM users")).scalar_one() == 0
        finally:
            db.dispose()

    def test_an_unreachable_database_is_one_readable_line(self) -> None:
        result = Cli("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")("migrate")
        assert result.returncode == 1
        assert result.stderr.startswith("error: database error:")
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr


class TestCreateUsers:
    def test_create_admin_creates_an_operator(self, migrated: Cli) -> None:
        result = migrated("create-admin", "--email", "Op@Example.com", "--password", PASSWORD)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert lines[0] == "created operator op@example.com (id 1)"
        # the second factor is printed once: its secret and the otpauth URI for an app
        secret = lines[2].removeprefix("  secret: ")
        assert lines[3] == "  otpauth URI: " + totp.provisioning_uri(secret, "op@example.com")
        db = Database(migrated.url)
        try:
            with db.read() as conn:
                user = users.get_user(conn, 1)
                assert user.totp_enrolled
                stored = users_repo.totp_state(conn, 1)
            assert stored is not None and secret not in str(stored["totp_secret"])  # sealed
            with db.begin() as conn:
                users.check_totp(
                    conn,
                    user,
                    secret_key=Settings.model_fields["secret_key"].default,  # what the CLI ran with
                    code=totp.code_at(secret, to_epoch_us(SystemClock().now())),
                    now_us=to_epoch_us(SystemClock().now()),
                )
        finally:
            db.dispose()

    def test_create_admin_prints_ten_recovery_codes_once_and_keeps_only_their_hashes(
        self, migrated: Cli
    ) -> None:
        result = migrated("create-admin", "--email", "op@example.com", "--password", PASSWORD)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert lines[4].startswith("recovery codes (shown once")
        codes = [line.strip() for line in lines[5:]]
        assert len(codes) == 10 and len(set(codes)) == 10
        assert all(recovery.looks_like(c) and len(c) == 19 for c in codes)
        db = Database(migrated.url)
        try:
            with db.read() as conn:
                stored = conn.execute(text("SELECT code_hash FROM recovery_codes")).scalars().all()
                actions = conn.execute(text("SELECT action FROM audit_events")).scalars().all()
            assert len(stored) == 10 and not set(codes) & set(stored)
            assert "user.recovery_codes_issue" in actions
        finally:
            db.dispose()

    def test_reset_totp_gives_an_operator_a_new_secret_and_new_codes(self, migrated: Cli) -> None:
        first = migrated("create-admin", "--email", "op@example.com", "--password", PASSWORD)
        old_secret = first.stdout.splitlines()[2].removeprefix("  secret: ")
        old_codes = {line.strip() for line in first.stdout.splitlines()[5:]}
        result = migrated("reset-totp", "--email", "OP@example.com")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert lines[0] == "reset the second factor of operator op@example.com (id 1)"
        secret = lines[2].removeprefix("  secret: ")
        codes = {line.strip() for line in lines[5:]}
        assert secret != old_secret and len(codes) == 10 and not codes & old_codes
        db = Database(migrated.url)
        key = Settings.model_fields["secret_key"].default
        now_us = to_epoch_us(SystemClock().now())
        try:
            with db.begin() as conn:
                user = users.get_user(conn, 1)
                with pytest.raises(users.InvalidTotpCode):  # the old app no longer counts
                    users.check_totp(
                        conn,
                        user,
                        secret_key=key,
                        code=totp.code_at(old_secret, now_us),
                        now_us=now_us,
                    )
                with pytest.raises(users.InvalidTotpCode):  # nor do the old codes
                    recovery.use(conn, user, secret_key=key, code=min(old_codes), now_us=now_us)
                assert recovery.use(conn, user, secret_key=key, code=min(codes), now_us=now_us) == 9
        finally:
            db.dispose()

    def test_reset_totp_refuses_unknown_people_and_users(self, migrated: Cli) -> None:
        migrated("create-user", "--email", "ann@example.com", "--password", PASSWORD)
        nobody = migrated("reset-totp", "--email", "nobody@example.com")
        user = migrated("reset-totp", "--email", "ann@example.com")
        assert nobody.returncode == 1 and nobody.stderr == (
            "error: no user with the email nobody@example.com\n"
        )
        assert user.returncode == 1 and "is not an operator" in user.stderr

    def test_create_user_creates_a_user(self, migrated: Cli) -> None:
        result = migrated("create-user", "--email", "ann@example.com", "--password", PASSWORD)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "created user ann@example.com (id 1)"

    def test_a_duplicate_email_is_a_readable_error_and_exit_1(self, migrated: Cli) -> None:
        migrated("create-user", "--email", "ann@example.com", "--password", PASSWORD)
        result = migrated("create-admin", "--email", "ANN@example.com", "--password", PASSWORD)
        assert result.returncode == 1
        assert result.stderr == "error: a user with email ann@example.com already exists\n"

    def test_a_short_password_is_a_readable_error_and_exit_1(self, migrated: Cli) -> None:
        result = migrated("create-user", "--email", "ann@example.com", "--password", "short")
        assert result.returncode == 1
        assert result.stderr == "error: password must be at least 10 characters long\n"

    def test_the_password_is_prompted_for_twice_when_not_given(self, migrated: Cli) -> None:
        result = migrated("create-user", "--email", "ann@example.com", stdin=f"{PASSWORD}\n" * 2)
        assert result.returncode == 0, result.stderr
        assert "created user ann@example.com" in result.stdout

    def test_an_unmigrated_database_says_to_migrate(self, cli: Cli) -> None:
        result = cli("create-user", "--email", "ann@example.com", "--password", PASSWORD)
        assert result.returncode == 1
        assert "run `tallygate migrate` first" in result.stderr
        assert "Traceback" not in result.stderr


class TestReconcile:
    def test_a_consistent_ledger_reconciles_with_exit_0(self, migrated: Cli) -> None:
        migrated("create-admin", "--email", "op@example.com", "--password", PASSWORD)
        result = migrated("reconcile")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("reconcile: OK (")

    def test_a_cached_balance_that_disagrees_with_its_postings_exits_1(self, migrated: Cli) -> None:
        migrated("create-user", "--email", "ann@example.com", "--password", PASSWORD)
        db = Database(migrated.url)
        try:
            with db.begin() as conn:
                conn.execute(
                    text("UPDATE accounts SET balance_nanos = 5 WHERE code = 'user:1:credit'")
                )
        finally:
            db.dispose()
        result = migrated("reconcile")
        assert result.returncode == 1
        assert "problem(s) found" in result.stdout
        assert "account user:1:credit: cached balance 5" in result.stdout
