"""The user service against the database directly, on both backends."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from tallygate.audit import service as audit
from tallygate.db.engine import Database
from tallygate.kit.clock import FrozenClock, to_epoch_us
from tallygate.ledger import Ledger
from tallygate.models.users import user_sessions
from tallygate.users import passwords, repository, service
from tallygate.users.service import EmailTaken, InvalidCredentials, InvalidEmail, WeakPassword

PASSWORD = "correct horse battery"


def create(db: Database, ledger: Ledger, email: str, **kwargs: object) -> service.User:
    with db.begin() as conn:
        return service.create_user(
            conn,
            ledger,
            email=email,
            password=str(kwargs.pop("password", PASSWORD)),
            now_us=ledger.now_us(),
            **kwargs,  # type: ignore[arg-type]
        )


class TestCreateUser:
    def test_stores_a_normalised_email_and_an_argon2_hash_never_the_password(
        self, db: Database, ledger: Ledger
    ) -> None:
        user = create(db, ledger, "Ann@Example.com")
        assert user.email == "ann@example.com"
        with db.read() as conn:
            row = repository.user_by_email(conn, "ann@example.com")
        assert row is not None
        assert row["password_hash"].startswith("$argon2id$")
        assert PASSWORD not in row["password_hash"]

    def test_opens_both_ledger_buckets_in_the_same_transaction(
        self, db: Database, ledger: Ledger
    ) -> None:
        user = create(db, ledger, "ann@example.com")
        with db.read() as conn:
            tx = ledger.tx(conn)
            balances = [ledger.balance(tx, user.id, bucket) for bucket in ("credit", "routed")]
        assert [(b.currency, b.balance_nanos) for b in balances] == [("USD", 0), ("CNY", 0)]

    def test_a_duplicate_email_is_a_conflict_whatever_its_case(
        self, db: Database, ledger: Ledger
    ) -> None:
        create(db, ledger, "ann@example.com")
        with pytest.raises(EmailTaken, match="a user with email ann@example.com already exists"):
            create(db, ledger, "ANN@example.com")

    @pytest.mark.parametrize("email", ["ann", "ann@", "@example.com", "ann example@x.org"])
    def test_an_invalid_email_is_refused(self, db: Database, ledger: Ledger, email: str) -> None:
        with pytest.raises(InvalidEmail, match="invalid email address"):
            create(db, ledger, email)

    def test_a_password_shorter_than_10_characters_is_refused(
        self, db: Database, ledger: Ledger
    ) -> None:
        with pytest.raises(WeakPassword, match="at least 10 characters"):
            create(db, ledger, "ann@example.com", password="123456789")
        create(db, ledger, "ann@example.com", password="1234567890")

    def test_creating_an_operator_is_audited_and_a_user_is_not(
        self, db: Database, ledger: Ledger
    ) -> None:
        create(db, ledger, "ann@example.com")
        op = create(db, ledger, "op@example.com", role="operator", actor="cli", source="cli")
        with db.read() as conn:
            events = audit.list_events(ledger.tx(conn))
        assert [(e.action, e.target, e.source, e.after) for e in events] == [
            ("user.create", f"user:{op.id}", "cli", {"email": "op@example.com", "role": "operator"})
        ]


class TestAuthenticate:
    def test_returns_the_user_for_the_right_password(self, db: Database, ledger: Ledger) -> None:
        user = create(db, ledger, "ann@example.com")
        with db.begin() as conn:
            credentials = service.authenticate(conn, email="ann@example.com", password=PASSWORD)
        assert credentials == service.Credentials(user, rehash=None)

    @pytest.mark.parametrize(
        ("email", "password"),
        [("ann@example.com", "wrong password"), ("bob@example.com", PASSWORD), ("nope", PASSWORD)],
    )
    def test_refuses_with_one_message_for_every_failure(
        self, db: Database, ledger: Ledger, email: str, password: str
    ) -> None:
        create(db, ledger, "ann@example.com")
        with db.begin() as conn, pytest.raises(InvalidCredentials) as refused:
            service.authenticate(conn, email=email, password=password)
        assert refused.value.message == "invalid email or password"

    def test_a_hash_with_weaker_parameters_is_upgraded_when_the_session_starts(
        self, db: Database, ledger: Ledger
    ) -> None:
        user = create(db, ledger, "ann@example.com")
        weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
        with db.begin() as conn:
            repository.set_password_hash(conn, user.id, weak)
        with db.read() as conn:
            credentials = service.authenticate(conn, email="ann@example.com", password=PASSWORD)
        assert credentials.rehash is not None
        with db.begin() as conn:
            service.start_session(conn, credentials, now_us=ledger.now_us(), ttl_seconds=60)
        with db.read() as conn:
            row = repository.user_by_email(conn, "ann@example.com")
        assert row is not None
        assert row["password_hash"] != weak
        assert not passwords.needs_rehash(row["password_hash"])


class TestSessions:
    def test_only_the_sha256_of_the_token_is_stored(
        self, db: Database, ledger: Ledger, clock: FrozenClock
    ) -> None:
        user = create(db, ledger, "ann@example.com")
        with db.begin() as conn:
            session = service.create_session(
                conn, user, now_us=to_epoch_us(clock.now()), ttl_seconds=60
            )
        assert session.token is not None
        assert len(session.token) >= 43  # 32 random bytes, base64url
        with db.read() as conn:
            stored = conn.execute(user_sessions.select()).mappings().one()
        assert stored["token_hash"] == service.token_hash(session.token)
        assert session.token not in stored.values()

    def test_a_session_resolves_until_it_expires(
        self, db: Database, ledger: Ledger, clock: FrozenClock
    ) -> None:
        user = create(db, ledger, "ann@example.com")
        now = to_epoch_us(clock.now())
        with db.begin() as conn:
            token = service.create_session(conn, user, now_us=now, ttl_seconds=60).token
        assert token is not None
        with db.read() as conn:
            assert service.resolve_session(conn, token, now_us=now + 59_999_999).user == user
            with pytest.raises(service.InvalidSession, match="expired"):
                service.resolve_session(conn, token, now_us=now + 60_000_000)

    def test_revoking_twice_is_harmless_and_the_token_stays_dead(
        self, db: Database, ledger: Ledger, clock: FrozenClock
    ) -> None:
        user = create(db, ledger, "ann@example.com")
        now = to_epoch_us(clock.now())
        with db.begin() as conn:
            token = service.create_session(conn, user, now_us=now, ttl_seconds=60).token
        assert token is not None
        with db.begin() as conn:
            session = service.resolve_session(conn, token, now_us=now)
            service.revoke_session(conn, session, now_us=now)
            service.revoke_session(conn, session, now_us=now + 1)
        with db.read() as conn, pytest.raises(service.InvalidSession, match="logged out"):
            service.resolve_session(conn, token, now_us=now)


class TestPasswords:
    def test_verify_accepts_the_password_and_rejects_others_and_garbage_hashes(self) -> None:
        hashed = passwords.hash_password(PASSWORD)
        assert passwords.verify_password(hashed, PASSWORD)
        assert not passwords.verify_password(hashed, PASSWORD + "!")
        assert not passwords.verify_password("not-a-hash", PASSWORD)

    def test_a_hash_with_todays_parameters_needs_no_rehash(self) -> None:
        assert not passwords.needs_rehash(passwords.hash_password(PASSWORD))
        weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
        assert passwords.needs_rehash(weak)
