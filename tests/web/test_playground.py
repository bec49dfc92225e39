"""The playground: a chat through the gateway with one of my keys, the answer, and its receipt
right under it — charged exactly as the wallet shows."""

from __future__ import annotations

import re

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
