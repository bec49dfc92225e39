"""State that several gateway processes must share — per-key rate limits and route health with
its circuit breaker — kept in Redis when ``TALLYGATE_REDIS_URL`` is set (DESIGN.md §6).

Without Redis (the default: ``tallygate demo`` needs nothing) each process keeps its own state,
as :class:`~tallygate.gateway.ratelimit.RateLimiter` and
:class:`~tallygate.routing.health.HealthBoard` do. With Redis:

* a rate-limit check is one Lua script over sliding one-minute logs (a sorted set of requests
  and one of token reservations with their running total), atomic in Redis, so the limit is
  exact across every process;
* route health is a state hash (closed / open / half-open, when it opened, the probe in flight,
  consecutive failures, last error) and two sorted sets of samples (all, failures) inside the
  rolling window. Recording an outcome and opening the circuit is one script; asking whether a
  request may use a route (and claiming the single half-open probe) is another, for every
  candidate channel in one round trip. One process's failures open the circuit for all.

Times come from the process's injectable clock (integer microseconds), never from Redis, so the
tests move time instead of sleeping. Redis is never allowed to fail a request: when a call
fails, a warning is logged, this process falls back to its local state, and Redis is tried
again after ``redis_retry_seconds``. Route health is recorded locally too, so the fallback
starts from what this process saw."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio as aredis

from tallygate.gateway.ratelimit import RateLimiter, Verdict, verdict
from tallygate.kit.clock import Clock, to_epoch_us
from tallygate.routing.health import CLOSED, HealthBoard, RouteHealth, summarize

logger = logging.getLogger(__name__)

T = TypeVar("T")
US = 1_000_000
REDIS_ERRORS = (redis.RedisError, OSError)

_RATE_LIMIT = """
local now = tonumber(ARGV[1])
local floor = now - tonumber(ARGV[2])
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local tokens = tonumber(ARGV[5])
local member = ARGV[6]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', floor)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', floor)
if #expired > 0 then
  local gone = 0
  for _, m in ipairs(expired) do gone = gone + tonumber(string.match(m, ':(%d+)$')) end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', floor)
  redis.call('DECRBY', KEYS[3], gone)
end
local nreq = redis.call('ZCARD', KEYS[1])
local ntok = redis.call('ZCARD', KEYS[2])
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
local oldest_req = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] or ''
local oldest_tok = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2] or ''
local allowed = 1
if rpm >= 0 and nreq >= rpm then
  allowed = 0
elseif tpm >= 0 and used + tokens > tpm and ntok > 0 then
  allowed = 0
end
if allowed == 1 then
  local ttl = math.floor(tonumber(ARGV[2]) / 1000) + 1000
  if rpm >= 0 then
    redis.call('ZADD', KEYS[1], now, member)
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
  if tpm >= 0 then
    redis.call('ZADD', KEYS[2], now, member .. ':' .. tokens)
    redis.call('INCRBY', KEYS[3], tokens)
    redis.call('PEXPIRE', KEYS[2], ttl)
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
end
return {allowed, nreq, used, oldest_req, oldest_tok}
"""

_AVAILABLE = """
local now = tonumber(ARGV[1])
local cool = tonumber(ARGV[2])
local probe_timeout = tonumber(ARGV[3])
local out = {}
for i, key in ipairs(KEYS) do
  local st = redis.call('HMGET', key, 'state', 'opened_at', 'probe_at')
  local ok = 1
  if st[1] == 'open' then
    if now - tonumber(st[2]) >= cool then
      redis.call('HSET', key, 'state', 'half_open', 'probe_at', now)
    else
      ok = 0
    end
  elseif st[1] == 'half_open' then
    local probe_at = tonumber(st[3] or '0')
    if probe_at == 0 or now - probe_at >= probe_timeout then
      redis.call('HSET', key, 'probe_at', now)
    else
      ok = 0
    end
  end
  out[i] = ok
