"""The ``tallygate`` command: serve, migrate, create-admin, create-user, reconcile.

Every expected failure prints one readable line to stderr and exits 1 — never a traceback."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import psycopg
import typer
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from tallygate.config import Settings, get_settings
from tallygate.db.engine import Database
from tallygate.errors import TallygateError
from tallygate.kit.clock import SystemClock, to_epoch_us
from tallygate.ledger import Ledger

if TYPE_CHECKING:
    from tallygate.users.service import User

app = typer.Typer(
    name="tallygate",
    help="Tallygate: an OpenAI-compatible AI gateway whose wallet is an exact ledger.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")


class CommandFailed(Exception):
    """A readable, expected failure of a command (exit code 1)."""


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


# The ledger talks to the raw driver, so its failures arrive as DB-API errors.
DatabaseErrors = (SQLAlchemyError, sqlite3.Error, psycopg.Error)


def _database_problem(exc: Exception) -> str:
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    lowered = detail.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return f"the database is not migrated ({detail}): run `tallygate migrate` first"
    return f"database error: {detail}"


def guarded(fn: Callable[[], T]) -> T:
    """Run a command body, turning expected failures into one line on stderr and exit 1."""
    try:
        return fn()
    except TallygateError as exc:
        raise fail(exc.message) from None
    except CommandFailed as exc:
        raise fail(str(exc)) from None
    except DatabaseErrors as exc:
        raise fail(_database_problem(exc)) from None


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _ledger(settings: Settings) -> Ledger:
    return Ledger(
        {"credit": settings.credit_currency, "routed": settings.routed_currency},
        hold_ttl_seconds=settings.hold_ttl_seconds,
        hold_grace_seconds=settings.hold_grace_seconds,
    )


@contextmanager
def _database(settings: Settings) -> Iterator[Database]:
    db = Database(settings.database_url)
    try:
        yield db
    finally:
        db.dispose()


@contextmanager
def _snapshot(db: Database) -> Iterator[Connection]:
    """A read transaction that sees one consistent snapshot across all its statements
    (SQLite: any read transaction; PostgreSQL: REPEATABLE READ)."""
    if db.sqlite:
        with db.read() as conn:
            yield conn
        return
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: settings)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings)")] = None,
    no_migrate: Annotated[
        bool, typer.Option("--no-migrate", help="Do not apply migrations before starting")
    ] = False,
    allow_sandbox: Annotated[
        bool,
        typer.Option(
            "--allow-sandbox",
            help="Serve with the test-mode sandbox payment provider (TALLYGATE_PAYMENTS_SANDBOX)",
        ),
    ] = False,
) -> None:
    """Apply migrations (under a lock), then serve the API with uvicorn."""
    import uvicorn

    from tallygate.app import create_app
    from tallygate.db.migrate import upgrade
    from tallygate.observability.logging import configure_logging

    settings = get_settings()
    configure_logging(settings)
    if settings.payments_sandbox and not allow_sandbox:
        typer.echo(
            "refusing to serve: TALLYGATE_PAYMENTS_SANDBOX is on, so anyone could credit a "
            "balance through the test-mode checkout. Pass --allow-sandbox to serve it anyway.",
            err=True,
        )
        raise typer.Exit(2)
    if settings.payments_sandbox:
        typer.echo(
            "*** TEST MODE: the sandbox payment provider is enabled; sandbox top-ups are "
            "marked test_mode everywhere ***",
            err=True,
        )
    if not no_migrate:
        guarded(lambda: upgrade(settings.database_url))
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        # Only configured proxies may set the client address (X-Forwarded-For).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
    )


@app.command()
def demo(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: settings)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings)")] = None,
) -> None:
    """Start Tallygate ready to try: migrate, seed a demo user with a small balance in both
    buckets, two models and channels to a built-in demo upstream, print an API key, serve."""
    import uvicorn

    from tallygate.app import create_app
    from tallygate.db.migrate import upgrade
    from tallygate.demo.seed import Demo, local_url, seed
    from tallygate.observability.logging import configure_logging

    settings = get_settings().model_copy(update={"demo_upstream": True, "payments_sandbox": True})
    configure_logging(settings)
    bind_host, bind_port = host or settings.host, port or settings.port
    base_url = f"http://{bind_host}:{bind_port}"
    guarded(lambda: upgrade(settings.database_url))

    def run_seed() -> Demo:
        with _database(settings) as db, db.begin() as conn:
            return seed(
                conn,
                _ledger(settings),
                settings,
                base_url=base_url,
                now_us=to_epoch_us(SystemClock().now()),
                fixed_key=settings.demo_key or None,
            )

    made = guarded(run_seed)
    listening = base_url
    base_url = local_url(base_url)  # a wildcard bind is printed as the loopback address
    if listening != base_url:
        typer.echo(f"listening on {listening} (every interface)")
    typer.echo(
        f"""
