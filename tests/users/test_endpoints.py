"""Login, logout and the current user, over HTTP against a running server, on both databases."""

from __future__ import annotations

from sqlalchemy import text, update

from tallygate.models.users import users
from tests.fixtures.factories import PASSWORD
from tests.fixtures.server import LiveServer

FOURTEEN_DAYS = 14 * 24 * 3600


def login(live: LiveServer, email: str, password: str = PASSWORD) -> dict:  # type: ignore[type-arg]
    with live.client() as http:
        response = http.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


class TestLogin:
    def test_returns_a_token_and_the_user_and_sets_an_httponly_lax_cookie(
        self, live: LiveServer
    ) -> None:
        user = live.make.user(email="ann@example.com")
        with live.client() as http:
            response = http.post(
                "/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
            )
        assert response.status_code == 200
        body = response.json()
        assert body["user"] == {
            "id": user.id,
            "email": "ann@example.com",
            "role": "user",
            "display_name": "",
            "disabled": False,
            "created_at": "2026-01-01T00:00:00Z",
        }
        assert body["token_type"] == "bearer"
        assert body["expires_at"] == "2026-01-15T00:00:00Z"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"tallygate_session={body['token']};")
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        assert "Secure" not in cookie  # plain http on loopback
        assert f"Max-Age={FOURTEEN_DAYS}" in cookie

    def test_the_cookie_alone_authenticates_later_requests(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        with live.client() as http:
            http.post("/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
            me = http.get("/api/me")
        assert me.status_code == 200
        assert me.json()["email"] == "ann@example.com"

    def test_the_token_authenticates_as_a_bearer_header(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        token = login(live, "ann@example.com")["token"]
        with live.client() as http:
            me = http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200
        assert me.json()["email"] == "ann@example.com"

    def test_email_matching_ignores_case_and_surrounding_spaces(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        assert login(live, "  Ann@Example.COM ")["user"]["email"] == "ann@example.com"

    def test_a_wrong_password_and_an_unknown_email_get_the_same_401(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        with live.client() as http:
            wrong = http.post(
                "/api/auth/login", json={"email": "ann@example.com", "password": "not the one!"}
            )
            unknown = http.post(
                "/api/auth/login", json={"email": "bob@example.com", "password": PASSWORD}
            )
        for response in (wrong, unknown):
            assert response.status_code == 401
            assert "set-cookie" not in response.headers
            assert response.json() == {
                "error": {
                    "code": "invalid_credentials",
                    "message": "invalid email or password",
                    "param": None,
                    "details": {},
                }
            }

    def test_a_disabled_user_cannot_log_in(self, live: LiveServer) -> None:
        user = live.make.user(email="ann@example.com")
        with live.db.begin() as conn:
            conn.execute(update(users).where(users.c.id == user.id).values(disabled=1))
        with live.client() as http:
            response = http.post(
                "/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
            )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "account_disabled"

    def test_a_refused_login_never_waits_for_the_write_lock(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        with live.db.engine.connect() as blocker:
            # SQLite: this engine's BEGIN IMMEDIATE takes the database write lock. PostgreSQL:
            # lock the sessions table against writes. Either way no login could commit now.
            blocker.begin()
            if not live.db.sqlite:
                blocker.execute(text("LOCK TABLE user_sessions IN EXCLUSIVE MODE"))
            with live.client(timeout=5) as http:
                response = http.post(
                    "/api/auth/login", json={"email": "ann@example.com", "password": "not it, no"}
                )
            blocker.rollback()
        assert response.status_code == 401

    def test_a_missing_field_is_a_422_that_names_the_field(self, live: LiveServer) -> None:
        with live.client() as http:
            response = http.post("/api/auth/login", json={"email": "ann@example.com"})
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert error["param"] == "password"
        assert error["message"] == "password: Field required"
        assert error["details"] == {"fields": [{"field": "password", "message": "Field required"}]}


class TestCurrentUser:
    def test_without_credentials_is_401_saying_how_to_authenticate(self, live: LiveServer) -> None:
        with live.client() as http:
            response = http.get("/api/me")
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "not_authenticated"
        assert "Bearer" in error["message"]

    def test_an_unknown_token_is_401(self, live: LiveServer) -> None:
        with live.client() as http:
            response = http.get("/api/me", headers={"Authorization": "Bearer not-a-real-token"})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_session"

    def test_a_malformed_authorization_header_is_401(self, live: LiveServer) -> None:
        with live.client() as http:
            response = http.get("/api/me", headers={"Authorization": "Basic YW5uOnB3"})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_authorization_header"

    def test_the_bearer_header_wins_over_the_cookie(self, live: LiveServer) -> None:
        ann = live.make.user(email="ann@example.com")
        bob = live.make.user(email="bob@example.com")
        with live.client(cookies={"tallygate_session": live.make.session_token(ann)}) as http:
            me = http.get(
                "/api/me", headers={"Authorization": f"Bearer {live.make.session_token(bob)}"}
            )
        assert me.json()["id"] == bob.id

    def test_a_session_expires_after_its_ttl(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        token = login(live, "ann@example.com")["token"]
        auth = {"Authorization": f"Bearer {token}"}
        with live.client() as http:
            live.clock.advance(FOURTEEN_DAYS - 1)
            assert http.get("/api/me", headers=auth).status_code == 200
            live.clock.advance(1)
            expired = http.get("/api/me", headers=auth)
        assert expired.status_code == 401
        assert expired.json()["error"]["message"] == "session has expired: log in again"

    def test_a_disabled_users_sessions_stop_working(self, live: LiveServer) -> None:
        user = live.make.user(email="ann@example.com")
        auth = {"Authorization": f"Bearer {live.make.session_token(user)}"}
        with live.db.begin() as conn:
            conn.execute(update(users).where(users.c.id == user.id).values(disabled=1))
        with live.client() as http:
            response = http.get("/api/me", headers=auth)
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "this account is disabled"


class TestLogout:
    def test_logout_revokes_the_session_and_clears_the_cookie(self, live: LiveServer) -> None:
        live.make.user(email="ann@example.com")
        with live.client() as http:
            token = http.post(
                "/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
            ).json()["token"]
            out = http.post("/api/auth/logout")
            assert out.status_code == 204
            assert out.headers["set-cookie"].startswith('tallygate_session="";')
            assert http.get("/api/me").status_code == 401
            revoked = http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert revoked.status_code == 401
        assert revoked.json()["error"]["message"] == "session was logged out: log in again"

    def test_logout_leaves_the_users_other_sessions_alive(self, live: LiveServer) -> None:
        user = live.make.user(email="ann@example.com")
        laptop, phone = live.make.session_token(user), live.make.session_token(user)
        with live.client() as http:
            http.post("/api/auth/logout", headers={"Authorization": f"Bearer {laptop}"})
            assert (
                http.get("/api/me", headers={"Authorization": f"Bearer {laptop}"}).status_code
                == 401
            )
            assert (
                http.get("/api/me", headers={"Authorization": f"Bearer {phone}"}).status_code == 200
            )

    def test_logout_without_a_session_is_401(self, live: LiveServer) -> None:
        with live.client() as http:
            assert http.post("/api/auth/logout").status_code == 401


class TestAdminUsers:
    def test_a_user_gets_403_on_every_operator_endpoint(self, live: LiveServer) -> None:
        user = live.make.user()
        auth = {"Authorization": f"Bearer {live.make.session_token(user)}"}
        with live.client() as http:
            for path in ("/admin/api/users", f"/admin/api/users/{user.id}/wallet"):
                response = http.get(path, headers=auth)
                assert response.status_code == 403, path
                assert response.json()["error"]["code"] == "operator_required"

    def test_anonymous_requests_get_401(self, live: LiveServer) -> None:
        with live.client() as http:
            assert http.get("/admin/api/users").status_code == 401

    def test_an_operator_pages_through_all_users_in_id_order(self, live: LiveServer) -> None:
        operator = live.make.operator(email="op@example.com")
        created = [operator] + [live.make.user() for _ in range(4)]
        auth = {"Authorization": f"Bearer {live.make.session_token(operator)}"}
        seen: list[int] = []
        pages = 0
        with live.client() as http:
            params: dict[str, str | int] = {"limit": 2}
            while True:
                page = http.get("/admin/api/users", params=params, headers=auth).json()
                pages += 1
                seen += [u["id"] for u in page["items"]]
                if page["next_cursor"] is None:
                    break
                params = {"limit": 2, "cursor": page["next_cursor"]}
        assert seen == [u.id for u in created]
        assert pages == 3
