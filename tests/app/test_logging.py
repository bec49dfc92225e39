"""Structured logging: one JSON object per line, configured from Settings."""

from __future__ import annotations

import logging

import orjson
import pytest

from tallygate.config import Settings
from tallygate.observability.logging import JsonFormatter, configure_logging


def record(
    message: str, *args: object, exc: BaseException | None = None, **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord(
        "tallygate.test",
        logging.WARNING,
        __file__,
        1,
        message,
        args,
        (type(exc), exc, exc.__traceback__) if exc else None,
    )
    rec.__dict__.update(extra)
    return rec


class TestJsonFormatter:
    def test_writes_one_json_object_with_time_level_logger_message_and_extras(self) -> None:
        line = JsonFormatter().format(record("expired %d hold(s)", 3, request_id="r-1"))
        assert "\\n" not in line
        parsed = orjson.loads(line)
        assert parsed["level"] == "WARNING"
        assert parsed["logger"] == "tallygate.test"
        assert parsed["message"] == "expired 3 hold(s)"
        assert parsed["request_id"] == "r-1"
        assert parsed["time"].endswith("+00:00")

    def test_includes_the_traceback_of_an_exception(self) -> None:
        try:
            raise ValueError("kaput")
        except ValueError as caught:
            line = JsonFormatter().format(record("failed", exc=caught))
        assert "ValueError: kaput" in orjson.loads(line)["exception"]


class TestConfigureLogging:
    @pytest.fixture(autouse=True)
    def _restore_root(self) -> object:
        root = logging.getLogger()
        level, handlers = root.level, list(root.handlers)
        yield None
        root.handlers[:] = handlers
        root.setLevel(level)

    def test_sets_the_level_and_installs_exactly_one_handler_however_often_called(self) -> None:
        configure_logging(Settings(log_level="debug", log_json=True))
        configure_logging(Settings(log_level="error", log_json=True))
        root = logging.getLogger()
        ours = [h for h in root.handlers if type(h).__name__ == "_TallygateHandler"]
        assert len(ours) == 1
        assert isinstance(ours[0].formatter, JsonFormatter)
        assert root.level == logging.ERROR

    def test_plain_text_when_json_is_off_and_no_access_log(self) -> None:
        configure_logging(Settings(log_json=False))
        [ours] = [
            h for h in logging.getLogger().handlers if type(h).__name__ == "_TallygateHandler"
        ]
        assert not isinstance(ours.formatter, JsonFormatter)
        assert logging.getLogger("uvicorn.access").disabled
