"""Sign up, sign in, sign out: cookies, CSRF and the login rate limit."""

from __future__ import annotations

from tests.fixtures.factories import PASSWORD
from tests.fixtures.server import LiveServer
from tests.web.helpers import csrf_of, signed_in, submit


class TestSignUp:
    def test_a_newcomer_signs_up_and_lands_on_the_wallet(self, live: LiveServer) -> None:
        with live.client() as client:
            response = submit(
                client, "/signup", "/signup", email="New@Example.com", password=PASSWORD
            )
            assert response.status_code == 303
            assert response.headers["location"] == "/?welcome=1"
            cookie = response.headers["set-cookie"]
            assert "tallygate_session=" in cookie
            assert "HttpOnly" in cookie and "SameSite=lax" in cookie
            assert "Secure" not in cookie  # plain http on loopback
            wallet = client.get("/")
            assert wallet.status_code == 200
            assert "new@example.com" in wallet.text
            assert "Credit" in wallet.text and "Routed balance" in wallet.text

    def test_a_taken_email_and_a_short_password_are_explained(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        with live.client() as client:
            taken = submit(client, "/signup", "/signup", email="ann@example.com", password=PASSWORD)
            assert taken.status_code == 409
            assert "already exists" in taken.text
            short = submit(client, "/signup", "/signup", email="bob@example.com", password="short")
            assert short.status_code == 400
            assert "at least 10 characters" in short.text
            assert "Traceback" not in taken.text + short.text


class TestSignIn:
    def test_sign_in_then_out(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        client = signed_in(live, "ann@example.com")
        assert client.get("/keys").status_code == 200
        out = submit(client, "/", "/logout")
        assert out.status_code == 303 and out.headers["location"] == "/login"
        again = client.get("/keys")
        assert again.status_code == 303
        assert again.headers["location"].startswith("/login?next=")

    def test_next_brings_the_user_back_but_never_off_site(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        with live.client() as client:
            back = submit(
                client, "/login", "/login", email="ann@example.com", password=PASSWORD, next="/keys"
            )
            assert back.headers["location"] == "/keys"
        with live.client() as client:
            away = submit(
                client,
                "/login",
                "/login",
                email="ann@example.com",
                password=PASSWORD,
                next="//evil.example/",
            )
            assert away.headers["location"] == "/"

    def test_a_wrong_password_is_a_readable_refusal(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        with live.client() as client:
            response = submit(client, "/login", "/login", email="ann@example.com", password="nope")
            assert response.status_code == 401
            assert "invalid email or password" in response.text
            assert "tallygate_session" not in response.headers.get("set-cookie", "")


class TestCsrf:
    def test_sign_in_without_a_token_is_refused(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        with live.client() as client:
            client.get("/login")
            response = client.post(
                "/login", data={"email": "ann@example.com", "password": PASSWORD}
            )
            assert response.status_code == 403
            assert "did not come from Tallygate" in response.text
            assert "tallygate_session" not in response.headers.get("set-cookie", "")

    def test_a_token_from_another_session_is_refused(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        live.make.user(email="bob@example.com")
        ann = signed_in(live, "ann@example.com")
        bob = signed_in(live, "bob@example.com")
        bobs_token = csrf_of(bob.get("/keys"))
        forged = ann.post("/keys", data={"csrf_token": bobs_token, "label": "forged"})
        assert forged.status_code == 403
        assert "forged" not in ann.get("/keys").text

    def test_sign_out_without_a_token_keeps_the_session(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        ann = signed_in(live, "ann@example.com")
        assert ann.post("/logout").status_code == 403
        assert ann.get("/").status_code == 200


class TestLoginRateLimit:
    def test_ten_failures_for_an_email_lock_it_for_ten_minutes(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        with live.client() as client:
            token = csrf_of(client.get("/login"))

            def attempt(password: str, email: str = "ann@example.com") -> int:
                data = {"csrf_token": token, "email": email, "password": password}
                return client.post("/login", data=data).status_code

            assert [attempt(f"wrong-{i}") for i in range(10)] == [401] * 10
            locked = client.post(
                "/login",
                data={"csrf_token": token, "email": "ann@example.com", "password": PASSWORD},
            )
            assert locked.status_code == 429
            assert "too many failed sign-ins: try again in 10 minutes" in locked.text
            assert int(locked.headers["retry-after"]) > 500
            # the same address is locked for other emails too (10 failures from it)
            assert attempt(PASSWORD, email="bob@example.com") == 429
            live.clock.advance(601)
            assert attempt(PASSWORD) == 303
