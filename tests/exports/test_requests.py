"""The request export over HTTP, driven by real requests through the gateway to the test upstream:
succeeded, fell back, failed (every channel 500 → 502), rejected, streamed, cut off by the client.

Expected values come from the scenario — the configured prices, labels and top-ups, and the test
upstream's record of the true usage it sent — never from re-reading the receipts table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import orjson
from tests.exports.conftest import (
    BACKUP,
    MODEL,
    OFFICIAL,
    PRICES,
    PRIMARY,
    TOPUP,
    UPSTREAM_MODEL,
    Key,
    World,
    expected_charge,
    nanos,
    parse_csv,
    parse_jsonl,
)
from tests.exports.helpers import (
    ANY_INT,
    check_csv_cell,
    check_json_value,
    doc_columns,
    money,
)

from tallygate.exports import formats
from tallygate.kit.clock import to_epoch_us

BUCKET = {"routed": "routed", "official": "credit"}
CURRENCY = {"routed": "CNY", "official": "USD"}
ADJUSTMENT = 1_234
ADJUSTMENT_REASON = "goodwill: slow answer"


@dataclass
class Scenario:
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)
    """request_id → every documented column's expected typed value."""
    attempts: dict[str, list[tuple[str, int | None, bool]]] = field(default_factory=dict)
    """request_id → [(channel label, status, failed)]."""
    balances: dict[tuple[int, str], int] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)


def _base(world: World, key: Key, route: str, api_model_id: str) -> dict[str, Any]:
    pin, pout, pcached = PRICES[route]
    world.clock.advance(1)
    return {
        "created_at": to_epoch_us(world.clock.now()),
        "user_id": key.user.id,
        "user_email": key.user.email,
        "project": key.project,
        "key_label": key.label,
        "key_prefix": key.secret[:10],
        "endpoint": "chat",
        "model": MODEL,
        "api_model_id": api_model_id,
        "route_type": route,
        "price_version_id": world.price_versions[route],
        "input_price_per_m": nanos(pin),
        "output_price_per_m": nanos(pout),
        "cached_input_price_per_m": nanos(pcached),
        "currency": CURRENCY[route],
        "bucket": BUCKET[route],
        "cached_tokens": 0,
        "adjustment": None,
        "adjustment_reason": "",
        "latency_ms": ANY_INT,
        "ttft_ms": None,
        "streamed": False,
        "client_disconnected": False,
        "error_code": "",
        "failure_class": "",
        "backup_channel": "",
    }


def _charged(sc: Scenario, key: Key, route: str, charge: int) -> int:
    return _debit(sc, key.user.id, route, charge)


def _debit(sc: Scenario, user_id: int, route: str, charge: int) -> int:
    slot = (user_id, BUCKET[route])
    sc.balances.setdefault(slot, TOPUP[BUCKET[route]])
    sc.balances[slot] -= charge
    return sc.balances[slot]


def _balance(sc: Scenario, key: Key, route: str) -> int:
    return sc.balances.setdefault((key.user.id, BUCKET[route]), TOPUP[BUCKET[route]])


def _record(sc: Scenario, request_id: str, row: dict[str, Any], attempts: list[Any]) -> None:
    row["request_id"] = request_id
    sc.expected[request_id] = row
    sc.attempts[request_id] = attempts
    sc.order.append(request_id)


