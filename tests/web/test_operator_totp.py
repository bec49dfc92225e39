"""Operators' sign-in on the pages: the password, then a TOTP code (the session exists only
after it); a first sign-in sets up the second factor; wrong codes are counted by the login
limit, which every process shares through the database. Both databases, real servers."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
from sqlalchemy import func, select

from tallygate.audit import service as audit
from tallygate.kit.clock import to_epoch_us
from tallygate.models.users import login_failures
from tallygate.users import recovery, totp
from tests.fixtures.factories import PASSWORD, totp_code
from tests.fixtures.server import AppFactory, LiveServer, serving
from tests.web.helpers import csrf_of, session_client, signed_in, submit


def password_step(client: httpx.Client, email: str, next: str = "/") -> httpx.Response:
    return submit(client, "/login", "/login", email=email, password=PASSWORD, next=next)


def now_code(live: LiveServer) -> str:
    return totp_code(to_epoch_us(live.clock.now()))


def confirm_setup(client: httpx.Client, live: LiveServer, secret: str, next: str) -> list[str]:
    """Confirm a new secret with the code it gives now: the session starts, and the page shows
    ten recovery codes once (not cached), with a link on to ``next``."""
    code = totp.code_at(secret, to_epoch_us(live.clock.now()))
    done = submit(client, "/login/totp/enrol", "/login/totp", code=code)
    assert done.status_code == 200 and "Save your recovery codes" in done.text
    assert done.headers["cache-control"] == "no-store"
    assert f'href="{html.escape(next)}" id="continue"' in done.text
    assert "tallygate_session=" in done.headers["set-cookie"]
    shown = re.search(r'data-testid="recovery-codes">([^<]*)<', done.text)
    assert shown
    codes = shown.group(1).split()
    assert len(codes) == 10 and all(recovery.looks_like(c) for c in codes)
    return codes


class TestSecondStep:
    def test_the_session_starts_only_after_the_code(self, live: LiveServer) -> None:
        live.make.operator(email="op@example.com")
        with live.client() as client:
            first = password_step(client, "op@example.com", next="/operator")
            assert first.status_code == 303 and first.headers["location"] == "/login/totp"
            assert "tallygate_session" not in client.cookies
            assert "tallygate_2fa=" in first.headers["set-cookie"]
            assert "HttpOnly" in first.headers["set-cookie"]
            # nothing opens yet
            assert client.get("/operator").status_code == 303
            form = client.get("/login/totp")
            assert "Enter your code" in form.text and 'autocomplete="one-time-code"' in form.text
            wrong = submit(client, "/login/totp", "/login/totp", code="000000")
            assert wrong.status_code == 401 and "invalid second-factor code" in wrong.text
            assert "tallygate_session" not in client.cookies
            done = submit(client, "/login/totp", "/login/totp", code=now_code(live))
            assert done.status_code == 303 and done.headers["location"] == "/operator"
            assert client.get("/operator").status_code == 200

    def test_a_code_is_not_accepted_twice(self, live: LiveServer) -> None:
        live.make.operator(email="op@example.com")
        code = now_code(live)
        with live.client() as first:
            password_step(first, "op@example.com")
            assert submit(first, "/login/totp", "/login/totp", code=code).status_code == 303
        with live.client() as second:
            password_step(second, "op@example.com")
            replay = submit(second, "/login/totp", "/login/totp", code=code)
            assert replay.status_code == 401 and "already used" in replay.text
            live.clock.advance(30)
            assert (
                submit(second, "/login/totp", "/login/totp", code=now_code(live)).status_code == 303
            )

    def test_no_code_page_without_the_password_and_no_forged_challenge(
        self, live: LiveServer
    ) -> None:
        live.make.operator(email="op@example.com")
        with live.client() as client:
            assert client.get("/login/totp").headers["location"] == "/login"
            client.cookies.set("tallygate_2fa", "v1.forged.cookie", path="/login")
            assert client.get("/login/totp").headers["location"] == "/login"
            login = client.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
            assert token
            posted = client.post(
                "/login/totp", data={"csrf_token": token.group(1), "code": now_code(live)}
            )
            assert (
                posted.status_code == 401 and "enter your email and password again" in posted.text
            )
            assert "tallygate_session" not in client.cookies

    def test_the_challenge_expires_after_five_minutes(self, live: LiveServer) -> None:
        live.make.operator(email="op@example.com")
        with live.client() as client:
            password_step(client, "op@example.com")
            token = csrf_of(client.get("/login/totp"))
            live.clock.advance(301)
            late = client.post("/login/totp", data={"csrf_token": token, "code": now_code(live)})
            assert late.status_code == 401 and "expired" in late.text
            assert "tallygate_session" not in client.cookies

    def test_a_user_signs_in_with_the_password_alone(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        with live.client() as client:
            done = password_step(client, "ann@example.com")
            assert done.status_code == 303 and done.headers["location"] == "/"
            assert "tallygate_session" in client.cookies

    def test_the_helper_signs_an_operator_in(self, live: LiveServer) -> None:
        live.make.operator(email="op@example.com")
        client = signed_in(live, "op@example.com")
        try:
            assert client.get("/operator").status_code == 200
        finally:
            client.close()


class TestEnrolment:
    def test_a_first_sign_in_shows_a_secret_and_needs_a_code_from_it(
        self, live: LiveServer
    ) -> None:
        live.make.operator(email="new-op@example.com", totp_secret=None)
        with live.client() as client:
            first = password_step(client, "new-op@example.com", next="/operator")
            assert first.headers["location"] == "/login/totp/enrol"
            page = client.get("/login/totp/enrol")
            assert "Set up your second factor" in page.text
            secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
            assert secret
            uri = totp.provisioning_uri(secret.group(1), "new-op@example.com")
            assert uri.replace("&", "&amp;") in page.text
            wrong = submit(client, "/login/totp/enrol", "/login/totp", code="123456")
            assert wrong.status_code == 401 and "does not match" in wrong.text
            assert secret.group(1) in wrong.text  # still shown, to try again
            codes = confirm_setup(client, live, secret.group(1), "/operator")
            assert client.get("/operator").status_code == 200
        # from now on the same secret is asked for, and the setup page is not shown again
        live.clock.advance(30)
        with live.client() as client:
            assert password_step(client, "new-op@example.com").headers["location"] == "/login/totp"
            code = totp.code_at(secret.group(1), to_epoch_us(live.clock.now()))
            assert submit(client, "/login/totp", "/login/totp", code=code).status_code == 303
        # and one of the codes shown is a way back in without the app
        with live.client() as client:
            password_step(client, "new-op@example.com")
            used = submit(client, "/login/totp", "/login/totp", code=codes[3])
            assert used.headers["location"] == "/login/totp/enrol"


class TestSessionWithoutSecondFactor:
    """An operator whose session predates their second factor (an older install) is sent to set
    one up, and comes back to the page they asked for: never a dead-end 403."""

    def test_the_console_sends_them_to_set_it_up_and_back(self, live: LiveServer) -> None:
        bare = live.make.operator(email="bare@example.com", totp_secret=None)
        with session_client(live.base_url, live.make.session_token(bare)) as client:
            asked = client.get("/operator/topups?state=paid")
            assert asked.status_code == 303
            assert (
                asked.headers["location"] == "/login/totp?next=%2Foperator%2Ftopups%3Fstate%3Dpaid"
            )
            step = client.get(asked.headers["location"])
            assert step.status_code == 303 and step.headers["location"] == "/login/totp/enrol"
            page = client.get("/login/totp/enrol")
            assert "Set up your second factor" in page.text
            secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
            assert secret
            confirm_setup(client, live, secret.group(1), "/operator/topups?state=paid")
            assert client.get("/operator/topups?state=paid").status_code == 200

    def test_the_old_session_ends_when_the_new_one_starts(self, live: LiveServer) -> None:
        bare = live.make.operator(email="bare@example.com", totp_secret=None)
        old = live.make.session_token(bare)
        with session_client(live.base_url, old) as client:
            client.get("/login/totp?next=/operator")
            page = client.get("/login/totp/enrol")
            secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
            assert secret
            confirm_setup(client, live, secret.group(1), "/operator")
        with session_client(live.base_url, old) as stale:
            assert stale.get("/operator").headers["location"] == "/login?next=%2Foperator"

    def test_a_form_post_goes_to_the_setup_then_the_console(self, live: LiveServer) -> None:
        bare = live.make.operator(email="bare@example.com", totp_secret=None)
        person = live.make.user(email="ann@example.com")
        with session_client(live.base_url, live.make.session_token(bare)) as client:
            token = csrf_of(client.get("/"))
            posted = client.post(
                f"/operator/users/{person.id}/adjust",
                data={"csrf_token": token, "bucket": "credit", "amount": "5", "reason": "x"},
            )
        assert posted.status_code == 303
        assert posted.headers["location"] == "/login/totp?next=%2Foperator"

    def test_the_code_page_keeps_next_for_someone_signed_out(self, live: LiveServer) -> None:
        with live.client() as client:
            response = client.get("/login/totp?next=/operator/audit")
        assert response.headers["location"] == "/login?next=%2Foperator%2Faudit"

    def test_a_user_is_still_refused_the_console(self, live: LiveServer) -> None:
        ann = live.make.user(email="ann@example.com")
        with session_client(live.base_url, live.make.session_token(ann)) as client:
            response = client.get("/operator")
            assert response.status_code == 403 and "operators only" in response.text
            # and the code page does not enrol a user: it just goes where it was asked
            assert client.get("/login/totp?next=/keys").headers["location"] == "/keys"


def recovery_codes(live: LiveServer, operator: Any) -> list[str]:
    """What ``tallygate create-admin`` printed for this operator."""
    with live.db.begin() as conn:
        return recovery.issue(
            conn,
            operator,
            secret_key=live.app.state.tallygate.settings.secret_key,
            now_us=to_epoch_us(live.clock.now()),
            actor="cli",
            source="cli",
        )


def audit_trail(live: LiveServer) -> list[tuple[str, str, Any]]:
    with live.db.read() as conn:
        return [(e.action, e.target, e.after) for e in audit.list_events(live.ledger.tx(conn))]


class TestRecoveryCodes:
    """An operator who lost their authenticator app signs in once with a recovery code, and
    sets up a new app before the console opens; the old app stops counting then."""

    def test_a_recovery_code_leads_to_a_new_authenticator_then_the_console(
        self, live: LiveServer
    ) -> None:
        op = live.make.operator(email="op@example.com")
        codes = recovery_codes(live, op)
        with live.client() as client:
            password_step(client, "op@example.com", next="/operator/audit")
            form = client.get("/login/totp")
            assert "Lost your authenticator app?" in form.text and 'id="recovery-code"' in form.text
            typed = codes[0].lower().replace("-", " ")  # as a person might type it
            used = submit(client, "/login/totp", "/login/totp", code=typed)
            assert used.status_code == 303 and used.headers["location"] == "/login/totp/enrol"
            assert "tallygate_session" not in client.cookies  # not yet: a new app first
            page = client.get("/login/totp/enrol")
            assert "Recovery code accepted" in page.text
            secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
            assert secret
            fresh = confirm_setup(client, live, secret.group(1), "/operator/audit")
            assert client.get("/operator/audit").status_code == 200
        trail = audit_trail(live)
        assert ("user.recovery_code_use", f"user:{op.id}", {"codes_left": 9}) in trail
        assert (
            "user.totp_enrol",
            f"user:{op.id}",
            {"email": "op@example.com", "replaced": True},
        ) in trail
        # the old app no longer signs in, the new one does; the used code is spent
        live.clock.advance(30)
        with live.client() as client:
            password_step(client, "op@example.com")
            old = submit(client, "/login/totp", "/login/totp", code=now_code(live))
            assert old.status_code == 401
            again = submit(client, "/login/totp", "/login/totp", code=codes[0])
            assert again.status_code == 401 and "already used" in again.text
            # the new app came with new codes: the old ones are gone
            stale = submit(client, "/login/totp", "/login/totp", code=codes[1])
            assert stale.status_code == 401
            assert len(fresh) == 10 and not set(fresh) & set(codes)
            new = totp.code_at(secret.group(1), to_epoch_us(live.clock.now()))
            assert submit(client, "/login/totp", "/login/totp", code=new).status_code == 303

    def test_a_wrong_recovery_code_is_refused_and_counted(self, live: LiveServer) -> None:
        op = live.make.operator(email="op@example.com")
        recovery_codes(live, op)
        with live.client() as client:
            password_step(client, "op@example.com")
            wrong = submit(client, "/login/totp", "/login/totp", code="AAAA-BBBB-CCCC-DDDD")
            assert wrong.status_code == 401
            assert "not valid or was already used" in wrong.text
            assert "tallygate_session" not in client.cookies
        with live.db.read() as conn:
            failures = conn.execute(select(func.count()).select_from(login_failures)).scalar()
        assert failures == 2  # the email's key and the address's key

    def test_an_abandoned_setup_keeps_the_old_app(self, live: LiveServer) -> None:
        op = live.make.operator(email="op@example.com")
        codes = recovery_codes(live, op)
        with live.client() as client:
            password_step(client, "op@example.com")
            submit(client, "/login/totp", "/login/totp", code=codes[1])
        with live.client() as client:  # another time, the app found again
            password_step(client, "op@example.com")
            assert (
                submit(client, "/login/totp", "/login/totp", code=now_code(live)).status_code == 303
            )


class TestSharedLimit:
    def test_wrong_codes_count_and_every_process_sees_the_lockout(
        self, live: LiveServer, make_app: AppFactory
    ) -> None:
        live.make.operator(email="op@example.com")
        with serving(make_app()) as other_url:
            with live.client() as client:
                password_step(client, "op@example.com")
                for _ in range(10):
                    wrong = submit(client, "/login/totp", "/login/totp", code="000000")
                    assert wrong.status_code == 401
                locked = submit(client, "/login/totp", "/login/totp", code=now_code(live))
                assert locked.status_code == 429 and "too many failed sign-ins" in locked.text
            # another process over the same database refuses the password step too
            with httpx.Client(base_url=other_url, timeout=10) as elsewhere:
                refused = password_step(elsewhere, "op@example.com")
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == "600"
            live.clock.advance(601)
            with httpx.Client(base_url=other_url, timeout=10) as elsewhere:
                assert password_step(elsewhere, "op@example.com").status_code == 303
