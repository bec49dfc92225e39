"""Every surface renders errors its own way: OpenAI shape on /v1, JSON on /api and /admin,
a readable page elsewhere; a bug becomes a generic 500 with no traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from tallygate.errors import Conflict
from tests.fixtures.server import AppFactory, serving

SECRET = "s3cret-internal-detail"


def boom() -> None:
    raise RuntimeError(SECRET)


def conflict() -> None:
    raise Conflict("that name is taken", param="name", details={"taken_by": 7})


@pytest.fixture
def http(make_app: AppFactory) -> Iterator[httpx.Client]:
    app: FastAPI = make_app()
    for prefix in ("/v1", "/api", "/admin/api", ""):
        app.add_api_route(f"{prefix}/test-boom", boom)
        app.add_api_route(f"{prefix}/test-conflict", conflict)
    with serving(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


class TestOpenAISurface:
    def test_a_domain_error_has_the_openai_shape_and_status(self, http: httpx.Client) -> None:
        response = http.get("/v1/test-conflict")
        assert response.status_code == 409
        assert response.json() == {
            "error": {
                "message": "that name is taken",
                "type": "invalid_request_error",
                "code": "conflict",
                "param": "name",
            }
        }

    def test_an_unknown_path_is_a_404_in_openai_shape(self, http: httpx.Client) -> None:
        response = http.post("/v1/chat/nothing-here", json={})
        assert response.status_code == 404
        assert response.json() == {
            "error": {
                "message": "no such endpoint: POST /v1/chat/nothing-here",
                "type": "invalid_request_error",
                "code": "not_found",
                "param": None,
            }
        }

    def test_a_bug_is_a_generic_500(self, http: httpx.Client) -> None:
        response = http.get("/v1/test-boom")
        assert response.status_code == 500
        assert response.json() == {
            "error": {
                "message": "internal server error: the request failed",
                "type": "server_error",
                "code": "internal_error",
                "param": None,
            }
        }


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