def run_scenario(world: World) -> Scenario:
    sc, up, key = Scenario(), world.upstream, world.alice_key

    # 1. succeeded on the primary routed channel
    row = _base(world, key, "routed", MODEL)
    response = world.chat(key)
    assert response.status_code == 200, response.text
    usage = up.last.usage
    assert usage is not None
    charge = expected_charge("routed", usage.prompt_tokens, usage.completion_tokens)
    row.update(
        upstream_model=UPSTREAM_MODEL["routed"],
        primary_channel=PRIMARY,
        attempts=1,
        fallbacks=0,
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        usage_basis="upstream",
        charge=charge,
        balance_after=_charged(sc, key, "routed", charge),
        status="ok",
        http_status=200,
        charge_policy="completed:charge_usage",
    )
    _record(sc, response.headers["x-request-id"], row, [(PRIMARY, 200, False)])

    # 2. the primary answers 500: the backup answers
    row = _base(world, key, "routed", f"{MODEL}:routed")
    up.fault("http_500", times=1)
    response = world.chat(key, model=f"{MODEL}:routed")
    assert response.status_code == 200, response.text
    usage = up.last.usage
    assert usage is not None and len(up.requests) == 3
    charge = expected_charge("routed", usage.prompt_tokens, usage.completion_tokens)
    row.update(
        upstream_model=UPSTREAM_MODEL["routed"],
        primary_channel=PRIMARY,
        backup_channel=BACKUP,
        attempts=2,
        fallbacks=1,
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        usage_basis="upstream",
        charge=charge,
        balance_after=_charged(sc, key, "routed", charge),
        status="ok",
        http_status=200,
        charge_policy="completed:charge_usage",
    )
    _record(sc, response.headers["x-request-id"], row, [(PRIMARY, 500, True), (BACKUP, 200, False)])

    # 3. every channel answers 500: 502, nothing charged
    row = _base(world, key, "routed", MODEL)
    up.fault("http_500", times=2)
    response = world.chat(key)
    assert response.status_code == 502, response.text
    row.update(
        upstream_model="",
        primary_channel=PRIMARY,
        attempts=2,
        fallbacks=1,
        input_tokens=0,
        output_tokens=0,
        usage_basis="none",
        charge=0,
        balance_after=_balance(sc, key, "routed"),
        status="failed",
        http_status=502,
        failure_class="upstream_error",
        charge_policy="upstream_error:no_charge",
        error_code="upstream_failed",
    )
    _record(sc, response.headers["x-request-id"], row, [(PRIMARY, 500, True), (BACKUP, 500, True)])

    # 4. refused before any upstream call (a bad max_tokens): a rejected record, no charge
    row = _base(world, key, "routed", MODEL)
    response = world.chat(key, max_tokens=0)
    assert response.status_code == 400, response.text
    row.update(
        upstream_model="",
        primary_channel="",
        attempts=0,
        fallbacks=0,
        input_tokens=0,
        output_tokens=0,
        usage_basis="none",
        charge=0,
        balance_after=None,
        status="rejected",
        http_status=400,
        failure_class="rejected",
        charge_policy="rejected:no_charge",
        error_code="invalid_request",
    )
    _record(sc, response.headers["x-request-id"], row, [])

    # 5. streamed on the official route, with the usage chunk
    plain = world.alice_plain
    row = _base(world, plain, "official", f"{MODEL}:official")
    with httpx.Client(base_url=world.base_url, timeout=20) as http:
        response = http.post(
            "/v1/chat/completions",
            json={
                "model": f"{MODEL}:official",
                "messages": [{"role": "user", "content": "stream me"}],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            headers={"Authorization": f"Bearer {plain.secret}"},
        )
    assert response.status_code == 200 and "[DONE]" in response.text
    usage = up.last.usage
    assert usage is not None
    charge = expected_charge("official", usage.prompt_tokens, usage.completion_tokens)
    row.update(
        upstream_model=UPSTREAM_MODEL["official"],
        primary_channel=OFFICIAL,
        attempts=1,
        fallbacks=0,
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        usage_basis="upstream",
        charge=charge,
        balance_after=_charged(sc, plain, "official", charge),
        status="ok",
        http_status=200,
        charge_policy="completed:charge_usage",
        streamed=True,
        ttft_ms=ANY_INT,
    )
    _record(sc, response.headers["x-request-id"], row, [(OFFICIAL, 200, False)])

    # 6. a slow routed stream the client walks away from after three tokens
    row = _base(world, plain, "routed", MODEL)
    up.fault("slow_stream", chunk_delay=0.05, times=1)
    seen = 0
    with (
        httpx.Client(base_url=world.base_url, timeout=20) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "cut"}], "stream": True},
            headers={"Authorization": f"Bearer {plain.secret}"},
        ) as streamed,
    ):
        request_id = streamed.headers["x-request-id"]
        for line in streamed.iter_lines():
            if line.startswith("data: {") and _content(line):
                seen += 1
                if seen == 3:
                    break
    up.wait_for_disconnect(-1, timeout=10)
    rec = up.last
    assert rec.usage is not None
    # The gateway received at least what the client saw and at most what the upstream sent;
    # the exact count is checked against the export below.
    row.update(
        upstream_model=UPSTREAM_MODEL["routed"],
        primary_channel=PRIMARY,
        attempts=1,
        fallbacks=0,
        input_tokens=rec.usage.prompt_tokens,
        usage_basis="estimated",
        status="partial",
        http_status=200,
        failure_class="client_abort",
        charge_policy="client_abort:charge_received",
        streamed=True,
        client_disconnected=True,
        ttft_ms=ANY_INT,
        _received=(seen, rec.chunks_sent),
    )
    _record(sc, request_id, row, [(PRIMARY, 200, False)])

    # 7. bob's request, which alice must never see
    response = world.chat(world.bob_key)
    assert response.status_code == 200
    sc.order.append("bob:" + response.headers["x-request-id"])

    # wait until the cut stream's receipt is written (it settles after the disconnect)
    deadline = time.monotonic() + 10
    while request_id not in {r["request_id"] for r in world.jsonl_rows("requests", world.alice)}:
        assert time.monotonic() < deadline, "the cut stream's receipt never appeared"
        time.sleep(0.05)
    return sc


