"""Experiment (not a change to src/): ``tallygate serve`` with the ledger executor running a call
*inline on the event loop* when the writer thread is idle and nothing is queued, instead of
handing it to the writer thread (two thread wake-ups per call: queue → writer, then
call_soon_threadsafe → loop). Under load the queue is not empty and calls go to the writer as
before, so group commit is unchanged. Same connection, serialized by a lock.

    TALLYGATE_DATABASE_URL=… python bench/gateway/experiments/inline_ledger.py --port 9203

Used by docs/decisions/0005-gateway-hot-path-costs.md (proposal 1); compare.py measures it.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "src"))

from tallygate.ledger import executor as ex  # noqa: E402

_init = ex.LedgerExecutor.__init__
_run = ex.LedgerExecutor._run


def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
    self._busy = threading.Lock()
    _init(self, *args, **kwargs)


def run_locked(self: Any, batch: Any) -> None:
    with self._busy:
        _run(self, batch)


async def call(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
    if self._queue.empty() and self._busy.acquire(blocking=False):
        try:
            self.batches += 1
            self.calls += 1
            try:
                result, error = self._run_one((fn, args, kwargs, None, None))
            except Exception:
                self._reset()
                raise
        finally:
            self._busy.release()
        if error is not None:
            raise error
        return result
    return await _call(self, fn, *args, **kwargs)


_call = ex.LedgerExecutor.call
ex.LedgerExecutor.__init__ = __init__  # type: ignore[method-assign]
ex.LedgerExecutor._run = run_locked  # type: ignore[method-assign]
ex.LedgerExecutor.call = call  # type: ignore[method-assign]

if __name__ == "__main__":
    from tallygate.cli.main import main

    sys.argv = ["tallygate", "serve", "--host", "127.0.0.1", *sys.argv[1:]]
    main()
