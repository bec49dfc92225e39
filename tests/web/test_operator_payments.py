"""Operator pages for money: adjust a balance, top-ups (list, filters, review queue, approve /
reject a bank transfer), refunds (start one from an order that was partly spent, every field,
decide a shortfall). Each action is checked for what it changed, and each refusal for its
readable message and for writing nothing. Both databases, a real server on loopback."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tallygate.audit import service as audit
from tallygate.models.payments import inbox_events, payment_jobs
from tallygate.web.render import money
from tests.fixtures.gateway import ROUTED_CHAT, World, WorldFactory
from tests.web.helpers import csrf_of, session_client, submit

NANOS = 1_000_000_000
BANK = {"bank_instructions": "IBAN XX00 TEST 0000, reference: your order id"}


@pytest.fixture
def world(make_world: WorldFactory) -> World:
    """The gateway world with the sandbox and bank transfers enabled."""
    return make_world(payments_sandbox=True, **BANK)


def ops(world: World) -> httpx.Client:
    return session_client(world.base_url, world.make.session_token(world.operator))


def audit_actions(world: World) -> list[tuple[str, str, str]]:
    with world.db.read() as conn:
        return [(e.action, e.target, e.reason) for e in audit.list_events(world.ledger.tx(conn))]


def ledger_entries(world: World) -> int:
    with world.db.read() as conn:
        row = world.ledger.tx(conn).one("SELECT COUNT(*) FROM entries")
    assert row is not None
    return int(row[0])


def bank_order(world: World, user: Any, amount: str = "50") -> dict[str, Any]:
    with world.as_user(user) as api:
        made = api.post(
            "/api/payments/orders",
            json={"bucket": "credit", "amount": amount, "provider": "bank"},
        )
        assert made.status_code == 201, made.text
        sent = api.post(
            f"/api/payments/orders/{made.json()['id']}/transfer", json={"reference": "REF-77"}
        )
        assert sent.status_code == 200, sent.text
    return sent.json()  # type: ignore[no-any-return]


def paid_routed_topup(world: World, user: Any, amount: str = "10") -> str:
    with world.as_user(user) as api:
        made = api.post(
            "/api/payments/orders",
            json={"bucket": "routed", "amount": amount, "provider": "sandbox"},
        )
        assert made.status_code == 201, made.text
        order_id: str = made.json()["id"]
        paid = api.post(f"/sandbox/checkout/{order_id}/pay")
        assert paid.status_code < 400, paid.text
    return order_id


def spend_routed(world: World, user: Any) -> dict[str, Any]:
    """One chat on the routed route with a key of ``user``: its receipt."""
    _key_id, key = world.new_key(user)
    with world.openai(key) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=ROUTED_CHAT, messages=[{"role": "user", "content": "spend some of it"}]
        )
    return world.receipt(raw.headers["x-request-id"])


class TestAdjustBalance:
    def test_a_credit_with_its_reason_lands_in_the_ledger_and_the_audit_trail(
        self, world: World
    ) -> None:
        person = world.new_user()
        page = f"/operator/users/{person.id}"
        with ops(world) as client:
            done = submit(
                client,
                page,
                f"{page}/adjust",
                bucket="routed",
                amount="2.50",
                reason="goodwill for the outage",
            )
            assert done.status_code == 303
            shown = client.get(done.headers["location"])
        assert world.balance(person, "routed") == 2_500_000_000
        assert 'data-testid="balance-routed">¥2.50<' in shown.text
        assert "+¥2.50 credited to Routed balance" in shown.text
        assert "goodwill for the outage" in shown.text
        assert ("adjustment.create", f"user:{person.id}:routed", "goodwill for the outage") in (
            audit_actions(world)
        )
        # the user sees it on their ledger as an operator's adjustment, with its reason
        with session_client(world.base_url, world.make.session_token(person)) as mine:
            ledger = mine.get("/ledger", params={"bucket": "routed", "kind": "adjustment"}).text
        assert "+¥2.50" in ledger and "adjustment by an operator" in ledger
        assert "goodwill for the outage" in ledger and "adjustment:" not in ledger

    def test_a_debit_takes_money_back(self, world: World) -> None:
        person = world.new_user(credit=3 * NANOS)
        page = f"/operator/users/{person.id}"
        with ops(world) as client:
            done = submit(
                client, page, f"{page}/adjust", bucket="credit", amount="-1.25", reason="dup"
            )
        assert done.status_code == 303
        assert world.balance(person, "credit") == 1_750_000_000

    @pytest.mark.parametrize(
        ("fields", "status", "message"),
        [
            ({"amount": "2", "reason": ""}, 400, "a reason is required"),
            ({"amount": "abc", "reason": "why"}, 400, "amount is not a number"),
            ({"amount": "0", "reason": "why"}, 400, "must not be zero"),
            ({"amount": "1.0000000001", "reason": "why"}, 400, "amount"),
            ({"amount": "-100", "reason": "too much"}, 402, ""),
            ({"amount": "1", "reason": "why", "bucket": "gold"}, 400, "choose Credit or Routed"),
        ],
    )
    def test_a_bad_adjustment_is_explained_and_writes_nothing(
        self, world: World, fields: dict[str, str], status: int, message: str
    ) -> None:
        person = world.new_user(credit=NANOS)
        page = f"/operator/users/{person.id}"
        before = ledger_entries(world)
        with ops(world) as client:
            refused = submit(client, page, f"{page}/adjust", **{"bucket": "credit", **fields})
        assert refused.status_code == status, refused.text
        assert message in refused.text
        assert 'role="alert"' in refused.text and "Traceback" not in refused.text
        assert ledger_entries(world) == before
        assert world.balance(person, "credit") == NANOS


class TestRefusals:
    def test_a_user_gets_403_on_every_page_and_form(self, world: World) -> None:
        order_id = paid_routed_topup(world, world.user)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            token = csrf_of(client.get("/"))
            for path in (
                "/operator/topups",
                f"/operator/topups/{order_id}",
                "/operator/refunds",
                "/operator/audit",
            ):
                response = client.get(path)
                assert response.status_code == 403, path
                assert "operators only" in response.text
            before = ledger_entries(world)
            for action, fields in (
                (f"/operator/users/{world.user.id}/adjust", {"amount": "9", "reason": "me"}),
                (f"/operator/topups/{order_id}/refund", {"reason": "me"}),
                (f"/operator/topups/{order_id}/reject", {"reason": "me"}),
                ("/operator/audit/verify", {}),
            ):
                response = client.post(action, data={"csrf_token": token, **fields})
                assert response.status_code == 403, action
            assert ledger_entries(world) == before

    def test_a_form_without_a_valid_csrf_token_is_refused_and_changes_nothing(
        self, world: World
    ) -> None:
        person = world.new_user()
        before = ledger_entries(world)
        with ops(world) as client:
            for token in ("", "forged"):
                refused = client.post(
                    f"/operator/users/{person.id}/adjust",
                    data={"csrf_token": token, "bucket": "credit", "amount": "5", "reason": "x"},
                )
                assert refused.status_code == 403
                assert "reload the page" in refused.text
        assert ledger_entries(world) == before and world.balance(person) == 0

    def test_an_operator_without_a_second_factor_is_sent_to_set_one_up(self, world: World) -> None:
        bare = world.make.operator(email="bare@example.com", totp_secret=None)
        with session_client(world.base_url, world.make.session_token(bare)) as client:
            response = client.get("/operator/topups")
        assert response.status_code == 303
        assert response.headers["location"] == "/login/totp?next=%2Foperator%2Ftopups"

    def test_unknown_ids_are_readable_404s(self, world: World) -> None:
        with ops(world) as client:
            for path in ("/operator/topups/ord_nothing", "/operator/refunds/rf_nothing"):
                response = client.get(path)
                assert response.status_code == 404, path
                assert "Traceback" not in response.text
            bad = client.get("/operator/topups?state=lost&provider=mint")
        assert bad.status_code == 400 and "unknown" in bad.text


class TestTopUps:
    def test_the_review_queue_and_approving_a_transfer_with_the_statement_amount(
        self, world: World
    ) -> None:
        person = world.new_user()
        order = bank_order(world, person, "50")
        page = f"/operator/topups/{order['id']}"
        with ops(world) as client:
            listing = client.get("/operator/topups")
            assert listing.status_code == 200
            queue = listing.text.split('id="review-queue"')[1].split("</section>")[0]
            assert order["id"] in queue and "REF-77" in queue
            detail = client.get(page)
            assert "Review the transfer" in detail.text
            # the statement shows less: refused without the override, nothing credited
            short = submit(
                client, page, f"{page}/approve", amount="45", currency="USD", reason="seen"
            )
            assert short.status_code == 409
            assert "the statement shows 45 USD" in short.text
            assert world.balance(person) == 0
            no_reason = submit(client, page, f"{page}/approve", amount="50", currency="USD")
            assert no_reason.status_code == 400 and "reason is required" in no_reason.text
            assert world.balance(person) == 0
            done = submit(
                client,
                page,
                f"{page}/approve",
                amount="50.00",
                currency="USD",
                reason="seen on statement",
            )
            assert done.status_code == 303
            after = client.get(done.headers["location"])
            assert "Done: approved" in after.text and "$50.00 credited to Credit" in after.text
            assert "awaiting_review → <strong>paid</strong>" in after.text  # state history
            queue = client.get("/operator/topups").text.split('id="review-queue"')[1]
            assert order["id"] not in queue.split("</section>")[0]
        assert world.balance(person) == 50 * NANOS
        assert ("order.approve", f"order:{order['id']}", "seen on statement") in audit_actions(
            world
        )

    def test_rejecting_needs_a_reason_and_credits_nothing(self, world: World) -> None:
        person = world.new_user()
        order = bank_order(world, person)
        page = f"/operator/topups/{order['id']}"
        with ops(world) as client:
            empty = submit(client, page, f"{page}/reject", reason="  ")
            assert empty.status_code == 400 and "reason is required" in empty.text
            done = submit(client, page, f"{page}/reject", reason="no such transfer arrived")
            assert done.status_code == 303
            shown = client.get(done.headers["location"]).text
            assert "Status: rejected" in shown
            again = submit(client, page, f"{page}/approve", amount="50", currency="USD", reason="x")
            assert again.status_code == 409 and "not a bank transfer awaiting review" in again.text
        assert world.balance(person) == 0

    def test_a_flagged_mismatch_waits_in_the_queue_until_the_reported_amount_is_credited(
        self, world: World
    ) -> None:
        person = world.new_user()
        with world.as_user(person) as api:
            made = api.post(
                "/api/payments/orders",
                json={"bucket": "routed", "amount": "10", "provider": "sandbox"},
            )
            order_id = made.json()["id"]
            api.post(f"/sandbox/checkout/{order_id}/pay", data={"amount": "8"})
        assert world.balance(person, "routed") == 0  # a mismatch credits nothing
        page = f"/operator/topups/{order_id}"
        with ops(world) as client:
            queue = client.get("/operator/topups").text.split('id="review-queue"')[1]
            assert order_id in queue.split("</section>")[0] and "amount mismatch" in queue
            assert "Credit what the provider reported" in client.get(page).text
            empty = submit(client, page, f"{page}/override", reason="")
            assert empty.status_code == 400 and world.balance(person, "routed") == 0
            done = submit(client, page, f"{page}/override", reason="customer paid 8 by mistake")
            assert done.status_code == 303
            assert "Done: credited" in client.get(done.headers["location"]).text
        # ¥8 paid at the order's rate: what was actually paid, not the ¥10 ordered
        assert world.balance(person, "routed") == 8 * NANOS
        assert ("order.override", f"order:{order_id}", "customer paid 8 by mistake") in (
            audit_actions(world)
        )

    def test_the_list_filters_by_state_provider_and_user(self, world: World) -> None:
        ann, bob = world.new_user(), world.new_user()
        waiting = bank_order(world, ann)
        paid = paid_routed_topup(world, bob)
        with ops(world) as client:

            def listed(query: str) -> str:
                response = client.get("/operator/topups?" + query)
                assert response.status_code == 200, response.text
                return response.text.split('id="orders"')[1]

            assert waiting["id"] in listed("") and paid in listed("")
            by_state = listed("state=paid")
            assert paid in by_state and waiting["id"] not in by_state
            by_provider = listed("provider=bank")
            assert waiting["id"] in by_provider and paid not in by_provider
            by_user = listed(f"user_id={bob.id}")
            assert paid in by_user and waiting["id"] not in by_user


def stored_event(world: World, *, status: str, attempts: int, error: str | None) -> int:
    """A provider event in the inbox with its webhook job, as a worker left it."""
    now_us = world.now_us()
    with world.db.begin() as conn:
        inbox_id = conn.execute(
            inbox_events.insert()
            .values(
                source="stripe",
                external_id=f"evt_{status}_{attempts}",
                event_type="checkout.session.completed",
                payload="{}",
                received_at=now_us,
            )
            .returning(inbox_events.c.id)
        ).scalar_one()
        return int(
            conn.execute(
                payment_jobs.insert()
                .values(
                    inbox_id=inbox_id,
                    source="stripe",
                    status=status,
                    attempts=attempts,
                    run_after=now_us + 3600 * 1_000_000,
                    last_error=error,
                    created_at=now_us,
                    updated_at=now_us,
                )
                .returning(payment_jobs.c.id)
            ).scalar_one()
        )


def job_state(world: World, job_id: int) -> tuple[str, int]:
    """The job's status and attempts so far."""
    with world.db.read() as conn:
        row = conn.execute(
            select(payment_jobs.c.status, payment_jobs.c.attempts).where(
                payment_jobs.c.id == job_id
            )
        ).one()
    return str(row.status), int(row.attempts)


