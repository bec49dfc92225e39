"""Ledger operations run in SEPARATE OS PROCESSES, and the parent-side handle that drives them.

Child side: ``python -m tests.ledger.workers '<json config>'`` opens its own ``Database`` and
``Ledger`` (clock frozen at ``now_us``; fault hook from ``TALLYGATE_FAULT``), warms up its
connections, prints ``{"ready": true}`` and then serves one JSON command per stdin line, answering
each with one JSON line on stdout. A child blocks in ``readline`` until its command arrives, so
the parent's command lines are the barrier: the parent waits until every child is ready, then
writes all the command lines back to back and the children fire together.

Every operation runs in its own committed transaction, exactly as a request boundary would; an
error is reported (class, module, SQLSTATE, message, status) instead of raised, so the parent can
assert on it. Nothing here retries: a deadlock or serialization failure is reported as such.

Parent side: ``Worker`` (one child) and ``workers`` (a context manager that starts several, waits
for all to be ready and always kills and reaps them)."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CURRENCIES = {"credit": "USD", "routed": "CNY"}
HOLD_TTL_SECONDS = 600
HOLD_GRACE_SECONDS = 60

# ================================================================================================
# child side
# ================================================================================================


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "ok": False,
        "error": type(exc).__name__,
        "module": type(exc).__module__,
        "sqlstate": getattr(exc, "sqlstate", None),
        "code": getattr(exc, "code", None),
        "status": getattr(exc, "status", None),
        "message": str(exc),
    }


class Child:
    def __init__(self, config: dict[str, Any]) -> None:
        from tallygate.db.engine import Database
        from tallygate.kit.clock import FrozenClock, from_epoch_us
        from tallygate.ledger import Ledger, faults

        self.from_epoch_us = from_epoch_us
        self.clock = FrozenClock(from_epoch_us(int(config["now_us"])))
        self.db = Database(str(config["url"]))
        self.ledger = Ledger(
            CURRENCIES,
            clock=self.clock,
            hold_ttl_seconds=HOLD_TTL_SECONDS,
            hold_grace_seconds=HOLD_GRACE_SECONDS,
            fault=faults.hook(os.environ.get("TALLYGATE_FAULT", "")),
        )
        self.users = [int(u) for u in config.get("users", [])]

    def warm_up(self) -> int | None:
        """Open the write connection and fill the id caches before the barrier, so that after it
        the children spend their time in the contended statements, not in imports or connects.

        Returns the PostgreSQL backend pid of that connection (the child never opens a second
        one, so every later transaction runs on it), letting the parent watch its lock waits."""
        backend_pid = None
        with self.db.begin() as conn:
            tx = self.ledger.tx(conn)
            if tx.postgres:
                row = tx.one("SELECT pg_backend_pid()")
                assert row is not None
                backend_pid = int(row[0])
            for user in self.users:
                for bucket in CURRENCIES:
                    self.ledger.user_accounts(tx, user, bucket)
                    for name in ("clearing:sandbox", "revenue:usage", "adjust:admin"):
                        self.ledger.platform(tx, name, bucket)
        return backend_pid

    def in_tx(self, fn: Callable[..., Any], **kw: Any) -> Any:
        with self.db.begin() as conn:
            return fn(self.ledger.tx(conn), **kw)

    # ---- commands ------------------------------------------------------------------------------

    def cmd_hold(self, c: dict[str, Any]) -> dict[str, Any]:
        """One ``place_hold`` per key, each in its own transaction."""
        results = []
        for key in c["keys"]:
            try:
                hold = self.in_tx(
                    self.ledger.place_hold,
                    user_id=c["user"],
                    bucket=c["bucket"],
                    amount_nanos=c["amount"],
                    hold_key=key,
                )
                results.append({"ok": True, "key": key, "status": hold.status})
            except Exception as exc:
                results.append({"key": key, **_error(exc)})
        return {"results": results}

    def cmd_credit_parallel(self, c: dict[str, Any]) -> dict[str, Any]:
        """``c["n"]`` threads of this process, each on its own connection, post the same credit
        at once (a thread barrier), so one child stands for several concurrent clients."""
        n = int(c["n"])
        barrier = threading.Barrier(n, timeout=30)
        replies: list[dict[str, Any]] = [{} for _ in range(n)]

        def post(i: int) -> None:
            barrier.wait()
            replies[i] = self.cmd_credit(c)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        return {"replies": replies}

    def cmd_credit(self, c: dict[str, Any]) -> dict[str, Any]:
        try:
            posted = self.in_tx(
                self.ledger.credit,
                user_id=c["user"],
                bucket=c["bucket"],
                amount_nanos=c["amount"],
                kind="topup",
                source="clearing:sandbox",
                idempotency_key=c["key"],
            )
        except Exception as exc:
            return _error(exc)
        return {"ok": True, "entry_id": posted.entry_id, "replayed": posted.replayed}

    def cmd_settle(self, c: dict[str, Any]) -> dict[str, Any]:
        try:
            s = self.in_tx(self.ledger.settle_hold, hold_key=c["key"], actual_nanos=c["actual"])
        except Exception as exc:
            return _error(exc)
        return {
            "ok": True,
            "charged": s.charged_nanos,
            "released": s.released_nanos,
            "entry_id": s.entry_id,
            "replayed": s.replayed,
        }

    def cmd_sweep(self, c: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"ok": True, "expired": self.in_tx(self.ledger.expire_holds)}
        except Exception as exc:
            return _error(exc)

    def cmd_sweep_lots(self, c: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"ok": True, "expired": self.in_tx(self.ledger.expire_lots)}
        except Exception as exc:
            return _error(exc)

    def cmd_audit(self, c: dict[str, Any]) -> dict[str, Any]:
        from tallygate.audit.service import record

        seqs: list[int] = []
        errors: list[dict[str, Any]] = []
        for i in range(int(c["n"])):
            try:
                event = self.in_tx(
                    record,
                    now_us=int(c["now_us"]),
                    actor=c["actor"],
                    source="system",
                    action="test.append",
                    target=f"{c['actor']}:{i}",
                    before={"i": i},
                    after={"i": i + 1},
                    reason=f"append {i} from {c['actor']}",
                )
                seqs.append(event.seq)
            except Exception as exc:
                errors.append(_error(exc))
        return {"seqs": seqs, "errors": errors}

    def cmd_clock(self, c: dict[str, Any]) -> dict[str, Any]:
        self.clock.set(self.from_epoch_us(int(c["now_us"])))
        return {"ok": True}

    def cmd_mix(self, c: dict[str, Any]) -> dict[str, Any]:
        """A seeded random mix of money moving in both directions on the same users: credits,
        reversals (which may book debt), direct debits, holds then settle or release.

        Returns, per user, the nano-units that succeeded in each direction, plus every error.
        Only InsufficientBalance and AccountOwes are expected refusals."""
        from tallygate.ledger import AccountOwes, InsufficientBalance

        rng = random.Random(c["seed"])
        tag = c["tag"]
        bucket = c["bucket"]
        totals = {str(u): {"in": 0, "reversed": 0, "debited": 0, "settled": 0} for u in c["users"]}
        refusals: list[str] = []
        errors: list[dict[str, Any]] = []
        led = self.ledger
        for i in range(int(c["ops"])):
            user = rng.choice(c["users"])
            t = totals[str(user)]
            op = rng.choice(("credit", "reverse", "debit", "settle", "release"))
            key = f"{tag}:{i}"
            amount = rng.randint(1, 40)
            try:
                if op == "credit":
                    self.in_tx(
                        led.credit,
                        user_id=user,
                        bucket=bucket,
                        amount_nanos=amount,
                        kind="topup",
                        source="clearing:sandbox",
                        idempotency_key=key,
                    )
                    t["in"] += amount
                elif op == "reverse":
                    self.in_tx(
                        led.reverse,
                        user_id=user,
                        bucket=bucket,
                        amount_nanos=amount,
                        kind="reversal",
                        destination="clearing:sandbox",
                        idempotency_key=key,
                    )
                    t["reversed"] += amount
                elif op == "debit":
                    self.in_tx(
                        led.debit,
                        user_id=user,
                        bucket=bucket,
                        amount_nanos=amount,
                        kind="adjustment",
                        destination="adjust:admin",
                        idempotency_key=key,
                    )
                    t["debited"] += amount
                else:
                    self.in_tx(
                        led.place_hold,
                        user_id=user,
                        bucket=bucket,
                        amount_nanos=amount,
                        hold_key=key,
                    )
                    if op == "settle":
                        actual = rng.randint(0, amount)
                        s = self.in_tx(led.settle_hold, hold_key=key, actual_nanos=actual)
                        t["settled"] += s.charged_nanos
                    else:
                        self.in_tx(led.release_hold, hold_key=key)
            except (InsufficientBalance, AccountOwes) as exc:
                refusals.append(type(exc).__name__)
            except Exception as exc:
                errors.append({"op": op, "key": key, **_error(exc)})
        return {"totals": totals, "refusals": refusals, "errors": errors}

    def cmd_crash(self, c: dict[str, Any]) -> dict[str, Any]:
        """(a) place a hold in its own committed transaction, then (b) run ``then`` (a credit or
        the settle of that hold) in a transaction the fault hook pauses before COMMIT."""
        hold = self.in_tx(
            self.ledger.place_hold,
            user_id=c["user"],
            bucket=c["bucket"],
            amount_nanos=c["hold_amount"],
            hold_key=c["hold_key"],
        )
        _emit({"hold_committed": hold.hold_key})
        if c["then"] == "credit":
            return self.cmd_credit(
                {"user": c["user"], "bucket": c["bucket"], "amount": c["amount"], "key": c["key"]}
            )
        return self.cmd_settle({"key": c["hold_key"], "actual": c["amount"]})

    def serve(self) -> None:
        backend_pid = self.warm_up()
        _emit({"ready": True, "pid": os.getpid(), "backend_pid": backend_pid})
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            handler = getattr(self, f"cmd_{command['op']}")
            if command.get("announce"):
                _emit({"begun": command["op"]})  # about to open its transaction
            _emit(handler(command))
        self.db.dispose()


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    Child(json.loads(argv[1])).serve()


# ================================================================================================
# parent side
# ================================================================================================

START_TIMEOUT = 30.0
REPLY_TIMEOUT = 45.0


class Worker:
    """One child process. stdout and stderr are drained by threads into queues, so reads have
    bounded timeouts and a chatty child can never block on a full pipe."""

    def __init__(
        self,
        url: str,
        now_us: int,
        *,
        users: list[int] | None = None,
        fault: str = "",
    ) -> None:
        env = dict(os.environ)
        env["TALLYGATE_FAULT"] = fault
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), str(REPO / "src"), env.get("PYTHONPATH", "")]
        )
        config = {"url": url, "now_us": now_us, "users": users or []}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ledger.workers", json.dumps(config)],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.stdout: queue.Queue[str | None] = queue.Queue()
        self.stderr: queue.Queue[str | None] = queue.Queue()
        self.stderr_seen: list[str] = []
        self.backend_pid: int | None = None  # PostgreSQL: the child's connection, once ready
        self._threads = [
            threading.Thread(target=_drain, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=_drain, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _stderr_text(self) -> str:
        while True:
            try:
                line = self.stderr.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.stderr_seen.append(line)
        return "".join(self.stderr_seen)

    def reply(self, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"worker {self.pid} gave no reply within {timeout} s; stderr:\n"
                    + self._stderr_text()
                )
            try:
                line = self.stdout.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(
                    f"worker {self.pid} exited (rc={self.proc.poll()}) without a reply; stderr:\n"
                    + self._stderr_text()
                )
            if line.strip():
                return dict(json.loads(line))

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def call(self, command: dict[str, Any], timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        self.send(command)
        return self.reply(timeout)

    def wait_stderr(self, marker: str, timeout: float = REPLY_TIMEOUT) -> str:
        """Block until a stderr line contains ``marker`` (bounded); returns that line."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"worker {self.pid}: no {marker!r} on stderr within {timeout} s; stderr:\n"
                    + "".join(self.stderr_seen)
                )
            try:
                line = self.stderr.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(
                    f"worker {self.pid} exited (rc={self.proc.poll()}) before {marker!r}; "
                    "stderr:\n" + "".join(self.stderr_seen)
                )
            self.stderr_seen.append(line)
            if marker in line:
                return line

    def kill(self) -> int:
        """SIGKILL the child (no cleanup of any kind runs in it) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(timeout=10)

    def close(self, timeout: float = 15.0) -> None:
        """Ask the child to exit (EOF on stdin); kill it if it does not in time; reap it."""
        try:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                try:
                    self.proc.stdin.close()
                except BrokenPipeError:
                    pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        finally:
            if self.proc.poll() is None:
                self.kill()
            for t in self._threads:
                t.join(timeout=5)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


def _drain(stream: Any, into: queue.Queue[str | None]) -> None:
    try:
        for line in stream:
            into.put(line)
    except (ValueError, OSError):
        pass
    finally:
        into.put(None)


@contextmanager
def workers(
    n: int, url: str, now_us: int, *, users: list[int] | None = None, fault: str = ""
) -> Iterator[list[Worker]]:
    """Start ``n`` children, wait (bounded) until each has connected and warmed up, yield them;
    always reap them, killing any that hang."""
    started: list[Worker] = []
    try:
        for _ in range(n):
            started.append(Worker(url, now_us, users=users, fault=fault))
        for w in started:
            ready = w.reply(START_TIMEOUT)
            assert ready.get("ready"), ready
            w.backend_pid = ready.get("backend_pid")
        yield started
    finally:
        for w in started:
            w.close()


def fire(ws: list[Worker], commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The barrier release: every child is already blocked waiting for its command line; write
    them all back to back, then collect every reply (bounded)."""
    assert len(ws) == len(commands)
    for w, c in zip(ws, commands, strict=True):
        w.send(c)
    return [w.reply() for w in ws]


if __name__ == "__main__":
    main(sys.argv)
