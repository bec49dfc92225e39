"""The operator API under ``/admin/api``: one router, one app-wide operator dependency, so no
admin endpoint can forget to check the role."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from tallygate.adjustments import endpoints as adjustments
from tallygate.billing import policy_endpoints as charge_policy
from tallygate.catalog import endpoints as catalog
from tallygate.channels import endpoints as channels
from tallygate.credits import endpoints as credits
from tallygate.exports import endpoints as exports
from tallygate.keys import endpoints as keys
from tallygate.payments import endpoints as payments
from tallygate.receipts import endpoints as receipts
from tallygate.users import endpoints as users
from tallygate.users.dependencies import current_operator
from tallygate.wallet import endpoints as wallet


def admin_api() -> APIRouter:
    router = APIRouter(prefix="/admin/api", dependencies=[Depends(current_operator)])
    router.include_router(users.admin_router)
    router.include_router(wallet.admin_router)
    router.include_router(receipts.admin_router)
    router.include_router(exports.admin_router)
    router.include_router(keys.admin_router)
    router.include_router(catalog.admin_router)
    router.include_router(channels.admin_router)
    router.include_router(charge_policy.admin_router)
    router.include_router(credits.admin_router)
    router.include_router(adjustments.admin_router)
    router.include_router(payments.admin_router)
    return router
