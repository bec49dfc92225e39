"""Research assistant runs (issue 8): a run, its billed steps and its progress events.

Money columns are integer nano-units of the run's ``currency`` (the paying bucket's)."""

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, Table, Text

from tallygate.db.base import metadata

research_runs = Table(
    "research_runs",
    metadata,
    Column("id", String(32), primary_key=True),  # "rr_" + 24 hex
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("question", Text, nullable=False),
    Column("model", String(200), nullable=False),  # public model name
    Column("route_type", String(16), nullable=False),
    Column("bucket", String(16), nullable=False),
    Column("currency", String(8), nullable=False),
    Column("budget_nanos", BigInteger, nullable=False),
    Column("estimate_low_nanos", BigInteger, nullable=False),
    Column("estimate_high_nanos", BigInteger, nullable=False),
    # queued | running | done | stopped (at the budget cap) | failed
    Column("status", String(16), nullable=False),
    Column("stop_reason", Text, nullable=False, server_default=""),
    Column("data_source", String(400), nullable=False),
    # The market data as one normalised CSV (date,symbol,open,high,low,close,volume).
    Column("data_csv", Text, nullable=False),
    Column("analysis", Text, nullable=False, server_default=""),
    Column("selfcheck_json", Text, nullable=True),
    # The run's own API key (project "research"), revoked when the run ends.
    Column("key_id", Integer, ForeignKey("api_keys.id"), nullable=True),
    Column("spent_nanos", BigInteger, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger, nullable=True),
)

research_steps = Table(
    "research_steps",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", String(32), ForeignKey("research_runs.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("name", String(64), nullable=False),  # plan | analyse:<SYMBOL> | compare | draft
    Column("status", String(16), nullable=False),  # running | done | failed
    Column("request_id", String(64), nullable=True),  # the receipt's X-Request-Id
    Column("max_tokens", Integer, nullable=False),
    Column("input_tokens", Integer, nullable=False, server_default="0"),
    Column("output_tokens", Integer, nullable=False, server_default="0"),
    Column("charge_nanos", BigInteger, nullable=False, server_default="0"),
    Column("output", Text, nullable=False, server_default=""),
    Column("error", Text, nullable=False, server_default=""),
    Column("started_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger, nullable=True),
)
Index("ix_research_steps_run_seq", research_steps.c.run_id, research_steps.c.seq, unique=True)

research_events = Table(
    "research_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", String(32), ForeignKey("research_runs.id"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("message", Text, nullable=False),
    Column("data_json", Text, nullable=False, server_default="{}"),
)
Index("ix_research_events_run_id", research_events.c.run_id, research_events.c.id)
