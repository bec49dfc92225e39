"""The operators' second factor: RFC 6238 codes, replay refusal, and the JSON login asking for
``totp_code`` (both databases)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from tallygate.db.engine import Database
from tallygate.kit.clock import to_epoch_us
from tallygate.models.users import login_failures, users
from tallygate.users import service, totp
from tests.fixtures.factories import PASSWORD, TOTP_SECRET, totp_code
from tests.fixtures.server import LiveServer

RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # base32 of "12345678901234567890"


class TestCodes:
    @pytest.mark.parametrize(
        ("seconds", "code"),
        [(59, "287082"), (1111111109, "081804"), (1234567890, "005924"), (2000000000, "279037")],
    )
    def test_rfc_6238_sha1_test_vectors(self, seconds: int, code: str) -> None:
        # RFC 6238 appendix B gives 8 digits; the last 6 are the 6-digit code
        assert totp.code_at(RFC_SECRET, seconds * 1_000_000) == code

    def test_one_step_of_drift_either_way_is_accepted_and_no_more(self) -> None:
        now = 1234567890 * 1_000_000
        step = totp.step_at(now)
        for delta in (-1, 0, 1):
            code = totp.code_for_step(RFC_SECRET, step + delta)
            assert totp.matching_step(RFC_SECRET, code, now) == step + delta
        for delta in (-2, 2):
            assert (
                totp.matching_step(RFC_SECRET, totp.code_for_step(RFC_SECRET, step + delta), now)
                is None
            )

    def test_malformed_codes_never_match(self) -> None:
        for code in ("", "12345", "1234567", "abcdef", "12 34 5x"):
            assert totp.matching_step(RFC_SECRET, code, 59_000_000) is None
        assert totp.matching_step(RFC_SECRET, "287 082", 59_000_000) == 1

    def test_a_new_secret_is_160_bits_of_base32_and_the_uri_names_it(self) -> None:
        secret = totp.new_secret()
        assert len(secret) == 32 and secret != totp.new_secret()
        uri = totp.provisioning_uri(secret, "op@example.com")
        assert uri.startswith("otpauth://totp/Tallygate:op@example.com?secret=" + secret)
        assert "issuer=Tallygate" in uri and "digits=6" in uri and "period=30" in uri


class TestCheck:
    def test_a_code_is_accepted_once_and_its_replay_refused(
        self, live: LiveServer, db: Database
    ) -> None:
        op = live.make.operator(email="op@example.com")
        now = to_epoch_us(live.clock.now())
        code = totp_code(now)
        key = live.make.secret_key
        with db.begin() as conn:
            service.check_totp(conn, op, secret_key=key, code=code, now_us=now)
        with pytest.raises(service.InvalidTotpCode, match="already used"), db.begin() as conn:
            service.check_totp(conn, op, secret_key=key, code=code, now_us=now)
        # an earlier step's code is refused too, even within the drift window
        earlier = totp.code_for_step(TOTP_SECRET, totp.step_at(now) - 1)
        with pytest.raises(service.InvalidTotpCode, match="already used"), db.begin() as conn:
            service.check_totp(conn, op, secret_key=key, code=earlier, now_us=now)
        live.clock.advance(30)
        later = to_epoch_us(live.clock.now())
        with db.begin() as conn:
            service.check_totp(conn, op, secret_key=key, code=totp_code(later), now_us=later)

    def test_the_secret_is_stored_sealed(self, live: LiveServer, db: Database) -> None:
        op = live.make.operator(email="op@example.com")
        with db.read() as conn:
            stored = conn.execute(select(users.c.totp_secret).where(users.c.id == op.id)).scalar()
        assert stored and stored.startswith("v1.") and TOTP_SECRET not in stored

    def test_without_a_secret_the_operator_is_told_to_set_one_up(
        self, live: LiveServer, db: Database
    ) -> None:
        op = live.make.operator(email="op@example.com", totp_secret=None)
        assert not op.totp_enrolled
        with pytest.raises(service.TotpNotEnrolled), db.begin() as conn:
            service.check_totp(conn, op, secret_key=live.make.secret_key, code="123456", now_us=1)


class TestJsonLogin:
    def _login(self, live: LiveServer, **body: object) -> tuple[int, dict]:  # type: ignore[type-arg]
        with live.client() as http:
            response = http.post("/api/auth/login", json={"password": PASSWORD, **body})
        return response.status_code, response.json()

    def test_an_operator_needs_the_code_and_a_user_does_not(self, live: LiveServer) -> None:
        live.make.operator(email="op@example.com")
        live.make.user(email="ann@example.com")
        status, body = self._login(live, email="op@example.com")
        assert status == 401
        assert body["error"]["code"] == "totp_required"
        assert body["error"]["param"] == "totp_code"
        assert "6-digit code" in body["error"]["message"]
        status, body = self._login(live, email="op@example.com", totp_code="000000")
        assert (status, body["error"]["code"]) == (401, "invalid_totp_code")
        code = totp_code(to_epoch_us(live.clock.now()))
        status, body = self._login(live, email="op@example.com", totp_code=code)
        assert status == 200 and body["user"]["role"] == "operator"
        status, body = self._login(live, email="op@example.com", totp_code=code)
        assert (status, body["error"]["code"]) == (401, "invalid_totp_code")
        assert "already used" in body["error"]["message"]
        status, body = self._login(live, email="ann@example.com")
        assert status == 200

    def test_a_wrong_password_with_a_right_code_is_still_refused(self, live: LiveServer) -> None:
        live.make.operator(email="op@example.com")
        code = totp_code(to_epoch_us(live.clock.now()))
        status, body = self._login(
            live, email="op@example.com", password="not the password", totp_code=code
        )
        assert (status, body["error"]["code"]) == (401, "invalid_credentials")

    def test_an_operator_without_a_second_factor_cannot_log_in_by_api(
        self, live: LiveServer
    ) -> None:
        live.make.operator(email="op@example.com", totp_secret=None)
        status, body = self._login(live, email="op@example.com", totp_code="123456")
        assert status == 403
        assert body["error"]["code"] == "totp_not_enrolled"
        assert "sign in on the console" in body["error"]["message"]

    def test_wrong_codes_count_toward_the_login_limit(self, live: LiveServer, db: Database) -> None:
        live.make.operator(email="op@example.com")
        for _ in range(10):
            status, _body = self._login(live, email="op@example.com", totp_code="000000")
            assert status == 401
        with db.read() as conn:
            keys = [r[0] for r in conn.execute(select(login_failures.c.key))]
        assert keys.count("email:op@example.com") == 10
        code = totp_code(to_epoch_us(live.clock.now()))
        status, body = self._login(live, email="op@example.com", totp_code=code)
        assert status == 429
        assert "too many failed sign-ins" in body["error"]["message"]
        live.clock.advance(601)
        code = totp_code(to_epoch_us(live.clock.now()))
        status, body = self._login(live, email="op@example.com", totp_code=code)
        assert status == 200


def test_clock_start_is_what_the_vectors_assume(live: LiveServer) -> None:
    assert live.clock.now() == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
