"""What a key may call: one rule, shared by the marketplace and the gateway.

A key admits a public model when its ``allowed_models`` is empty (every model) or any of its
glob patterns matches the name (``fnmatchcase``: case-sensitive, ``*``, ``?``, ``[…]``), and a
route type when it is in ``allowed_route_types``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import fnmatchcase

ROUTE_TYPES = ("official", "routed")
BUCKET_OF_ROUTE = {"official": "credit", "routed": "routed"}
"""The bucket that pays a route type (DESIGN.md: buckets are never interchangeable)."""

# A glob over public model names: the name alphabet plus the glob metacharacters. No ':' —
# the ':official' / ':routed' suffixes belong to the API model id, never to a model name.
GLOB_RE = re.compile(r"^[A-Za-z0-9._/*?\[\]!-]+$")
MAX_GLOBS = 100
MAX_GLOB_LENGTH = 200


def model_allowed(globs: Sequence[str], model: str) -> bool:
    return not globs or any(fnmatchcase(model, g) for g in globs)


def admits(globs: Sequence[str], route_types: Sequence[str], model: str, route_type: str) -> bool:
    return route_type in route_types and model_allowed(globs, model)
