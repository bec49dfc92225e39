"""Logging setup: JSON lines on stderr (or plain text for a terminal), from ``Settings``.

Hot paths do not log per request at INFO; uvicorn's access log is off (``cli serve``). Call
``configure_logging`` once per process entry point; calling it again replaces only the handler
it installed, so test runners' own handlers stay."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

import orjson

from tallygate.config import Settings

# LogRecord attributes that are not user-supplied ``extra`` fields.
# uvicorn's "color_message" duplicates "message" with terminal escapes.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class _TallygateHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so reconfiguring replaces only it."""


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _TallygateHandler)]:
        root.removeHandler(handler)
    handler = _TallygateHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # uvicorn's loggers carry their own handlers unless told otherwise; route them through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
