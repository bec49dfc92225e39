"""The one error tree. Every expected failure is a ``TallygateError`` with an HTTP status,
a stable machine ``code`` and a readable ``message``; each surface renders it its own way
(OpenAI shape on ``/v1``, JSON on ``/api``, a page on HTML routes, a line on the CLI).

TallygateError
├── BadRequest (400)            invalid input: amounts, currencies, unbalanced postings …
├── Unauthorized (401)          no or bad credentials
├── Forbidden (403)             authenticated but not allowed
├── NotFound (404)              unknown account, user, hold …
├── Conflict (409)              idempotency key reused with different content, duplicates
│   └── IdempotencyConflict
├── PaymentRequired (402)       insufficient balance, bucket in debt (ledger.errors)
└── ServiceUnavailable (503)
"""

from __future__ import annotations

from typing import Any


class TallygateError(Exception):
    status: int = 500
    code: str = "internal_error"
    type: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.details = details or {}


class BadRequest(TallygateError):
    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class Unauthorized(TallygateError):
    status = 401
    code = "unauthorized"
    type = "authentication_error"


class Forbidden(TallygateError):
    status = 403
    code = "forbidden"
    type = "permission_error"


class NotFound(TallygateError):
    status = 404
    code = "not_found"
    type = "invalid_request_error"


class Conflict(TallygateError):
    status = 409
    code = "conflict"
    type = "invalid_request_error"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class PaymentRequired(TallygateError):
    status = 402
    code = "insufficient_balance"
    type = "insufficient_quota"


class ServiceUnavailable(TallygateError):
    status = 503
    code = "unavailable"
    type = "server_error"
