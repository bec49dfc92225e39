"""The operator API under ``/admin/api``: one router, one app-wide operator dependency, so no
admin endpoint can forget to check the role."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from tallygate.users import endpoints as users
from tallygate.users.dependencies import current_operator
from tallygate.wallet import endpoints as wallet


def admin_api() -> APIRouter:
    router = APIRouter(prefix="/admin/api", dependencies=[Depends(current_operator)])
    router.include_router(users.admin_router)
    router.include_router(wallet.admin_router)
    return router
