"""Fault injection for crash tests: ``TALLYGATE_FAULT=<point>`` pauses the process at that
point (after printing a marker line to stderr) so a test can SIGKILL it exactly there.

Points: ``after_postings_before_commit`` — postings written, transaction not yet committed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

MARKER = "TALLYGATE-FAULT-PAUSED"


def hook(configured: str) -> Callable[[str], None] | None:
    """The ledger's fault callback for the configured point, or None (no overhead) if unset."""
    if not configured:
        return None

    def pause(point: str) -> None:
        if point == configured:
            sys.stderr.write(f"{MARKER} {point}\n")
            sys.stderr.flush()
            time.sleep(3600)

    return pause