end
return out
"""

_RECORD = """
local now = tonumber(ARGV[1])
local ok = ARGV[2] == '1'
local floor = now - tonumber(ARGV[4])
local member = ARGV[7]
local ttl = tonumber(ARGV[9])
redis.call('ZADD', KEYS[2], now, member)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. floor)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. floor)
redis.call('SADD', KEYS[4], ARGV[8])
if ok then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'cf', 0, 'probe_at', 0)
else
  redis.call('ZADD', KEYS[3], now, member)
  redis.call('HINCRBY', KEYS[1], 'cf', 1)
  redis.call('HSET', KEYS[1], 'last_error', ARGV[3])
  local state = redis.call('HGET', KEYS[1], 'state')
  if state == 'half_open' then
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'probe_at', 0)
  else
    local failures = redis.call('ZCARD', KEYS[3])
    local total = redis.call('ZCARD', KEYS[2])
    if failures >= tonumber(ARGV[5]) and failures >= tonumber(ARGV[6]) * total then
      redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'probe_at', 0)
    end
  end
end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
return redis.call('HGET', KEYS[1], 'state') or 'closed'
"""


class RedisLink:
    """One process's connection to Redis, with the fallback bookkeeping: after a failure the
    link is considered down (callers use local state) until ``retry_seconds`` have passed."""

    def __init__(
        self, url: str, prefix: str, *, timeout: float = 0.25, retry_seconds: float = 5.0
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.client = aredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._sync: redis.Redis | None = None
        self._down_until = 0.0
        self._down = False

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    @property
    def sync(self) -> redis.Redis:
        """A blocking client for the operators' (threaded, rare) reads."""
        if self._sync is None:
            self._sync = redis.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        return self._sync

    @property
    def usable(self) -> bool:
        return not self._down or time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: BaseException) -> None:
        if not self._down:
            logger.warning(
                "Redis is unavailable (%s: %s): %s uses this process's own state; retrying "
                "Redis every %.0f s",
                type(exc).__name__,
                str(exc)[:200],
                what,
                self.retry_seconds,
            )
        self._down = True
        self._down_until = time.monotonic() + self.retry_seconds

    def _worked(self) -> None:
        if self._down:
            self._down = False
            logger.warning("Redis is reachable again: rate limits and route health are shared")

    async def run(self, what: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """``await call()``; None (and a warning, once per outage) when Redis fails."""
        if not self.usable:
            return None
        try:
            result = await call()
        except REDIS_ERRORS as exc:
            self._failed(what, exc)
            return None
        self._worked()
        return result

    def run_sync(self, what: str, call: Callable[[redis.Redis], T]) -> T | None:
        if not self.usable:
            return None
        try:
            result = call(self.sync)
        except REDIS_ERRORS as exc:
            self._failed(what, exc)
            return None
        self._worked()
        return result

    async def close(self) -> None:
        await self.client.aclose()
        if self._sync is not None:
            self._sync.close()


class Limiter:
    """Per-key requests and tokens per minute: in Redis when linked, else this process's."""

    def __init__(self, clock: Clock, link: RedisLink | None) -> None:
        self.clock = clock
        self.local = RateLimiter(clock)
        self.link = link
        self._script = link.client.register_script(_RATE_LIMIT) if link else None

    async def check(
        self, key_id: int, rpm: int | None, tpm: int | None, tokens: int, member: str
    ) -> Verdict:
        if rpm is None and tpm is None:
            return Verdict(True, [])
        link, script = self.link, self._script
        if link is None or script is None:
            return self.local.check(key_id, rpm, tpm, tokens)
        now_us = to_epoch_us(self.clock.now())
        window_us = int(self.local.window * US)
        args = [now_us, window_us, -1 if rpm is None else rpm, -1 if tpm is None else tpm]
        keys = [
            link.key("rl", key_id, "req"),
            link.key("rl", key_id, "tok"),
            link.key("rl", key_id, "sum"),
        ]
        found = await link.run(
            "rate limiting",
            lambda: script(keys=keys, args=[*args, tokens, member]),
        )
        if found is None:
            return self.local.check(key_id, rpm, tpm, tokens)
        allowed, nreq, used, oldest_req, oldest_tok = found
        now = now_us / US
        return verdict(
            rpm,
            tpm,
            tokens,
            int(nreq),
            int(used),
            _seconds(oldest_req),
            _seconds(oldest_tok),
            now,
            self.local.window,
            allowed=bool(allowed),
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seconds(score: Any) -> float | None:
    if isinstance(score, bytes):
        score = score.decode()
    return float(score) / US if score not in (None, "") else None


class Health:
    """Route health and circuits: in Redis when linked (shared by every process), always in
    this process's board too (the fallback, and the source when there is no Redis)."""

    def __init__(self, board: HealthBoard, link: RedisLink | None) -> None:
        self.board = board
        self.link = link
        self._available = link.client.register_script(_AVAILABLE) if link else None
        self._record = link.client.register_script(_RECORD) if link else None

    def _now_us(self) -> int:
        return to_epoch_us(self.board.clock.now())

    def _keys(self, channel_id: int, model: str) -> list[str]:
        assert self.link is not None
        base = ("hc", channel_id, model)
        return [
            self.link.key(*base, "state"),
            self.link.key(*base, "all"),
            self.link.key(*base, "fail"),
            self.link.key("hc", "routes"),
        ]

    async def available(self, channel_ids: Sequence[int], model: str) -> list[bool]:
        """For each channel: may a request (first try or retry) go there now? Claims the one
        half-open probe of a route that has cooled down."""
        link, script = self.link, self._available
        if link is None or script is None or not channel_ids:
            return [self.board.available(c, model) for c in channel_ids]
        board = self.board
        keys = [self._keys(c, model)[0] for c in channel_ids]
        args = [
            self._now_us(),
            int(board.cool_down * US),
            int(board.probe_timeout * US),
        ]
        found = await link.run(
            "route health",
            lambda: script(keys=keys, args=args),
        )
        if found is None:
            return [board.available(c, model) for c in channel_ids]
        return [bool(int(ok)) for ok in found]

    async def record(
        self, channel_id: int, model: str, ok: bool, latency_ms: float, error: str = ""
    ) -> None:
        self.board.record(channel_id, model, ok, latency_ms, error)
        link, script = self.link, self._record
        if link is None or script is None:
            return
        board = self.board
        now = self._now_us()
        member = f"{now}:{int(ok)}:{latency_ms:.3f}:{secrets.token_hex(4)}"
        ttl_ms = int((board.window + board.cool_down) * 1000) + 3_600_000
        args: list[str | int | float] = [
            now,
            int(ok),
            error[:300],
            int(board.window * US),
            board.min_failures,
            board.failure_ratio,
            member,
            f"{channel_id}\t{model}",
            ttl_ms,
        ]
        keys = self._keys(channel_id, model)
        await link.run(
            "route health",
            lambda: script(keys=keys, args=args),
        )

    def snapshot(self) -> list[RouteHealth]:
        """Every route's health (blocking: called from the operators' threaded endpoints)."""
        link = self.link
        if link is None:
            return self.board.snapshot()
        shared = link.run_sync("route health", self._shared_snapshot)
        return self.board.snapshot() if shared is None else shared

    def _shared_snapshot(self, client: redis.Redis) -> list[RouteHealth]:
        assert self.link is not None
        board = self.board
        now = self._now_us()
        floor = now - int(board.window * US)
        routes = []
        members: Any = client.smembers(self.link.key("hc", "routes"))
        for raw in members:
            channel, _, model = _text(raw).partition("\t")
            routes.append((int(channel), model))
        routes.sort()
        pipe = client.pipeline(transaction=False)
        for channel_id, model in routes:
            keys = self._keys(channel_id, model)
            pipe.hgetall(keys[0])
            pipe.zrangebyscore(keys[1], floor, "+inf")
        replies = pipe.execute()
        out = []
        for i, (channel_id, model) in enumerate(routes):
            state = {_text(k): _text(v) for k, v in replies[2 * i].items()}
            samples = []
            for member in replies[2 * i + 1]:
                _at, good, latency, _ = _text(member).split(":", 3)
                samples.append((good == "1", float(latency)))
            out.append(
                summarize(
                    channel_id,
                    model,
                    samples,
                    int(state.get("cf", 0)),
                    state.get("state", CLOSED),
                    state.get("last_error", ""),
                )
            )
        return out
