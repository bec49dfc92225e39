"""PostgreSQL: the hold functions run fewer statements, and the hot rows' enumeration checks are
written as one array constant.

Same signatures, same contract, same rows written as migration 0004's functions. What changes is
what PostgreSQL executes per request, because on this machine its backend CPU is what bounds the
gateway's throughput (decision 0022): every statement inside a PL/pgSQL function pays executor
start-up, and every UPDATE of a row re-reads and re-plans all CHECK constraints of its table.

- ``tg_place_hold``: the account's bucket is looked up inside the key-limit UPDATE (and returned
  by it) instead of by a SELECT of its own.
- ``tg_settle_hold``: the account UPDATE comes first and returns the bucket (no SELECT); the
  entry and all its postings are one statement (the revenue and overrun-loss accounts are
  scalar subqueries: a missing one is still a NOT NULL violation, never a silently unbalanced
  entry).
- The enumeration CHECKs of accounts, holds, lots and key_spend say the same thing as
  ``x = ANY ('{…}'::text[])`` — one constant instead of one per value, each with a cast — and
  are re-added NOT VALID, then validated (no long lock on a big table).

SQLite is untouched (it runs the Python path of ledger/holds.py and checks are cheap there).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 00:40:00
"""

from collections.abc import Sequence
from importlib import import_module

from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, constraint, compact expression, expression it replaces)
CHECKS = [
    (
        "accounts",
        "ck_accounts_kind",
        "kind::text = ANY ('{bucket,debt,platform}'::text[])",
        "kind IN ('bucket', 'debt', 'platform')",
    ),
    ("accounts", "ck_accounts_normal", "normal = ANY ('{1,-1}'::int[])", "normal IN (1, -1)"),
    (
        "holds",
        "ck_holds_status",
        "status::text = ANY ('{pending,settled,released,expired}'::text[])",
        "status IN ('pending', 'settled', 'released', 'expired')",
    ),
    (
        "lots",
        "ck_lots_kind",
        "kind::text = ANY ('{paid,promo,adjustment}'::text[])",
        "kind IN ('paid', 'promo', 'adjustment')",
    ),
    (
        "key_spend",
        "ck_key_spend_bucket",
        "bucket::text = ANY ('{credit,routed}'::text[])",
        "bucket IN ('credit', 'routed')",
    ),
]

FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION tg_place_hold(
    p_account bigint, p_debt bigint, p_key text, p_amount bigint, p_now bigint,
    p_expires bigint, p_cause_type text, p_cause_id text, p_key_id bigint, p_day int,
    OUT outcome text, OUT a bigint, OUT b bigint, OUT c text, OUT d bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_left bigint := p_amount;
    v_take bigint;
    v_ids bigint[] := '{}';
    v_takes bigint[] := '{}';
    v_marks text := '';
    v_id bigint;
    r record;
    i int;
    v_bucket text;
BEGIN
    -- Same contract as the Python path (ledger/holds.py, ledger/key_spend.py).
    IF p_key_id IS NOT NULL THEN
        UPDATE key_spend SET total_reserved_nanos = total_reserved_nanos + p_amount,
               day_spent_nanos = CASE WHEN day = p_day THEN day_spent_nanos ELSE 0 END,
               day_reserved_nanos = CASE WHEN day = p_day THEN day_reserved_nanos ELSE 0 END
                                    + p_amount,
               day = p_day
         WHERE key_id = p_key_id
           AND bucket = (SELECT x.bucket FROM accounts x WHERE x.id = p_account)
           AND (limit_total_nanos IS NULL
                OR total_spent_nanos + total_reserved_nanos + p_amount <= limit_total_nanos)
           AND (limit_daily_nanos IS NULL
                OR (CASE WHEN day = p_day THEN day_spent_nanos + day_reserved_nanos ELSE 0 END)
                   + p_amount <= limit_daily_nanos)
           AND EXISTS (SELECT 1 FROM api_keys k WHERE k.id = p_key_id AND k.revoked_at IS NULL
                       AND (k.expires_at IS NULL OR k.expires_at > p_now))
        RETURNING bucket INTO v_bucket;
        IF NOT FOUND THEN outcome := 'key_refused'; RETURN; END IF;
    END IF;
    UPDATE accounts SET held_nanos = held_nanos + p_amount
     WHERE id = p_account AND balance_nanos - held_nanos >= p_amount
       AND NOT EXISTS (SELECT 1 FROM accounts dd WHERE dd.id = p_debt AND dd.balance_nanos > 0);
    IF NOT FOUND THEN
        IF p_key_id IS NOT NULL THEN
            UPDATE key_spend SET total_reserved_nanos = total_reserved_nanos - p_amount,
                   day_reserved_nanos = day_reserved_nanos - p_amount
             WHERE key_id = p_key_id AND bucket = v_bucket;
        END IF;
        SELECT h.account_id, h.amount_nanos, h.status, h.expires_at INTO a, b, c, d
          FROM holds h WHERE h.hold_key = p_key;
        IF FOUND THEN outcome := 'replay'; RETURN; END IF;
        SELECT x.balance_nanos, x.held_nanos INTO a, b FROM accounts x WHERE x.id = p_account;
        SELECT x.balance_nanos INTO d FROM accounts x WHERE x.id = p_debt;
        outcome := 'refused'; RETURN;
    END IF;
    FOR r IN SELECT l.id, l.remaining_nanos - l.earmarked_nanos AS free FROM lots l
              WHERE l.account_id = p_account AND l.remaining_nanos > 0
                AND l.remaining_nanos > l.earmarked_nanos
              ORDER BY l.priority, (l.expires_at IS NULL), l.expires_at,
                       (CASE WHEN l.kind = 'promo' THEN 0 ELSE 1 END), l.id LOOP
        EXIT WHEN v_left <= 0;
        v_take := LEAST(r.free, v_left);
        v_ids := v_ids || r.id;
        v_takes := v_takes || v_take;
        v_marks := v_marks || CASE WHEN v_marks = '' THEN '' ELSE ',' END || r.id || ':' || v_take;
        v_left := v_left - v_take;
    END LOOP;
    INSERT INTO holds (hold_key, account_id, amount_nanos, status, earmarks, created_at,
                       expires_at, cause_type, cause_id, key_id, spend_day)
    VALUES (p_key, p_account, p_amount, 'pending', v_marks, p_now, p_expires,
            p_cause_type, p_cause_id, p_key_id, p_day)
    ON CONFLICT (hold_key) DO NOTHING RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        UPDATE accounts SET held_nanos = held_nanos - p_amount WHERE id = p_account;
        IF p_key_id IS NOT NULL THEN
            UPDATE key_spend SET total_reserved_nanos = total_reserved_nanos - p_amount,
                   day_reserved_nanos = day_reserved_nanos - p_amount
             WHERE key_id = p_key_id AND bucket = v_bucket;
        END IF;
        SELECT h.account_id, h.amount_nanos, h.status, h.expires_at INTO a, b, c, d
          FROM holds h WHERE h.hold_key = p_key;
        outcome := 'replay'; RETURN;
    END IF;
    FOR i IN 1 .. coalesce(array_length(v_ids, 1), 0) LOOP
        UPDATE lots SET earmarked_nanos = earmarked_nanos + v_takes[i] WHERE id = v_ids[i];
    END LOOP;
    outcome := 'ok'; a := v_id; c := v_marks;
END $$;

CREATE OR REPLACE FUNCTION tg_settle_hold(
    p_key text, p_actual bigint, p_now bigint, p_kind text, p_revenue text,
    p_cause_type text, p_cause_id text, p_memo text,
    OUT outcome text, OUT charged bigint, OUT overrun bigint, OUT released bigint,
    OUT o_entry bigint, OUT balance_after bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_account bigint;
    v_amount bigint;
    v_marks text;
    v_bucket text;
    v_currency text;
    v_left bigint;
    v_running bigint;
    v_draw bigint;
    v_lot bigint;
    v_reserved bigint;
    v_pair text;
    v_lots bigint[] := '{}';
    v_draws bigint[] := '{}';
    v_afters bigint[] := '{}';
    v_key bigint;
    v_day int;
BEGIN
    UPDATE holds SET status = 'settled', resolved_at = p_now,
           settled_nanos = LEAST(p_actual, amount_nanos),
           overrun_nanos = GREATEST(p_actual - amount_nanos, 0)
     WHERE hold_key = p_key AND status = 'pending'
    RETURNING account_id, amount_nanos, earmarks, settled_nanos, overrun_nanos, key_id, spend_day
         INTO v_account, v_amount, v_marks, charged, overrun, v_key, v_day;
    IF NOT FOUND THEN outcome := 'not_pending'; RETURN; END IF;
    released := v_amount - charged;
    UPDATE accounts SET balance_nanos = balance_nanos - charged, held_nanos = held_nanos - v_amount
     WHERE id = v_account RETURNING balance_nanos, bucket, currency
          INTO balance_after, v_bucket, v_currency;
    IF v_key IS NOT NULL THEN
        UPDATE key_spend SET total_reserved_nanos = total_reserved_nanos - v_amount,
               total_spent_nanos = total_spent_nanos + charged,
               day_reserved_nanos = CASE WHEN day = v_day THEN day_reserved_nanos - v_amount
                                         ELSE day_reserved_nanos END,
               day_spent_nanos = CASE WHEN day = v_day THEN day_spent_nanos + charged
                                      ELSE day_spent_nanos END
         WHERE key_id = v_key AND bucket = v_bucket;
    END IF;
    v_left := charged;
    v_running := balance_after + charged;
    IF v_marks <> '' THEN
        FOREACH v_pair IN ARRAY string_to_array(v_marks, ',') LOOP
            v_lot := split_part(v_pair, ':', 1)::bigint;
            v_reserved := split_part(v_pair, ':', 2)::bigint;
            v_draw := LEAST(v_reserved, v_left);
            v_left := v_left - v_draw;
            UPDATE lots SET remaining_nanos = remaining_nanos - v_draw,
                   earmarked_nanos = earmarked_nanos - v_reserved WHERE id = v_lot;
            IF v_draw > 0 THEN
                v_running := v_running - v_draw;
                v_lots := v_lots || v_lot;
                v_draws := v_draws || v_draw;
                v_afters := v_afters || v_running;
            END IF;
        END LOOP;
    END IF;
    IF charged > 0 OR overrun > 0 THEN
        -- The entry and its postings in one statement, postings in the order the Python path
        -- writes them: the user's lots, then revenue, then the overrun loss.
        WITH e AS (
            INSERT INTO entries (kind, idempotency_key, request_json, cause_type, cause_id,
                                 memo, created_at)
            VALUES (p_kind, 'settle:' || p_key, NULL, coalesce(p_cause_type, 'hold'),
                    coalesce(p_cause_id, p_key), p_memo, p_now)
            RETURNING id
        ), p AS (
            INSERT INTO postings (entry_id, account_id, amount_nanos, currency, lot_id,
                                  balance_after_nanos)
            SELECT e.id, x.account, x.amount, v_currency, x.lot, x.after
              FROM e, (
                SELECT u.n AS k, v_account AS account, -u.draw AS amount, u.lot AS lot,
                       u.after AS after
                  FROM unnest(v_lots, v_draws, v_afters) WITH ORDINALITY AS u(lot, draw, after, n)
                UNION ALL
                SELECT 9223372036854775806,
                       (SELECT r.id FROM accounts r WHERE r.code = p_revenue || ':' || v_bucket),
                       charged + overrun, NULL::bigint, NULL::bigint
                UNION ALL
                SELECT 9223372036854775807,
                       (SELECT l.id FROM accounts l WHERE l.code = 'loss:overrun:' || v_bucket),
                       -overrun, NULL::bigint, NULL::bigint
                 WHERE overrun > 0
              ) x
             ORDER BY x.k
        )
        SELECT e.id INTO o_entry FROM e;
    END IF;
    outcome := 'ok';
END $$;
"""


def _checks(new: bool) -> None:
    for table, name, compact, original in CHECKS:
        expression = compact if new else original
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({expression}) NOT VALID")
        op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTIONS)
        _checks(new=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _checks(new=False)
        previous = import_module(
            "tallygate.migrations.versions.2026-11-23-1940_hold_functions_with_key_limits"
        )
        op.execute(previous.FUNCTIONS)