Tallygate demo is running at {base_url}

  OpenAI base URL : {base_url}/v1
  API key         : {made.api_key}  (demo user {made.email}, password {made.password})
  Models          : gpt-4o-mini (official route, paid from Credit)
                    qwen-turbo  (routed route, paid from Routed balance)
  Wallet          : $2.00 Credit and ¥10.00 Routed balance (starter credit)
  Top-ups         : TEST MODE sandbox checkout (POST /api/payments/orders, provider "sandbox")

  Try it:  curl {base_url}/v1/models -H "Authorization: Bearer {made.api_key}"
"""
    )
    uvicorn.run(
        create_app(settings),
        host=bind_host,
        port=bind_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        proxy_headers=False,
    )


@app.command()
def migrate() -> None:
    """Apply every pending database migration (safe to run from several processes at once)."""
    from tallygate.db.migrate import upgrade

    settings = get_settings()
    guarded(lambda: upgrade(settings.database_url))
    typer.echo(f"migrated {_safe_url(settings.database_url)} to the latest schema")


def _create(email: str, password: str, role: str, display_name: str) -> None:
    from tallygate.users import service as users

    settings = get_settings()

    def run() -> None:
        with _database(settings) as db, db.begin() as conn:
            ledger = _ledger(settings)
            ledger.bootstrap(ledger.tx(conn))
            user = users.create_user(
                conn,
                ledger,
                email=email,
                password=password,
                role=role,
                display_name=display_name,
                now_us=to_epoch_us(SystemClock().now()),
                actor="cli",
                source="cli",
            )
            factor = None
            if role == "operator":
                factor = _new_second_factor(conn, user, settings.secret_key)
        typer.echo(f"created {user.role} {user.email} (id {user.id})")
        if factor is not None:
            _print_second_factor(user.email, *factor)

    guarded(run)


def _new_second_factor(conn: Connection, user: User, secret_key: str) -> tuple[str, list[str]]:
    """A new TOTP secret and ten recovery codes for an operator (both audited), replacing any
    earlier ones."""
    from tallygate.users import recovery, totp
    from tallygate.users import service as users

    now_us = to_epoch_us(SystemClock().now())
    secret = totp.new_secret()
    users.set_totp_secret(
        conn, user, secret_key=secret_key, secret=secret, now_us=now_us, actor="cli"
    )
    codes = recovery.issue(
        conn, user, secret_key=secret_key, now_us=now_us, actor="cli", source="cli"
    )
    return secret, codes


def _print_second_factor(email: str, secret: str, codes: list[str]) -> None:
    from tallygate.users import totp

    typer.echo(
        "second factor (shown once): add it to an authenticator app, which then "
        "shows the 6-digit code asked for after the password"
    )
    typer.echo(f"  secret: {secret}")
    typer.echo(f"  otpauth URI: {totp.provisioning_uri(secret, email)}")
    typer.echo(
        "recovery codes (shown once; each signs in once without the app, then asks for a new "
        "one): keep them offline"
    )
    for code in codes:
        typer.echo(f"  {code}")


EmailOption = Annotated[str, typer.Option(prompt=True, help="Login email")]
PasswordOption = Annotated[
    str,
    typer.Option(
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        help="Password (at least 10 characters); prompted without echo when omitted",
    ),
]
NameOption = Annotated[str, typer.Option(help="Display name")]


@app.command("create-admin")
def create_admin(
    email: EmailOption, password: PasswordOption, display_name: NameOption = ""
) -> None:
    """Create an operator (recorded in the audit trail) and print its second-factor (TOTP)
    secret and otpauth:// URI once."""
    _create(email, password, "operator", display_name)


@app.command("create-user")
def create_user(
    email: EmailOption, password: PasswordOption, display_name: NameOption = ""
) -> None:
    """Create a user with empty Credit and Routed balance buckets."""
    _create(email, password, "user", display_name)


@app.command("reset-totp")
def reset_totp(email: EmailOption) -> None:
    """Give an operator who lost their authenticator app and recovery codes a new second factor:
    prints a new TOTP secret and new recovery codes once; the old ones stop working (audited)."""
    from tallygate.users import repository as users_repo
    from tallygate.users import service as users

    settings = get_settings()

    def run() -> None:
        with _database(settings) as db, db.begin() as conn:
            row = users_repo.user_by_email(conn, users.normalize_email(email))
            if row is None:
                raise CommandFailed(f"no user with the email {email}")
            user = users.get_user(conn, int(row["id"]))
            if not user.is_operator:
                raise CommandFailed(
                    f"{user.email} is not an operator: only operators have a second factor"
                )
            factor = _new_second_factor(conn, user, settings.secret_key)
        typer.echo(f"reset the second factor of operator {user.email} (id {user.id})")
        _print_second_factor(user.email, *factor)

    guarded(run)


