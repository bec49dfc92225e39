"""The playground: a chat through the gateway with one of my keys, the answer, and its receipt
right under it — charged exactly as the wallet shows."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx

from tallygate.web.render import money
from tests.fixtures.gateway import START_BALANCE, World
from tests.web.helpers import csrf_of, session_client


class TestPlayground:
    def test_a_chat_shows_its_answer_and_receipt(self, world: World) -> None:
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            form = client.get("/playground")
            assert "tg-chat:routed" in form.text and "tg-chat:official" in form.text
            sent = client.post(
                "/playground",
                data={
                    "csrf_token": csrf_of(form),
                    "model": "tg-chat:routed",
                    "message": "hello playground",
                    "api_key": world.key,
                },
            )
            wallet = client.get("/").text
        assert sent.status_code == 200, sent.text
        assert 'data-testid="answer">' in sent.text
        request_id = re.search(r'href="/receipts/(req_[^"]+)"', sent.text)
        assert request_id is not None
        receipt = world.receipt(request_id.group(1))
        charge = int(receipt["charge_nanos"])
        assert f'data-testid="playground-charge">{money(charge, "CNY")}<' in sent.text
        assert "Routed balance (routed route)" in sent.text
        assert f"#{receipt['entry_id']}" in sent.text
        assert f'data-testid="balance-routed">{money(START_BALANCE - charge, "CNY")}<' in wallet

    def test_a_bad_key_is_explained(self, world: World) -> None:
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            sent = client.post(
                "/playground",
                data={
                    "csrf_token": csrf_of(client.get("/playground")),
                    "model": "tg-chat:routed",
                    "message": "hi",
                    "api_key": "tg-not-a-key",
                },
            )
            forged = client.post("/playground", data={"model": "tg-chat", "message": "hi"})
        assert sent.status_code == 400 and 'role="alert"' in sent.text
        assert "Traceback" not in sent.text
        assert forged.status_code == 403


def stream(client: httpx.Client, **fields: str) -> tuple[httpx.Response, list[dict[str, Any]]]:
    token = csrf_of(client.get("/playground"))
    response = client.post("/playground/stream", data={"csrf_token": token, **fields})
    events = [json.loads(line) for line in response.text.splitlines() if line]
    return response, events


class TestStreamedPlayground:
    def test_the_answer_streams_then_its_receipt_arrives(self, world: World) -> None:
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            form = client.get("/playground").text
            response, events = stream(
                client, model="tg-chat:routed", message="hello stream", api_key=world.key
            )
            wallet = client.get("/").text
        assert 'data-stream="/playground/stream"' in form
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert world.key not in response.text  # the key never comes back
        started, *rest = events
        assert started["started"] and started["status"] == 200
        request_id = started["request_id"]
        deltas = [e["delta"] for e in rest if "delta" in e]
        assert len(deltas) > 1  # token by token, not one block
        assert [e for e in rest if "error" in e] == []
        receipt = world.receipt(request_id)
        assert receipt["streamed"] and receipt["output_tokens"] > 0
        charge = int(receipt["charge_nanos"])
        (done,) = [e for e in rest if "receipt_html" in e]
        html = done["receipt_html"]
        assert done["request_id"] == request_id
        assert f'data-testid="playground-charge">{money(charge, "CNY")}<' in html
        assert f'data-testid="playground-balance">{money(START_BALANCE - charge, "CNY")}<' in html
        assert "Routed balance (routed route)" in html
        assert f"price version {receipt['price_version_id']}" in html
        assert f'href="/ledger?bucket=routed#entry-{receipt["entry_id"]}"' in html
        assert rest[-1] == {"done": True}
        assert f'data-testid="balance-routed">{money(START_BALANCE - charge, "CNY")}<' in wallet

    def test_a_refused_key_streams_the_reason(self, world: World) -> None:
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            response, events = stream(
                client, model="tg-chat:routed", message="hi", api_key="tg-not-a-key"
            )
            forged = client.post(
                "/playground/stream", data={"model": "tg-chat:routed", "message": "hi"}
            )
        assert response.status_code == 200
        assert events[0]["status"] == 401
        errors = [e["error"] for e in events if "error" in e]
        assert len(errors) == 1 and errors[0] and "HTTP" not in errors[0]
        assert not [e for e in events if "delta" in e]
        assert events[-1] == {"done": True}
        assert forged.status_code == 403

    def test_signed_out_the_stream_is_refused(self, world: World) -> None:
        with httpx.Client(base_url=world.base_url) as client:
            refused = client.post("/playground/stream", data={"message": "hi"})
        assert refused.status_code in (303, 403)
        assert "delta" not in refused.text


class TestStreamTiming:
    def test_tokens_arrive_while_the_upstream_is_still_answering(self, world: World) -> None:
        world.primary.fault("slow_stream", chunk_delay=0.05)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            token = csrf_of(client.get("/playground"))
            fields = {"model": "tg-chat:routed", "message": "slowly", "api_key": world.key}
            seen: list[tuple[float, dict[str, Any]]] = []
            with client.stream(
                "POST", "/playground/stream", data={"csrf_token": token, **fields}
            ) as response:
                for line in response.iter_lines():
                    if line:
                        seen.append((time.monotonic(), json.loads(line)))
        first_delta = next(t for t, e in seen if "delta" in e)
        done = next(t for t, e in seen if e.get("done"))
        assert done - first_delta > 0.5  # 40 tokens 50 ms apart: the first came long before
        assert sum(1 for _, e in seen if "delta" in e) > 10

    def test_leaving_mid_answer_is_a_client_disconnect_billed_by_policy(self, world: World) -> None:
        world.primary.fault("slow_stream", chunk_delay=0.2)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            token = csrf_of(client.get("/playground"))
            fields = {"model": "tg-chat:routed", "message": "leave", "api_key": world.key}
            request_id = None
            with client.stream(
                "POST", "/playground/stream", data={"csrf_token": token, **fields}
            ) as response:
                for line in response.iter_lines():
                    event = json.loads(line) if line else {}
                    request_id = event.get("request_id", request_id)
                    if "delta" in event:
                        break  # the browser goes away after the first token
        assert request_id is not None
        receipt = world.receipt(request_id, timeout=15)
        assert receipt["streamed"] and receipt["client_disconnected"]
        assert receipt["output_tokens"] < 40  # cut short, not run to the end
        assert world.held(bucket="routed") == 0  # the hold was settled, not left hanging
        world.assert_reconciled()
