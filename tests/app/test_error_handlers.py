"""Every surface renders errors its own way: OpenAI shape on /v1, JSON on /api and /admin,
a readable page elsewhere; a bug becomes a generic 500 with no traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from tallygate.db.engine import Database
from tallygate.errors import Conflict
from tallygate.gateway import handler as gateway_handler
from tallygate.keys import service as keys
from tallygate.keys.schemas import KeyCreate
from tallygate.ledger import Ledger
from tests.fixtures.factories import Factory
from tests.fixtures.server import AppFactory, serving

SECRET = "s3cret-internal-detail"


def boom() -> None:
    raise RuntimeError(SECRET)


def conflict() -> None:
    raise Conflict("that name is taken", param="name", details={"taken_by": 7})


@pytest.fixture
def http(make_app: AppFactory) -> Iterator[httpx.Client]:
    app: FastAPI = make_app()
    for prefix in ("/api", "/admin/api", ""):
        app.add_api_route(f"{prefix}/test-boom", boom)
        app.add_api_route(f"{prefix}/test-conflict", conflict)
    with serving(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


class TestOpenAISurface:
    """/v1 is served by the gateway itself (before FastAPI's routes), in OpenAI's error shape."""

    @pytest.fixture
    def api_key(self, http: httpx.Client, db: Database, ledger: Ledger) -> str:
        user = Factory(db, ledger).user()
        with db.begin() as conn:
            created = keys.create_key(
                conn,
                user_id=user.id,
                body=KeyCreate(label="errors"),
                currencies=ledger.currencies,
                now_us=ledger.now_us(),
            )
        return created.key

    def test_an_unknown_path_is_a_404_in_openai_shape(self, http: httpx.Client) -> None:
        response = http.post("/v1/chat/nothing-here", json={})
        assert response.status_code == 404
        assert response.json() == {
            "error": {
                "message": "unknown endpoint POST /v1/chat/nothing-here",
                "type": "invalid_request_error",
                "code": "unknown_url",
                "param": None,
            }
        }

    def test_a_wrong_method_is_a_405_in_openai_shape(self, http: httpx.Client) -> None:
        response = http.get("/v1/chat/completions")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"

    def test_a_missing_key_is_a_401(self, http: httpx.Client) -> None:
        response = http.post("/v1/chat/completions", json={"model": "m", "messages": []})
        assert response.status_code == 401
        assert response.json()["error"] == {
            "message": "missing API key: send 'Authorization: Bearer <your Tallygate key>'",
            "type": "authentication_error",
            "code": "missing_api_key",
            "param": None,
        }

    def test_a_bad_key_is_a_401(self, http: httpx.Client) -> None:
        response = http.post(
            "/v1/chat/completions",
            headers={"Authorization": "Bearer tg-wrong"},
            json={"model": "m", "messages": []},
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.json()["error"]["type"] == "authentication_error"

    def test_a_body_that_is_not_json_is_a_400(self, http: httpx.Client, api_key: str) -> None:
        response = http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {api_key}", "content-type": "application/json"},
            content=b"{nope",
        )
        assert response.status_code == 400
        assert response.json()["error"] == {
            "message": "request body is not valid JSON",
            "type": "invalid_request_error",
            "code": "invalid_json",
            "param": None,
        }

    def test_a_body_without_a_model_is_a_400_naming_the_param(
        self, http: httpx.Client, api_key: str
    ) -> None:
        response = http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {api_key}"},
            json={"messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 400
        assert response.json()["error"] == {
            "message": "'model' is required",
            "type": "invalid_request_error",
            "code": "invalid_request",
            "param": "model",
        }

    def test_a_body_that_is_not_an_object_is_a_400(self, http: httpx.Client, api_key: str) -> None:
        response = http.post(
            "/v1/embeddings", headers={"Authorization": f"Bearer {api_key}"}, json=[1, 2]
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_json"

    def test_an_unknown_model_is_a_404(self, http: httpx.Client, api_key: str) -> None:
        response = http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {api_key}"},
            json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"

    def test_a_bug_is_a_generic_500_without_a_traceback(
        self, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def broken(*args: object) -> None:
            raise RuntimeError(SECRET)

        monkeypatch.setattr(gateway_handler, "_serve", broken)
        response = http.post("/v1/chat/completions", json={})
        assert response.status_code == 500
        assert response.json() == {
            "error": {
                "message": "internal server error: the request failed",
                "type": "server_error",
                "code": "internal_error",
                "param": None,
            }
        }
        assert SECRET not in response.text


class TestJSONSurface:
    @pytest.mark.parametrize("prefix", ["/api", "/admin/api"])
    def test_a_domain_error_carries_code_message_param_and_details(
        self, http: httpx.Client, prefix: str
    ) -> None:
        response = http.get(f"{prefix}/test-conflict")
        assert response.status_code == 409
        assert response.json() == {
            "error": {
                "code": "conflict",
                "message": "that name is taken",
                "param": "name",
                "details": {"taken_by": 7},
            }
        }

    def test_a_wrong_method_is_a_405(self, http: httpx.Client) -> None:
        response = http.delete("/api/me")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"

    def test_a_validation_error_names_fields_without_echoing_input_or_internals(
        self, http: httpx.Client
    ) -> None:
        response = http.post("/api/auth/login", json={"email": ["not", SECRET], "password": 5})
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert [f["field"] for f in error["details"]["fields"]] == ["email", "password"]
        assert SECRET not in response.text
        assert "pydantic" not in response.text
        assert "Traceback" not in response.text

    def test_a_body_that_is_not_json_is_a_422(self, http: httpx.Client) -> None:
        response = http.post(
            "/api/auth/login", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "validation_error"

    @pytest.mark.parametrize("prefix", ["/api", "/admin/api"])
    def test_a_bug_is_a_generic_500_without_a_traceback(
        self, http: httpx.Client, prefix: str
    ) -> None:
        response = http.get(f"{prefix}/test-boom")
        assert response.status_code == 500
        assert response.json() == {
            "error": {
                "code": "internal_error",
                "message": "internal server error: the request failed",
                "param": None,
                "details": {},
            }
        }
        assert SECRET not in response.text

    def test_a_bug_is_logged_with_its_traceback(
        self, http: httpx.Client, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.ERROR, logger="tallygate.error_handlers"):
            http.get("/api/test-boom")
        [record] = [r for r in caplog.records if r.name == "tallygate.error_handlers"]
        assert record.getMessage() == "unhandled error on GET /api/test-boom"
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)
        assert str(record.exc_info[1]) == SECRET


class TestHTMLSurface:
    def test_an_unknown_page_is_a_readable_html_404(self, http: httpx.Client) -> None:
        response = http.get("/no-such-page")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "<h1>404 · not found</h1>" in response.text
        assert "no such endpoint: GET /no-such-page" in response.text

    def test_a_bug_is_a_readable_500_page_without_the_traceback(self, http: httpx.Client) -> None:
        response = http.get("/test-boom")
        assert response.status_code == 500
        assert response.headers["content-type"].startswith("text/html")
        assert "internal server error" in response.text
        assert SECRET not in response.text
        assert "Traceback" not in response.text

    def test_messages_are_html_escaped(self, http: httpx.Client) -> None:
        response = http.get("/<script>alert(1)</script>")
        assert "<script>" not in response.text
        assert "&lt;script&gt;" in response.text