def _content(line: str) -> str:
    choices = orjson.loads(line[6:]).get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")


def _resolve_cut(sc: Scenario, rows: dict[str, dict[str, Any]]) -> None:
    """Fill in the cut stream's output count (bounded by the scenario) and its charge."""
    for request_id, row in sc.expected.items():
        if "_received" not in row:
            continue
        low, high = row.pop("_received")
        output = rows[request_id]["output_tokens"]
        assert low <= output <= high, (low, output, high)
        charge = expected_charge("routed", row["input_tokens"], output)
        row.update(output_tokens=output, charge=charge)
        row["balance_after"] = _debit(sc, row["user_id"], "routed", charge)


def _ledger_usage(world: World) -> dict[str, tuple[int, int]]:
    """request_id → (entry id, amount) of the usage entries in alice's ledger export."""
    found = {}
    for row in world.jsonl_rows("ledger", world.alice, kind="usage"):
        assert row["cause_type"] == "request"
        found[row["cause_id"]] = (row["entry_id"], nanos(row["amount"]))
    return found


def check_every_documented_column(world: World, scenario: Scenario) -> None:
    documented = doc_columns("requests")
    header, csv_rows = parse_csv(world.export("requests", world.alice))
    assert header == [name for name, _ in documented]
    jsonl = world.jsonl_rows("requests", world.alice)
    assert [r["request_id"] for r in csv_rows] == [r["request_id"] for r in jsonl]
    by_id = {r["request_id"]: r for r in jsonl}
    _resolve_cut(scenario, by_id)
    assert [r["request_id"] for r in jsonl] == [i for i in scenario.order if ":" not in i]

    usage = _ledger_usage(world)
    for request_id, expected in scenario.expected.items():
        if expected["charge"]:
            entry_id, amount = usage[request_id]
            assert amount == -expected["charge"]
            expected["entry_id"] = entry_id
        else:
            assert request_id not in usage
            expected["entry_id"] = None
        assert set(expected) == {name for name, _ in documented}, request_id
    for csv_row in csv_rows:
        request_id = csv_row["request_id"]
        expected = scenario.expected[request_id]
        for name, kind in documented:
            where = f"{request_id}.{name}"
            check_csv_cell(kind, csv_row[name], expected[name], where)
            check_json_value(kind, by_id[request_id][name], expected[name], where)


def check_attempt_details_and_no_secrets(world: World, scenario: Scenario) -> None:
    rows = world.jsonl_rows("requests", world.alice)
    for row in rows:
        details = row["attempt_details"]
        expected = scenario.attempts[row["request_id"]]
        assert [(d["channel"], d["status"], bool(d["error"])) for d in details] == expected
        for d in details:
            assert set(d) == {"channel", "status", "latency_ms", "error"}
            assert d["latency_ms"] >= 0
    up = world.upstream
    forbidden = [str(up.port), up.url, "127.0.0.1", up.api_key or "unset-secret"]
    outputs = {
        f"{name}.{fmt}": world.export(name, world.operator, fmt, admin=True)
        for name in ("requests", "ledger", "usage")
        for fmt in ("csv", "jsonl")
    }
    outputs["mine.jsonl"] = world.export("requests", world.alice, "jsonl")
    for where, raw in outputs.items():
        text = raw.decode()
        for needle in forbidden:
            assert needle not in text, f"{needle!r} leaked into {where}"
    # The audit trail records the operators' channel changes; the secret is never in it.
    audit = world.export("audit", world.operator, "jsonl", admin=True).decode()
    assert up.api_key and up.api_key not in audit


def check_charges_sum_to_the_ledger(world: World, scenario: Scenario) -> None:
    rows = world.jsonl_rows("requests", world.alice)
    _resolve_cut(scenario, {r["request_id"]: r for r in rows})
    for bucket in ("credit", "routed"):
        exported = sum(nanos(r["charge"]) for r in rows if r["bucket"] == bucket)
        expected = sum(e["charge"] for e in scenario.expected.values() if e["bucket"] == bucket)
        ledger_rows = world.jsonl_rows("ledger", world.alice, kind="usage", bucket=bucket)
        ledger_total = -sum(nanos(r["amount"]) for r in ledger_rows)
        with world.client(world.alice) as http:
            statement = http.get("/api/exports/statement", params={"bucket": bucket}).json()
        moves = {m["kind"]: m["nanos"] for m in statement["movements"]}
        assert exported == expected == ledger_total == -moves["usage"] > 0
        assert statement["balanced"] is True
        assert statement["closing_balance"]["nanos"] == TOPUP[bucket] - expected


