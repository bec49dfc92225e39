"""Bounds shared by the pages' query and path parameters."""

from __future__ import annotations

MAX_ID = 2**63 - 1
"""The largest id or cursor a page accepts: the largest 64-bit integer either database holds
(a larger number is a readable 422, never a driver overflow)."""
