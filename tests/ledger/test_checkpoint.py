"""SQLite: the ledger executor's checkpoint keeps the WAL file bounded under steady load.

The writer connection never checkpoints; a thread copies the WAL back instead. A checkpoint
that runs beside a busy writer never finds every frame copied (the writer has appended more by
the time it ends), and SQLite starts the WAL again from its beginning only then — so without
care the file grows for as long as the load lasts (decision 0020)."""

from __future__ import annotations

from pathlib import Path

from tallygate.db.engine import make_engines
from tallygate.ledger.executor import LedgerExecutor
from tallygate.ledger.tx import Tx

ROW = b"x" * 3000  # about one WAL page per row


def _insert(tx: Tx, n: int) -> None:
    tx.conn.execute("INSERT INTO load (n, pad) VALUES (?, ?)", (n, ROW))


def _wal_header(path: Path) -> bytes:
    """The WAL's checkpoint sequence number and salts: they change when the WAL restarts."""
    try:
        with open(path, "rb") as f:
            return f.read(24)[12:24]
    except FileNotFoundError:
        return b""


def test_the_wal_restarts_while_the_writer_never_pauses(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    engine, _ = make_engines(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE load (n INTEGER PRIMARY KEY, pad BLOB)")
    executor = LedgerExecutor(engine)
    wal = Path(f"{path}-wal")
    headers: set[bytes] = set()
    try:
        for n in range(20_000):
            # One call after another, as a lone client's requests arrive: the writer is never
            # idle for longer than a hand-off.
            executor.submit(_insert, n).result()
            headers.add(_wal_header(wal))
        checkpoints = executor.checkpoints
    finally:
        executor.close()
        engine.dispose()

    assert checkpoints >= 2, "the checkpoint thread ran"
    # A WAL that restarts begins again at its first frame with new salts, so the file holds
    # only what came since the last checkpoint. Without the writer held off for the last
    # frames it never restarts, and the file holds the whole run (~250 MB here).
    restarts = len(headers - {b""}) - 1
    assert restarts >= 1, f"{checkpoints} checkpoints, the WAL never restarted"