class TestPaymentJobs:
    def test_jobs_not_done_are_listed_with_their_error_and_a_dead_one_runs_again(
        self, world: World
    ) -> None:
        dead = stored_event(world, status="dead", attempts=30, error="Stripe API: 503 down")
        retrying = stored_event(world, status="queued", attempts=2, error="timed out")
        done = stored_event(world, status="done", attempts=1, error=None)
        with ops(world) as client:
            listing = client.get("/operator/topups")
            assert listing.status_code == 200
            assert f'data-job="{dead}" data-status="dead"' in listing.text
            assert f'data-job="{retrying}" data-status="queued"' in listing.text
            assert f'data-job="{done}"' not in listing.text
            assert "Stripe API: 503 down" in listing.text and "retrying" in listing.text
            # only the dead job offers to run again
            assert f"/operator/payment-jobs/{dead}/requeue" in listing.text
            assert f"/operator/payment-jobs/{retrying}/requeue" not in listing.text
            ran = submit(
                client,
                "/operator/topups",
                f"/operator/payment-jobs/{dead}/requeue",
                reason="Stripe is back",
            )
            assert ran.status_code == 303
            assert ran.headers["location"] == f"/operator/topups?requeued={dead}#jobs"
            assert f"Job {dead} is queued again" in client.get(ran.headers["location"]).text
        # queued again, or already run once more by the worker (this server has no Stripe, so
        # that run failed): either way no longer the dead job with 30 attempts it was
        assert job_state(world, dead) != ("dead", 30)
        assert ("payment_job.requeue", f"payment_job:{dead}", "Stripe is back") in audit_actions(
            world
        )

    def test_a_requeue_needs_a_reason_a_dead_job_and_a_csrf_token(self, world: World) -> None:
        dead = stored_event(world, status="dead", attempts=30, error="boom")
        retrying = stored_event(world, status="queued", attempts=2, error="timed out")
        before = audit_actions(world)
        with ops(world) as client:
            no_reason = submit(
                client, "/operator/topups", f"/operator/payment-jobs/{dead}/requeue", reason=" "
            )
            assert no_reason.status_code == 400
            assert "a reason is required to requeue a job" in no_reason.text
            not_dead = submit(
                client, "/operator/topups", f"/operator/payment-jobs/{retrying}/requeue", reason="x"
            )
            assert not_dead.status_code == 409 and "is not dead" in not_dead.text
            unknown = submit(
                client, "/operator/topups", "/operator/payment-jobs/999999/requeue", reason="x"
            )
            assert unknown.status_code == 409 and "Traceback" not in unknown.text
            forged = client.post(
                f"/operator/payment-jobs/{dead}/requeue",
                data={"csrf_token": "forged", "reason": "x"},
            )
            assert forged.status_code == 403
        with session_client(world.base_url, world.make.session_token(world.user)) as plain:
            token = csrf_of(plain.get("/"))
            refused = plain.post(
                f"/operator/payment-jobs/{dead}/requeue", data={"csrf_token": token, "reason": "x"}
            )
            assert refused.status_code == 403
        assert job_state(world, dead) == ("dead", 30) and audit_actions(world) == before


