"""The CSV fast path (``formats.csv_batches``: positional rows, one generated f-string per row,
text fields cached) writes exactly the bytes of the reference writer (``formats.csv_lines``:
a ``csv.writer`` over the per-cell converters) — for any value of any column kind, and for the
request export end to end on both databases, rare values included: formulas to neutralise,
quotes, commas and line breaks to quote, None, negative amounts, non-ASCII text, adjustments."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert
from tests.fixtures.factories import Factory

from tallygate.db.engine import Database
from tallygate.exports import formats, service
from tallygate.exports.formats import Col
from tallygate.exports.queries import REQUEST_COLUMNS, Filters, request_rows
from tallygate.keys import service as keys
from tallygate.keys.schemas import KeyCreate
from tallygate.kit.clock import to_epoch_us
from tallygate.ledger import Ledger
from tallygate.models.receipts import receipts

UNIT = 1_000_000_000
TRICKY = ["", "=1+2", "+x", "-x", "@x", "\tx", "\rx", "a,b", 'say "hi"', "two\nlines", "é 研究"]

COLUMNS = (
    Col("id", distinct=True),
    Col("label"),
    Col("n", "int"),
    Col("input_price_per_m", "money"),
    Col("amount", "money"),
    Col("at", "time"),
    Col("flag", "bool"),
    Col("rate", "decimal"),
    Col("details", "json"),
    Col("memo"),
)

texts = st.one_of(
    st.none(),
    st.sampled_from(TRICKY),
    st.text(),
    st.text(alphabet="=+-@\t\r\n,\"' aé_1"),
    st.integers(-5, 5),
    st.booleans(),
    st.floats(allow_nan=False),
    st.decimals(allow_nan=False, allow_infinity=False),
)
nanos = st.one_of(
    st.none(),
    st.integers(-(10**15), 10**15),
    st.sampled_from([0, 1, 9, 10, 10**8, UNIT, -1, -UNIT, 10**9 - 1]),
    st.booleans(),
)
values = {
    "text": texts,
    "int": st.one_of(st.none(), st.integers(), st.booleans(), st.decimals(-100, 100, places=0)),
    "money": nanos,
    "time": st.one_of(
        st.none(),
        st.integers(0, 4_102_444_800_000_000),
        st.integers(0, 10**6).map(lambda s: s * 10**6),
    ),
    "bool": st.one_of(st.none(), st.booleans(), st.integers(0, 2), st.sampled_from(["", "0"])),
    "decimal": st.one_of(st.none(), st.sampled_from(["12.50", "-1", "1,000", '"3"', "=1"])),
    "json": st.one_of(st.none(), st.lists(st.sampled_from(["a", 'b"', "c,d"])), st.just({})),
}
rows = st.tuples(*(values[c.kind] for c in COLUMNS))


def reference(columns: tuple[Col, ...], batch: list[tuple[Any, ...]]) -> bytes:
    dicts = [dict(zip((c.name for c in columns), row, strict=True)) for row in batch]
    return b"".join(formats.csv_lines(columns, dicts))


def fast(columns: tuple[Col, ...], batches: list[list[tuple[Any, ...]]], limit: int) -> bytes:
    render = formats.batch_renderer(columns, cache_limit=limit)
    header = b"".join(formats.csv_batches(columns, []))
    return header + b"".join(render(batch).encode() for batch in batches)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(rows, max_size=6), max_size=5), st.sampled_from([1, 2, 4096]))
def test_any_values_render_to_the_reference_writers_bytes(
    batches: list[list[tuple[Any, ...]]], limit: int
) -> None:
    """Across batches (the text cache carries over, and is cleared when full)."""
    flat = [row for batch in batches for row in batch]
    assert fast(COLUMNS, batches, limit) == reference(COLUMNS, flat)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(texts), max_size=5), st.lists(st.tuples(texts, texts), max_size=5))
def test_one_and_two_columns(one: list[tuple[Any]], two: list[tuple[Any, Any]]) -> None:
    """A lone empty field is written as ``""`` by csv.writer: the one-column case is its."""
    for columns, batch in (((Col("a"),), one), ((Col("a"), Col("b", distinct=True)), two)):
        assert fast(columns, [batch], 4096) == reference(columns, list(batch))


def _receipt(request_id: str, at: int, user_id: int, **values: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "created_at": at,
        "user_id": user_id,
        "endpoint": "chat",
        "status": "ok",
        "http_status": 200,
        "model": "exp-chat",
        "api_model_id": "exp-chat:routed",
        "upstream_model": "exp-up",
        "route_type": "routed",
        "bucket": "routed",
        "currency": "CNY",
        "primary_channel": "Primary",
        "channel": "Primary",
        "attempts_json": orjson.dumps([{"channel": "Primary", "status": 200}]).decode(),
        "input_per_m_nanos": 300_000_007,
        "output_per_m_nanos": 600_000_013,
        "cached_input_per_m_nanos": 150_000_000,
        "charge_nanos": 1_234_567,
        "balance_after_nanos": 79 * UNIT,
        "charge_policy": "completed:charge_usage",
        "latency_us": 812_345,
        "key_id": None,
        "key_label": "batch jobs",
        "project": "research",
        "backup_used": 0,
        "ttft_us": None,
        "streamed": 0,
        "client_disconnected": 0,
        "error_code": "",
        "failure_class": "",
        "usage_basis": "upstream",
        "price_version_id": None,
        **values,
    }


def test_the_request_csv_is_the_reference_writers_bytes(db: Database, ledger: Ledger) -> None:
    make = Factory(db, ledger)
    alice = make.user(email="alice@example.com")
    bob = make.user(email="bob@example.com")
    make.topup(alice.id, 80 * UNIT, bucket="routed")
    now = to_epoch_us(ledger.clock.now())
    with db.begin() as conn:
        evil = keys.create_key(
            conn,
            user_id=alice.id,
            body=KeyCreate(label='=HYPERLINK("http://x","y")', project='naïve, "quoted"\nline'),
            currencies=ledger.currencies,
            now_us=now,
        )
    second = to_epoch_us(dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC))
    attempts = orjson.dumps([{"channel": "Primary", "status": 500}] * 2 + [{"status": 200}])
    rows = [
        _receipt(
            "req_a1",
            second,
            alice.id,
            key_id=evil.id,
            key_label='=HYPERLINK("x")',
            project='naïve, "quoted"\nline',
            backup_used=1,
            channel='Backup, "b"',
            attempts_json=attempts.decode(),
            ttft_us=95_000,
            streamed=1,
        ),
        # the same µs: ordered by id; a whole second (no fraction)
        _receipt(
            "req-with-dash",
            second,
            alice.id,
            key_id=None,
            attempts_json="",
            balance_after_nanos=None,
            latency_us=-1_500,
            ttft_us=-1,
            status="failed",
            http_status=502,
            error_code="-1",
            failure_class="@x",
            usage_basis="\tx",
            model='модель, "x"',
            currency="€",
            client_disconnected=1,
        ),
        _receipt(
            "=req",
            second + 1,
            alice.id,
            key_id=424_242,
            charge_nanos=-5,
            balance_after_nanos=-UNIT - 1,
            input_per_m_nanos=0,
            output_per_m_nanos=UNIT,
            cached_input_per_m_nanos=999_999_999,
            price_version_id=None,
        ),
        _receipt(
            "req,comma",
            second + 999_999,
            999_999,
            key_label="",
            project="+SUM(A1)",
            charge_nanos=0,
            balance_after_nanos=0,
            error_code="two\r\nlines",
        ),
        _receipt("", second + 10**6, bob.id, key_label="bob's key", project="recherche 研究"),
        *(
            _receipt(
                f"req_bulk{i:05d}",
                second + 2 * 10**6 + i * 7_919,
                alice.id + i % 2,
                key_id=evil.id if i % 3 else None,
                charge_nanos=i * 1_000_003,
                balance_after_nanos=80 * UNIT - i * 1_000_003,
                ttft_us=i if i % 4 else None,
            )
            for i in range(2_500)  # more than one fetch
        ),
    ]
    with db.begin() as conn:
        conn.execute(insert(receipts), rows)
    with db.begin() as conn:
        tx = ledger.tx(conn)
        ledger.credit(
            tx,
            user_id=alice.id,
            bucket="routed",
            amount_nanos=1_234,
            kind="adjustment",
            source="adjust:admin",
            idempotency_key="adjust:fast-path:1",
            lot_kind="adjustment",
            cause_type="request",
            cause_id="req_a1",
            memo="goodwill, late",
        )
        ledger.debit(
            tx,
            user_id=alice.id,
            bucket="routed",
            amount_nanos=34,
            kind="adjustment",
            destination="adjust:admin",
            idempotency_key="adjust:fast-path:2",
            cause_type="request",
            cause_id="req_a1",
            memo='second "one"',
        )
    outputs = []
    for f in (
        Filters(),
        Filters(user_id=alice.id),
        Filters(since_us=second + 1, until_us=second + 3 * 10**6, status="ok"),
    ):
        with db.snapshot() as conn:
            expected = b"".join(formats.csv_lines(REQUEST_COLUMNS, request_rows(conn, f)))
        got = b"".join(service.stream(db, "requests", "csv", f))
        assert got == expected
        outputs.append(got)
    first = outputs[0].split(b"\r\n")[1]
    assert first.startswith(b"req_a1,") and b',0.0000012,"goodwill, late; second ""one""",' in first
    assert outputs[0].count(b"\r\n") == 1 + len(rows) + 1  # the header, a line break in a cell