def check_adjustment_on_its_row(world: World, scenario: Scenario) -> None:
    first = scenario.order[0]
    with world.db.begin() as conn:
        world.ledger.credit(
            world.ledger.tx(conn),
            user_id=world.alice.id,
            bucket="routed",
            amount_nanos=ADJUSTMENT,
            kind="adjustment",
            source="adjust:admin",
            idempotency_key="adjust:test:1",
            lot_kind="adjustment",
            cause_type="request",
            cause_id=first,
            memo=ADJUSTMENT_REASON,
        )
    _, rows = world.csv_rows("requests", world.alice)
    by_id = {r["request_id"]: r for r in rows}
    assert Decimal(by_id[first]["adjustment"]) == money(ADJUSTMENT)
    assert by_id[first]["adjustment_reason"] == ADJUSTMENT_REASON
    assert all(r["adjustment"] == "" for i, r in by_id.items() if i != first)


def check_isolation(world: World, scenario: Scenario) -> None:
    bob_request = next(i for i in scenario.order if i.startswith("bob:"))[4:]
    for name in ("requests", "ledger"):
        for fmt in ("csv", "jsonl"):
            # a user_id parameter is not an option for users: still only their own rows
            raw = world.export(name, world.alice, fmt, user_id=world.bob.id)
            rows = parse_jsonl(raw) if fmt == "jsonl" else parse_csv(raw)[1]
            assert rows and {str(r["user_id"]) for r in rows} == {str(world.alice.id)}
            assert bob_request not in raw.decode()
            assert "bob@example.com" not in raw.decode()
        bob_rows = world.jsonl_rows(name, world.bob)
        assert bob_rows and {r["user_id"] for r in bob_rows} == {world.bob.id}
    everyone = world.jsonl_rows("requests", world.operator, admin=True)
    assert {r["user_id"] for r in everyone} == {world.alice.id, world.bob.id}
    only_bob = world.jsonl_rows("requests", world.operator, admin=True, user_id=world.bob.id)
    assert [r["request_id"] for r in only_bob] == [bob_request]


def check_formulas_and_round_trip(world: World, scenario: Scenario) -> None:
    raw = world.export("requests", world.alice)
    assert b'"\'=HYPERLINK(""http://x"",""y"")"' in raw  # quoted, apostrophe first
    header, rows = parse_csv(raw)
    jsonl = {r["request_id"]: r for r in world.jsonl_rows("requests", world.alice)}
    _resolve_cut(scenario, jsonl)
    kinds = dict(doc_columns("requests"))
    evil = [r for r in rows if r["key_label"].startswith("'=")]
    assert len(evil) == 4
    for row in evil:
        assert row["key_label"] == "'" + world.alice_key.label
        assert row["project"] == "'" + world.alice_key.project
    for row in rows:
        expected = scenario.expected[row["request_id"]]
        for name in header:
            if kinds[name] == "money" and row[name]:
                assert Decimal(row[name]) == money(expected[name]), name
                assert row[name].lstrip("-")[0].isdigit()  # never an apostrophe on money
        # the JSON text is the raw value
        assert jsonl[row["request_id"]]["key_label"] in (world.alice_key.label, "alice plain")


def check_filters(world: World, scenario: Scenario) -> None:
    for filter_name in ("route_type", "status", "model", "project", "bucket"):
        for value in {e[filter_name] for e in scenario.expected.values()}:
            rows = world.jsonl_rows("requests", world.alice, **{filter_name: value})
            expected = [
                i for i in scenario.order if scenario.expected.get(i, {}).get(filter_name) == value
            ]
            assert [r["request_id"] for r in rows] == expected, (filter_name, value)


def check_time_range(world: World, scenario: Scenario) -> None:
    order = [i for i in scenario.order if ":" not in i]
    times = [scenario.expected[i]["created_at"] for i in order]
    iso = [formats.iso(t) for t in times]
    rows = world.jsonl_rows("requests", world.alice, since=iso[1], until=iso[3])
    assert [r["request_id"] for r in rows] == order[1:3]
    key_rows = world.jsonl_rows("requests", world.alice, key_id=world.alice_plain.id)
    assert [r["request_id"] for r in key_rows] == order[4:]


def test_every_column_is_correct_charges_reconcile_and_nothing_leaks(world: World) -> None:
    scenario = run_scenario(world)
    check_every_documented_column(world, scenario)
    check_attempt_details_and_no_secrets(world, scenario)
    check_charges_sum_to_the_ledger(world, scenario)


def test_isolation_formulas_round_trip_filters_and_adjustments(world: World) -> None:
    scenario = run_scenario(world)
    check_isolation(world, scenario)
    check_formulas_and_round_trip(world, scenario)
    check_filters(world, scenario)
    check_time_range(world, scenario)
    check_adjustment_on_its_row(world, scenario)