class TestRefunds:
    def test_refunding_part_of_a_partly_spent_top_up_shows_the_credit_used_and_receipts(
        self, world: World
    ) -> None:
        person = world.new_user()
        order_id = paid_routed_topup(world, person, "10")
        receipt = spend_routed(world, person)
        charge = int(receipt["charge_nanos"])
        assert charge > 0
        page = f"/operator/topups/{order_id}"
        with ops(world) as client:
            detail = client.get(page)
            used = detail.text.split('id="credit-used"')[1].split("</section>")[0]
            assert receipt["request_id"] in used
            assert f"<strong>{money(charge, 'CNY')}</strong> of ¥10.00 already used" in used
            refused = submit(client, page, f"{page}/refund", amount="11", reason="too much")
            assert refused.status_code == 409 and "can still be refunded" in refused.text
            no_reason = submit(client, page, f"{page}/refund", amount="4")
            assert no_reason.status_code == 400 and "reason is required" in no_reason.text
            made = submit(client, page, f"{page}/refund", amount="4", reason="asked nicely")
            assert made.status_code == 303
            refund_page = client.get(made.headers["location"])
            assert refund_page.status_code == 200
            text = refund_page.text
            assert 'data-testid="credit-used">yes' in text
            related = text.split('id="related-receipts"')[1].split("</section>")[0]
            assert receipt["request_id"] in related
            assert "asked nicely" in text and "succeeded" in text
            listing = client.get("/operator/refunds")
            refund_id = made.headers["location"].rsplit("/", 1)[1]
            assert refund_id in listing.text and order_id in listing.text
            # the user's page links each entry to the console page of its cause
            wallet = client.get(f"/operator/users/{person.id}").text
            assert f'<a href="/operator/topups/{order_id}">order {order_id}</a>' in wallet
            assert f'<a href="/operator/refunds/{refund_id}">refund {refund_id}</a>' in wallet
        assert world.balance(person, "routed") == 10 * NANOS - charge - 4 * NANOS
        assert ("refund.start", f"order:{order_id}", "asked nicely") in audit_actions(world)

    def test_a_shortfall_under_review_is_decided_on_the_refund_page(
        self, make_world: WorldFactory
    ) -> None:
        world = make_world(payments_sandbox=True, refund_shortfall_policy="review")
        person = world.new_user()
        order_id = paid_routed_topup(world, person, "10")
        spend_routed(world, person)
        page = f"/operator/topups/{order_id}"
        with ops(world) as client:
            made = submit(client, page, f"{page}/refund", reason="chargeback risk")
            assert made.status_code == 303, made.text
            refund_path = made.headers["location"]
            shown = client.get(refund_path).text
            assert "Decide the shortfall" in shown and "awaiting decision" in shown
            refund_id = refund_path.rsplit("/", 1)[1]
            waiting = client.get("/operator/refunds?shortfall=awaiting_decision").text
            assert refund_id in waiting and "chargeback risk" in waiting
            assert refund_id not in client.get("/operator/refunds?shortfall=none").text
            bad = submit(
                client,
                refund_path,
                f"/operator/refunds/{refund_id}/decision",
                decision="forgive",
                reason="x",
            )
            assert bad.status_code == 400 and "choose debt or write off" in bad.text
            done = submit(
                client,
                refund_path,
                f"/operator/refunds/{refund_id}/decision",
                decision="write_off",
                reason="small amount",
            )
            assert done.status_code == 303
            after = client.get(refund_path).text
            assert "written off" in after and "Decide the shortfall" not in after
