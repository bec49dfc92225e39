"""The other exports and surfaces: the wallet ledger, audit and usage columns against
docs/exports.md, operator-only exports refused to users, the statement over HTTP, and the CLI
writing the same bytes as the API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from tests.exports.conftest import (
    BACKUP,
    MODEL,
    PRIMARY,
    TOPUP,
    World,
    expected_charge,
    nanos,
    parse_csv,
    parse_jsonl,
)
from tests.exports.helpers import check_csv_cell, check_json_value, doc_columns, neutral

from tallygate.kit.clock import to_epoch_us


def test_every_export_has_the_documented_columns_in_order(world: World) -> None:
    extras = {"requests": ["attempt_details"], "topups": ["history"]}
    for name in ("requests", "ledger", "topups", "refunds", "redemptions", "audit", "usage"):
        raw = world.export(name, world.operator, "csv", admin=True)
        header, _ = parse_csv(raw)
        assert header == [c for c, _ in doc_columns(name)], name
        assert raw.split(b"\n", 1)[0].endswith(b"\r")  # RFC 4180 line ends
        for line in parse_jsonl(world.export(name, world.operator, "jsonl", admin=True)):
            assert list(line) == [c for c, _ in doc_columns(name)] + extras.get(name, []), name


def test_wallet_ledger_rows_are_the_scenarios_top_ups_and_usage(world: World) -> None:
    documented = doc_columns("ledger")
    start = to_epoch_us(world.clock.now())
    world.clock.advance(5)
    response = world.chat(world.alice_plain)
    assert response.status_code == 200
    usage = world.upstream.last.usage
    assert usage is not None
    charge = expected_charge("routed", usage.prompt_tokens, usage.completion_tokens)
    request_id = response.headers["x-request-id"]
    _, rows = world.csv_rows("ledger", world.alice)
    jsonl = world.jsonl_rows("ledger", world.alice)
    assert [r["posting_id"] for r in jsonl] == [int(r["posting_id"]) for r in rows]
    expected: list[dict[str, Any]] = []
    for bucket, amount in TOPUP.items():
        expected.append(
            {
                "created_at": start,
                "user_id": world.alice.id,
                "kind": "topup",
                "bucket": bucket,
                "account": "bucket",
                "amount": amount,
                "currency": {"credit": "USD", "routed": "CNY"}[bucket],
                "balance_after": amount,
                "cause_type": "order",
                "cause_id": None,
                "memo": "sandbox top-up",
            }
        )
    expected.append(
        {
            "created_at": start + 5_000_000,
            "user_id": world.alice.id,
            "kind": "usage",
            "bucket": "routed",
            "account": "bucket",
            "amount": -charge,
            "currency": "CNY",
            "balance_after": TOPUP["routed"] - charge,
            "cause_type": "request",
            "cause_id": request_id,
            "memo": MODEL,
        }
    )
    assert len(rows) == len(expected)
    for csv_row, json_row, want in zip(rows, jsonl, expected, strict=True):
        assert json_row["lot_id"] is not None and int(csv_row["lot_id"]) == json_row["lot_id"]
        assert json_row["entry_id"] >= 1 and json_row["posting_id"] >= 1
        for name, kind in documented:
            if name in want:
                where = f"{want['kind']}.{name}"
                cell = want[name] if want[name] is not None else ""
                check_csv_cell(kind, csv_row[name], cell if kind == "text" else want[name], where)
                check_json_value(kind, json_row[name], want[name], where)
    # the usage entry's lot is the top-up's lot (the one it drew from)
    assert jsonl[2]["lot_id"] == jsonl[1]["lot_id"]
    only_usage = world.jsonl_rows("ledger", world.alice, kind="usage")
    assert [r["posting_id"] for r in only_usage] == [jsonl[2]["posting_id"]]
    credit_only = world.jsonl_rows("ledger", world.alice, bucket="credit")
    assert [r["posting_id"] for r in credit_only] == [jsonl[0]["posting_id"]]


def test_usage_report_groups_by_model_route_channel_and_project(world: World) -> None:
    up, alice, bob = world.upstream, world.alice_key, world.bob_key
    charges: dict[tuple[str, str], list[int]] = defaultdict(list)

    def ok(key: Any, channel: str) -> None:
        assert world.chat(key).status_code == 200
        usage = up.last.usage
        assert usage is not None
        charge = expected_charge("routed", usage.prompt_tokens, usage.completion_tokens)
        charges[(channel, key.project)].append(charge)
        tokens[(channel, key.project)][0] += usage.prompt_tokens
        tokens[(channel, key.project)][1] += usage.completion_tokens

    tokens: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    ok(alice, PRIMARY)
    ok(alice, PRIMARY)
    up.fault("http_500", times=1)
    ok(alice, BACKUP)
    up.fault("http_500", times=2)
    assert world.chat(alice).status_code == 502
    ok(bob, PRIMARY)
    _, rows = world.csv_rows("usage", world.operator, admin=True)
    got = {(r["channel"], r["project"]): r for r in rows}
    assert len(rows) == 4
    for r in rows:
        assert (r["model"], r["route_type"], r["currency"]) == (MODEL, "routed", "CNY")
    failed = got[("", neutral(alice.project))]
    assert (failed["requests"], failed["succeeded"], failed["failed"]) == ("1", "0", "1")
    assert nanos(failed["charge"]) == 0
    for group, amounts in charges.items():
        row = got[(group[0], neutral(group[1]))]
        assert (int(row["requests"]), int(row["succeeded"]), int(row["failed"])) == (
            len(amounts),
            len(amounts),
            0,
        )
        assert nanos(row["charge"]) == sum(amounts)
        assert [int(row["input_tokens"]), int(row["output_tokens"])] == tokens[group]
    only_bob = world.jsonl_rows("usage", world.operator, admin=True, user_id=world.bob.id)
    assert [(r["channel"], r["project"], r["requests"]) for r in only_bob] == [
        (PRIMARY, bob.project, 1)
    ]


def test_operator_only_exports_refuse_users(world: World) -> None:
    with world.client(world.alice) as http:
        for name in ("audit", "usage"):
            assert http.get(f"/admin/api/exports/{name}").status_code == 403
            mine = http.get(f"/api/exports/{name}")
            assert mine.status_code == 403, mine.text
        for name in ("requests", "ledger", "statement?user_id=1&bucket=credit"):
            assert http.get(f"/admin/api/exports/{name}").status_code == 403
        assert http.get("/api/exports/nope").status_code == 400
        assert http.get("/api/exports/ledger", params={"format": "xlsx"}).status_code == 422
    with httpx.Client(base_url=world.base_url) as anonymous:
        assert anonymous.get("/api/exports/requests").status_code == 401
    with world.client(world.operator) as http:
        assert http.get("/admin/api/exports/audit").status_code == 200


def test_statement_over_http_with_its_rows_from_one_snapshot(world: World) -> None:
    assert world.chat(world.alice_key).status_code == 200
    world.clock.advance(10)
    boundary = world.clock.now()
    assert world.chat(world.alice_key).status_code == 200
    with world.client(world.alice) as http:
        whole = http.get(
            "/api/exports/statement", params={"bucket": "routed", "rows": "true"}
        ).json()
        later = http.get(
            "/api/exports/statement",
            params={"bucket": "routed", "rows": "true", "since": boundary.isoformat()},
        ).json()
    with world.client(world.operator) as http:
        as_operator = http.get(
            "/admin/api/exports/statement",
            params={"user_id": world.alice.id, "bucket": "routed", "rows": "true"},
        ).json()
    assert as_operator == whole
    for result in (whole, later):
        assert result["balanced"] is True
        total = sum(nanos(r["amount"]) for r in result["rows"] if r["account"] == "bucket")
        assert result["opening_balance"]["nanos"] + total == result["closing_balance"]["nanos"]
    assert [m["kind"] for m in whole["movements"]] == ["topup", "usage"]
    assert len(whole["rows"]) == 3 and len(later["rows"]) == 1
    assert later["opening_balance"]["nanos"] == nanos(whole["rows"][1]["balance_after"])
    assert whole["closing_balance"]["nanos"] == later["closing_balance"]["nanos"]


def test_the_cli_export_writes_the_same_bytes_as_the_api(world: World, tmp_path: Path) -> None:
    assert world.chat(world.alice_key).status_code == 200
    world.upstream.fault("http_500", times=2)
    assert world.chat(world.bob_key).status_code == 502
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    env.update(
        TALLYGATE_DATABASE_URL=world.db.url,
        TALLYGATE_CREDIT_CURRENCY="USD",
        TALLYGATE_ROUTED_CURRENCY="CNY",
        TALLYGATE_LOG_LEVEL="WARNING",
    )
    cases: list[tuple[str, list[str], bytes]] = [
        (fmt, args, api)
        for fmt in ("csv", "jsonl")
        for args, api in (
            (["requests"], world.export("requests", world.operator, fmt, admin=True)),
            (
                ["ledger", "--user-id", str(world.alice.id)],
                world.export("ledger", world.alice, fmt),
            ),
            (["usage"], world.export("usage", world.operator, fmt, admin=True)),
            (["topups"], world.export("topups", world.operator, fmt, admin=True)),
            (["refunds"], world.export("refunds", world.operator, fmt, admin=True)),
            (["redemptions"], world.export("redemptions", world.operator, fmt, admin=True)),
        )
    ]
    for fmt, args, api_bytes in cases:
        out = tmp_path / f"{args[0]}.{fmt}"
        run = subprocess.run(
            [sys.executable, "-m", "tallygate", "export", *args, "--format", fmt, "-o", str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        assert "done" in run.stderr
        assert out.read_bytes() == api_bytes, args