@app.command()
def reconcile() -> None:
    """Prove that every cached balance equals its postings; exit 1 if anything differs."""
    from tallygate.ledger.reconcile import reconcile as run_reconcile

    settings = get_settings()

    def run() -> bool:
        with _database(settings) as db, _snapshot(db) as conn:
            ledger = _ledger(settings)
            report = run_reconcile(
                ledger.tx(conn), now_us=ledger.now_us(), grace_us=ledger.hold_grace_us
            )
        for line in report.lines():
            typer.echo(line)
        return report.ok

    if not guarded(run):
        raise typer.Exit(1)


@app.command()
def export(
    name: Annotated[
        str,
        typer.Argument(
            help="requests, ledger, topups, refunds, redemptions, audit, usage or statement"
        ),
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="file to write ('-' = stdout)")] = "-",
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl")] = "csv",
    user_id: Annotated[int | None, typer.Option(help="only this user's rows")] = None,
    bucket: Annotated[str | None, typer.Option(help="credit or routed")] = None,
    since: Annotated[str | None, typer.Option(help="inclusive start, ISO 8601 UTC")] = None,
    until: Annotated[str | None, typer.Option(help="exclusive end, ISO 8601 UTC")] = None,
    project: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="ledger entry kind; top-ups: provider; refunds: source; code|starter"),
    ] = None,
) -> None:
    """Export as CSV or JSON Lines from one database snapshot, streaming (flat memory), with a
    progress line on stderr. `statement` needs --user-id and --bucket and prints JSON."""
    import datetime as dt

    import orjson

    from tallygate.exports import service
    from tallygate.exports.queries import Filters

    settings = get_settings()

    def when(text: str | None) -> int | None:
        if text is None:
            return None
        try:
            return service.to_us(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            raise CommandFailed(f"not an ISO 8601 time: {text!r}") from None

    def run() -> None:
        with _database(settings) as db:
            if name == "statement":
                if user_id is None or bucket is None:
                    raise CommandFailed("statement needs --user-id and --bucket")
                result = service.statement_with_rows(
                    db,
                    user_id=user_id,
                    bucket=bucket,
                    since_us=when(since),
                    until_us=when(until),
                    rows=False,
                )
                typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
                return
            service.check(name, fmt, service.OPERATOR_EXPORTS)
            filters = Filters(
                since_us=when(since),
                until_us=when(until),
                user_id=user_id,
                bucket=bucket,
                project=project,
                model=model,
                status=status,
                kind=kind,
            )
            target = sys.stdout.buffer if out == "-" else open(out, "wb")  # noqa: SIM115
            written = 0
            try:
                for chunk in service.stream(db, name, fmt, filters):
                    target.write(chunk)
                    written += chunk.count(b"\n")
                    sys.stderr.write(f"\rexported {written:,} lines")
                    sys.stderr.flush()
            finally:
                if target is not sys.stdout.buffer:
                    target.close()
            sys.stderr.write(f"\rexported {written:,} lines — done\n")

    guarded(run)


@app.command()
def research(
    question: Annotated[str, typer.Argument(help="the research question")],
    model: Annotated[str, typer.Option(help="model, or model:route_type")],
    budget: Annotated[str, typer.Option(help="budget cap in the paying bucket's currency")],
    server: Annotated[str, typer.Option(envvar="TALLYGATE_SERVER")] = "http://127.0.0.1:8000",
    token: Annotated[
        str,
        typer.Option(envvar="TALLYGATE_TOKEN", help="an API key (tg-…) or a session token"),
    ] = "",
    route_type: Annotated[str | None, typer.Option(help="official or routed")] = None,
    sample: Annotated[str | None, typer.Option(help="a shipped sample data set")] = None,
    csv: Annotated[list[Path] | None, typer.Option(help="a CSV file (repeatable)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="report file: .md or .html")] = Path(
        "research-report.md"
    ),
) -> None:
    """Start a research run on a server, follow its progress and save its report."""
    from tallygate.research.cli import ResearchCliError
    from tallygate.research.cli import run as run_research

    if not token:
        raise fail("an API key or session token is needed: --token or TALLYGATE_TOKEN")
    try:
        result = run_research(
            server=server,
            token=token,
            question=question,
            model=model,
            route_type=route_type,
            budget=budget,
            sample=sample,
            csv_files=csv or [],
            out=out,
            echo=typer.echo,
        )
    except ResearchCliError as exc:
        raise fail(str(exc)) from None
    if result["status"] == "failed":
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
