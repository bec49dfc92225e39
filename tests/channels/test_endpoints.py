"""Channels over HTTP on both databases: the secret is write-only and encrypted at rest,
every change is audited (secret redacted), mappings name real models, and a channel test makes
one real minimal chat completion against a loopback upstream."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tallygate.audit import service as audit
from tallygate.kit import crypto
from tallygate.kit.config_version import read as config_version
from tallygate.models.catalog import channels
from tallygate.users.service import User
from tests.fixtures.server import LiveServer

SECRET = "sk-live-4f9c2a7be1d04c3f9a"


def as_user(live: LiveServer, user: User) -> httpx.Client:
    return live.client(headers={"Authorization": f"Bearer {live.make.session_token(user)}"})


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


@dataclass
class Stub:
    """A loopback OpenAI-compatible upstream that records what it was sent."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    answer: dict[str, Any] = field(
        default_factory=lambda: {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "p"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


@contextmanager
def stub_upstream() -> Iterator[Stub]:
    stub = Stub(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            stub.requests.append(
                {
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "json": json.loads(body),
                }
            )
            data = json.dumps(stub.answer).encode()
            self.send_response(stub.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def operator(live: LiveServer) -> Iterator[httpx.Client]:
    with as_user(live, live.make.operator(email="op@example.com")) as http:
        yield http


def add_channel(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {
        "name": "openai-primary",
        "label": "OpenAI",
        "base_url": "https://api.openai.example/v1",
        "secret": SECRET,
        "route_type": "official",
        "priority": 10,
        **fields,
    }
    return ok(http.post("/admin/api/channels", json=body), 201)  # type: ignore[no-any-return]


def add_model(http: httpx.Client, name: str) -> None:
    ok(
        http.post(
            "/admin/api/models", json={"name": name, "context_length": 1000, "output_cap": 100}
        ),
        201,
    )


def stored_ciphertext(live: LiveServer, channel_id: int) -> str:
    with live.db.read() as conn:
        return str(
            conn.execute(
                select(channels.c.secret_ciphertext).where(channels.c.id == channel_id)
            ).scalar_one()
        )


def audit_json(live: LiveServer) -> tuple[list[audit.AuditEvent], str]:
    with live.db.read() as conn:
        tx = live.ledger.tx(conn)
        assert audit.verify(tx) == []
        events = list(reversed(audit.list_events(tx, limit=1000)))
    return events, json.dumps([(e.before, e.after, e.reason) for e in events])


class TestSecret:
    def test_the_secret_never_appears_in_any_response(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        created = add_channel(operator)
        responses = [
            operator.get("/admin/api/channels"),
            operator.get(f"/admin/api/channels/{created['id']}"),
            operator.patch(f"/admin/api/channels/{created['id']}", json={"label": "OpenAI EU"}),
            operator.post(f"/admin/api/channels/{created['id']}/disable"),
        ]
        assert created["has_secret"] is True
        assert "secret" not in created
        for response in responses:
            assert response.status_code == 200
            assert SECRET not in response.text
            assert "secret_ciphertext" not in response.text
        assert SECRET not in json.dumps(created)

    def test_the_secret_is_stored_encrypted_with_the_servers_key(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        created = add_channel(operator)
        raw = stored_ciphertext(live, created["id"])
        assert raw != SECRET and SECRET not in raw
        assert raw.startswith("v1.")
        assert crypto.decrypt(live.app.state.tallygate.settings.secret_key, raw) == SECRET

    def test_a_new_secret_replaces_the_old_and_an_empty_one_removes_it(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        channel_id = add_channel(operator)["id"]
        key = live.app.state.tallygate.settings.secret_key
        ok(operator.patch(f"/admin/api/channels/{channel_id}", json={"secret": "sk-new-1"}))
        assert crypto.decrypt(key, stored_ciphertext(live, channel_id)) == "sk-new-1"
        removed = ok(operator.patch(f"/admin/api/channels/{channel_id}", json={"secret": ""}))
        assert removed["has_secret"] is False
        assert stored_ciphertext(live, channel_id) == ""

    def test_the_audit_trail_records_changes_with_the_secret_redacted(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        channel_id = add_channel(operator)["id"]
        ok(operator.patch(f"/admin/api/channels/{channel_id}", json={"secret": "sk-rotated-2"}))
        events, text = audit_json(live)
        create, rotate = [e for e in events if e.target == f"channel:{channel_id}"]
        assert (create.action, create.actor, create.before) == (
            "channel.create",
            "op@example.com",
            None,
        )
        assert create.after["secret"] == "***"
        assert create.after["base_url"] == "https://api.openai.example/v1"
        assert (rotate.action, rotate.reason) == ("channel.update", "secret replaced")
        assert SECRET not in text and "sk-rotated-2" not in text


class TestChannels:
    def test_creates_and_lists_channels_with_their_settings(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        created = add_channel(
            operator, weight=3, timeout_seconds=30, base_url="http://vllm.lan:8000/v1/"
        )
        assert {k: v for k, v in created.items() if k not in ("id", "created_at")} == {
            "name": "openai-primary",
            "label": "OpenAI",
            "kind": "openai_compatible",
            "base_url": "http://vllm.lan:8000/v1",  # trailing slash dropped
            "has_secret": True,
            "route_type": "official",
            "priority": 10,
            "weight": 3,
            "enabled": True,
            "timeout_seconds": 30,
            "models": [],
        }
        backup = add_channel(operator, name="openai-backup", priority=1)
        listed = ok(operator.get("/admin/api/channels"))
        assert [c["name"] for c in listed] == ["openai-primary", "openai-backup"]
        assert listed[1] == backup

    def test_invalid_settings_are_clear_400s(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        cases = [
            ({"base_url": "ftp://files.example/v1"}, "base_url"),
            ({"base_url": "https://user:pw@api.example/v1"}, "base_url"),
            ({"base_url": "api.openai.com/v1"}, "base_url"),
            ({"weight": 0}, "weight"),
            ({"timeout_seconds": 0}, "timeout_seconds"),
            ({"label": "  "}, "label"),
        ]
        for fields, param in cases:
            response = operator.post(
                "/admin/api/channels",
                json={
                    "name": "c",
                    "label": "C",
                    "base_url": "https://a.example",
                    "route_type": "routed",
                    **fields,
                },
            )
            assert response.status_code == 400, fields
            assert response.json()["error"]["param"] == param
        assert (
            "must not carry credentials"
            in operator.post(
                "/admin/api/channels",
                json={
                    "name": "c",
                    "label": "C",
                    "base_url": "https://u:p@a.example",
                    "route_type": "routed",
                },
            ).json()["error"]["message"]
        )
        assert ok(operator.get("/admin/api/channels")) == []

    def test_names_are_unique(self, live: LiveServer, operator: httpx.Client) -> None:
        add_channel(operator)
        response = operator.post(
            "/admin/api/channels",
            json={
                "name": "openai-primary",
                "label": "x",
                "base_url": "https://a.example",
                "route_type": "routed",
            },
        )
        assert response.status_code == 409
        assert (
            response.json()["error"]["message"] == "a channel named 'openai-primary' already exists"
        )

    def test_disable_and_enable_are_audited_and_bump_the_config_version(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        channel_id = add_channel(operator)["id"]
        with live.db.read() as conn:
            version = config_version(live.ledger.tx(conn))
        disabled = ok(operator.post(f"/admin/api/channels/{channel_id}/disable"))
        enabled = ok(operator.post(f"/admin/api/channels/{channel_id}/enable"))
        assert (disabled["enabled"], enabled["enabled"]) == (False, True)
        with live.db.read() as conn:
            assert config_version(live.ledger.tx(conn)) == version + 2
        events, _ = audit_json(live)
        assert [e.action for e in events[-2:]] == ["channel.disable", "channel.enable"]
        assert (events[-2].before["enabled"], events[-2].after["enabled"]) == (True, False)

    def test_unknown_channels_are_404(self, live: LiveServer, operator: httpx.Client) -> None:
        response = operator.patch("/admin/api/channels/999", json={"label": "x"})
        assert response.status_code == 404
        assert response.json()["error"]["message"] == "no channel with id 999"

    def test_only_operators_see_channels(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            assert http.get("/admin/api/channels").status_code == 403


class TestModelMappings:
    def test_maps_public_models_to_upstream_ids_and_audits_it(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        add_model(operator, "gpt-4o-mini")
        add_model(operator, "meta/llama-3")
        channel_id = add_channel(operator)["id"]
        mapping = [
            {"model": "gpt-4o-mini", "upstream_model": "gpt-4o-mini-2024-07-18"},
            {"model": "meta/llama-3", "upstream_model": "llama3:8b"},
        ]
        body = ok(
            operator.put(f"/admin/api/channels/{channel_id}/models", json={"models": mapping})
        )
        assert body["models"] == mapping
        replaced = ok(
            operator.put(f"/admin/api/channels/{channel_id}/models", json={"models": mapping[1:]})
        )
        assert replaced["models"] == mapping[1:]
        events, _ = audit_json(live)
        first, second = [e for e in events if e.action == "channel.models"]
        assert (first.before["models"], first.after["models"]) == ([], mapping)
        assert second.after["models"] == mapping[1:]

    def test_the_public_model_must_exist(self, live: LiveServer, operator: httpx.Client) -> None:
        channel_id = add_channel(operator)["id"]
        response = operator.put(
            f"/admin/api/channels/{channel_id}/models",
            json={"models": [{"model": "no-such-model", "upstream_model": "x"}]},
        )
        assert response.status_code == 400
        assert response.json()["error"]["message"] == (
            "models[0]: no public model named 'no-such-model': create it in the catalog first"
        )
        assert ok(operator.get(f"/admin/api/channels/{channel_id}"))["models"] == []


class TestChannelTest:
    def test_a_reachable_channel_answers_a_minimal_completion(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        add_model(operator, "gpt-4o-mini")
        with stub_upstream() as stub:
            channel_id = add_channel(operator, base_url=stub.url)["id"]
            ok(
                operator.put(
                    f"/admin/api/channels/{channel_id}/models",
                    json={
                        "models": [
                            {"model": "gpt-4o-mini", "upstream_model": "gpt-4o-mini-2024-07-18"}
                        ]
                    },
                )
            )
            response = operator.post(f"/admin/api/channels/{channel_id}/test")
        result = ok(response)
        assert result["ok"] is True
        assert (result["status"], result["error"], result["model"]) == (
            200,
            None,
            "gpt-4o-mini-2024-07-18",
        )
        assert isinstance(result["latency_ms"], int) and result["latency_ms"] >= 0
        (sent,) = stub.requests
        assert sent == {
            "path": "/v1/chat/completions",
            "authorization": f"Bearer {SECRET}",
            "json": {
                "model": "gpt-4o-mini-2024-07-18",
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 1,
            },
        }
        assert SECRET not in response.text

    def test_an_explicit_model_is_sent_as_given(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        with stub_upstream() as stub:
            channel_id = add_channel(operator, base_url=stub.url)["id"]
            result = ok(
                operator.post(f"/admin/api/channels/{channel_id}/test", json={"model": "qwen2.5"})
            )
        assert result["ok"] is True
        assert stub.requests[0]["json"]["model"] == "qwen2.5"

    def test_a_closed_port_is_a_clear_error(self, live: LiveServer, operator: httpx.Client) -> None:
        channel_id = add_channel(operator, base_url=f"http://127.0.0.1:{closed_port()}/v1")["id"]
        response = operator.post(f"/admin/api/channels/{channel_id}/test", json={"model": "m"})
        result = ok(response)
        assert (result["ok"], result["status"]) == (False, None)
        assert result["error"] == "could not connect to the channel: Connection refused"
        assert SECRET not in response.text and "Traceback" not in response.text

    def test_an_upstream_error_is_reported_with_the_secret_scrubbed(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        with stub_upstream() as stub:
            stub.status = 401
            stub.answer = {"error": {"message": f"Incorrect API key provided: {SECRET}"}}
            channel_id = add_channel(operator, base_url=stub.url)["id"]
            response = operator.post(f"/admin/api/channels/{channel_id}/test", json={"model": "m"})
        result = ok(response)
        assert (result["ok"], result["status"]) == (False, 401)
        assert result["error"] == "upstream answered HTTP 401: Incorrect API key provided: ***"
        assert SECRET not in response.text

    def test_a_channel_without_mappings_needs_a_model_to_test(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        channel_id = add_channel(operator)["id"]
        response = operator.post(f"/admin/api/channels/{channel_id}/test")
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "model"
