"""Webhooks through the durable job queue, on both databases: the endpoint answers once the
event and its job are stored; a failed attempt is retried after its backoff and never loses
the event nor applies it twice; a job has one runner at a time, across workers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select

from tallygate.db.engine import Database
from tallygate.kit.clock import FrozenClock
from tallygate.models.payments import inbox_events, payment_jobs
from tallygate.payments import jobs
from tests.fixtures.payments import FakeStripe, sign_stripe
from tests.fixtures.server import LiveServer
from tests.payments.conftest import ServerFactory
from tests.payments.helpers import (
    UNIT,
    as_user,
    assert_matches_stripe,
    balance,
    create_order,
    entries_with_key,
    wait_for_jobs,
)


def the_job(live: LiveServer) -> Any:
    with live.db.read() as conn:
        return conn.execute(select(payment_jobs)).mappings().one()


def post_event(live: LiveServer, payload: bytes) -> Any:
    t = int(live.clock.now().timestamp())
    with live.client() as http:
        return http.post(
            "/api/payments/webhooks/stripe",
            content=payload,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_stripe(payload, t=t),
            },
        )


class TestRetries:
    def test_a_refetch_failing_twice_then_succeeding_credits_exactly_once(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http, provider="stripe")
        sid = order["provider_reference"]
        stripe_fake.complete(sid)
        stripe_fake.fail_retrievals = 2  # Stripe's API is down for the next two re-fetches
        payload = stripe_fake.event("checkout.session.completed", stripe_fake.sessions[sid])

        answer = post_event(live, payload)
        assert answer.status_code == 200  # stored and queued: answered before processing
        wait_for_jobs(live)
        job = the_job(live)
        assert (job["status"], job["attempts"]) == ("queued", 1)
        assert "503" in job["last_error"] or "temporarily down" in job["last_error"]
        assert job["run_after"] == live.ledger.now_us() + jobs.backoff_us(1)
        assert balance(live, user.id).balance_nanos == 0

        live.clock.advance(1)  # not due yet: nothing runs
        wait_for_jobs(live)
        assert the_job(live)["attempts"] == 1

        live.clock.advance(1)  # the 2 s backoff has passed: the second attempt fails too
        wait_for_jobs(live)
        job = the_job(live)
        assert (job["status"], job["attempts"]) == ("queued", 2)
        assert (
            job["run_after"]
            == live.ledger.now_us() + jobs.backoff_us(2)
            == (live.ledger.now_us() + 4_000_000)
        )
        assert balance(live, user.id).balance_nanos == 0

        live.clock.advance(4)
        wait_for_jobs(live)
        job = the_job(live)
        assert (job["status"], job["attempts"], job["last_error"]) == ("done", 3, None)
        assert balance(live, user.id).balance_nanos == 10 * UNIT
        assert len(entries_with_key(live, "topup:")) == 1
        with live.db.read() as conn:
            event = conn.execute(select(inbox_events)).mappings().one()
        assert event["handled_at"] is not None and event["attempts"] == 3

        # A redelivery of the handled event neither queues another job nor credits again.
        assert post_event(live, payload).json() == {"received": True, "duplicate": True}
        wait_for_jobs(live)
        with live.db.read() as conn:
            assert len(conn.execute(select(payment_jobs)).all()) == 1
        assert len(entries_with_key(live, "topup:")) == 1
        assert_matches_stripe(live, stripe_fake, sid, user.id)

    def test_the_backoff_doubles_and_is_capped(self) -> None:
        assert [jobs.backoff_us(n) // 1_000_000 for n in (1, 2, 3, 4, 12, 30)] == [
            2,
            4,
            8,
            16,
            3600,
            3600,
        ]


class TestOperators:
    def test_a_dead_job_is_listed_and_an_operator_requeues_it_with_an_audited_reason(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            sid = create_order(http, provider="stripe")["provider_reference"]
        stripe_fake.complete(sid)
        stripe_fake.fail_retrievals = 1
        assert (
            post_event(
                live, stripe_fake.event("checkout.session.completed", stripe_fake.sessions[sid])
            ).status_code
            == 200
        )
        wait_for_jobs(live)
        with live.db.begin() as conn:  # as if every retry had failed
            conn.execute(payment_jobs.update().values(status="dead"))
        live.clock.advance(3600)
        wait_for_jobs(live)
        assert balance(live, user.id).balance_nanos == 0  # a dead job is not retried

        operator = live.make.operator()
        with as_user(live, operator) as admin:
            (listed,) = admin.get("/admin/api/payments/jobs", params={"status": "dead"}).json()[
                "items"
            ]
            assert (listed["source"], listed["event_type"]) == (
                "stripe",
                "checkout.session.completed",
            )
            assert "temporarily down" in listed["last_error"] or "503" in listed["last_error"]
            with as_user(live, user) as plain:
                assert plain.post(
                    f"/admin/api/payments/jobs/{listed['id']}/requeue", json={"reason": "x"}
                ).status_code in (401, 403)
            done = admin.post(
                f"/admin/api/payments/jobs/{listed['id']}/requeue",
                json={"reason": "Stripe is back"},
            )
            assert done.status_code == 200, done.text
            wait_for_jobs(live)
            again = admin.post(
                f"/admin/api/payments/jobs/{listed['id']}/requeue", json={"reason": "twice"}
            )
        assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_dead"
        assert balance(live, user.id).balance_nanos == 10 * UNIT
        assert the_job(live)["status"] == "done"
        with live.db.read() as conn:
            from tallygate.audit.service import list_events

            events = [(e.action, e.reason) for e in list_events(live.ledger.tx(conn))]
        assert ("payment_job.requeue", "Stripe is back") in events


class TestSeveralProcesses:
    def test_two_servers_on_one_database_apply_every_event_once(
        self, start: ServerFactory, stripe_fake: FakeStripe
    ) -> None:
        """Two app instances (each with its own worker) share the database; every event is
        delivered to both, several times, concurrently: each order is credited exactly once
        and each stored event ran as one job."""
        servers = [start(), start()]
        users, payloads = [], []
        for n in range(6):
            user = servers[0].make.user(email=f"payer{n}@example.com")
            with as_user(servers[0], user) as http:
                sid = create_order(http, provider="stripe")["provider_reference"]
            stripe_fake.complete(sid)
            users.append(user)
            payloads.append(
                stripe_fake.event("checkout.session.completed", stripe_fake.sessions[sid])
            )
        sends = [(server, p) for p in payloads for server in servers for _ in range(2)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda sp: post_event(sp[0], sp[1]), sends))
        assert {a.status_code for a in answers} == {200}
        for server in servers:
            wait_for_jobs(server)
        for user in users:
            assert balance(servers[0], user.id).balance_nanos == 10 * UNIT
        assert len(entries_with_key(servers[0], "topup:")) == 6
        with servers[0].db.read() as conn:
            rows = conn.execute(select(payment_jobs)).mappings().all()
        assert len(rows) == 6
        assert {(r["status"], r["attempts"]) for r in rows} == {("done", 1)}


def stored_events(db: Database, clock: FrozenClock, n: int) -> list[int]:
    now = int(clock.now().timestamp() * 1_000_000)
    ids = []
    with db.begin() as conn:
        for i in range(n):
            inbox_id = int(
                conn.execute(
                    inbox_events.insert()
                    .values(
                        source="stripe",
                        external_id=f"evt_{i}",
                        event_type="checkout.session.completed",
                        payload="{}",
                        received_at=now,
                    )
                    .returning(inbox_events.c.id)
                ).scalar_one()
            )
            jobs.enqueue(conn, inbox_id=inbox_id, source="stripe", now_us=now)
            jobs.enqueue(conn, inbox_id=inbox_id, source="stripe", now_us=now)  # no second job
            ids.append(inbox_id)
    return ids


def now_of(clock: FrozenClock) -> int:
    return int(clock.now().timestamp() * 1_000_000)


class TestClaims:
    def test_concurrent_workers_claim_each_job_once(self, db: Database, clock: FrozenClock) -> None:
        stored_events(db, clock, 30)
        taken: dict[str, list[int]] = {}
        barrier = threading.Barrier(3)

        def worker(name: str) -> None:
            barrier.wait()
            mine: list[int] = []
            while True:
                with db.begin() as conn:
                    got = jobs.claim(conn, worker=name, now_us=now_of(clock), limit=4)
                if not got:
                    break
                mine += [j.inbox_id for j in got]
            taken[name] = mine

        threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        claimed = [i for ids in taken.values() for i in ids]
        assert len(claimed) == 30 and len(set(claimed)) == 30
        with db.read() as conn:
            rows = conn.execute(select(payment_jobs)).mappings().all()
        assert {r["status"] for r in rows} == {"running"}
        assert all(r["attempts"] == 1 for r in rows)

    def test_a_crashed_workers_claim_is_taken_over_after_the_lease(
        self, db: Database, clock: FrozenClock
    ) -> None:
        stored_events(db, clock, 1)
        with db.begin() as conn:
            (job,) = jobs.claim(conn, worker="crashed", now_us=now_of(clock), limit=5)
        with db.begin() as conn:
            assert jobs.claim(conn, worker="other", now_us=now_of(clock), limit=5) == []
            assert jobs.reclaim_stale(conn, now_us=now_of(clock)) == 0
        clock.advance(jobs.LEASE_US // 1_000_000 + 1)
        with db.begin() as conn:
            assert jobs.reclaim_stale(conn, now_us=now_of(clock)) == 1
            (again,) = jobs.claim(conn, worker="other", now_us=now_of(clock), limit=5)
        assert again.id == job.id and again.attempts == 2
        with db.begin() as conn:
            jobs.finish(conn, job, worker="crashed", now_us=now_of(clock))  # too late: ignored
            assert jobs.job_of(conn, job.inbox_id)["status"] == "running"  # type: ignore[index]
            jobs.finish(conn, again, worker="other", now_us=now_of(clock))
            assert jobs.job_of(conn, job.inbox_id)["status"] == "done"  # type: ignore[index]

    def test_a_job_failing_every_time_ends_dead_keeps_its_event_and_can_be_requeued(
        self, db: Database, clock: FrozenClock
    ) -> None:
        (inbox_id,) = stored_events(db, clock, 1)
        for attempt in range(1, jobs.MAX_ATTEMPTS + 1):
            with db.begin() as conn:
                (job,) = jobs.claim(conn, worker="w", now_us=now_of(clock), limit=1)
                assert job.attempts == attempt
                outcome = jobs.fail(conn, job, worker="w", error="boom", now_us=now_of(clock))
            clock.advance(jobs.backoff_us(attempt) // 1_000_000)
        assert outcome == "dead"
        with db.begin() as conn:
            assert jobs.claim(conn, worker="w", now_us=now_of(clock), limit=1) == []
            event = (
                conn.execute(select(inbox_events).where(inbox_events.c.id == inbox_id))
                .mappings()
                .one()
            )
            assert event["handled_at"] is None and event["last_error"] == "boom"
            assert event["attempts"] == jobs.MAX_ATTEMPTS
            job_row = jobs.job_of(conn, inbox_id)
            assert job_row is not None and job_row["status"] == "dead"
            assert jobs.requeue(conn, int(job_row["id"]), now_us=now_of(clock))
            (again,) = jobs.claim(conn, worker="w", now_us=now_of(clock), limit=1)
        assert again.inbox_id == inbox_id
