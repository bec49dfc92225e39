"""The charge policy for operators (``/admin/api/charge-policy``)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from tallygate.billing import policy_service as service
from tallygate.billing.charge_policy import CHOICES, ChargePolicy
from tallygate.state import ReadConn, State, WriteConn
from tallygate.users.dependencies import CurrentOperator

admin_router = APIRouter(prefix="/charge-policy", tags=["admin"])


class ChargePolicyOut(BaseModel):
    """What a request costs when it does not end normally, per failure class."""

    rejected: str
    upstream_error: str
    empty_output: str
    client_abort: str
    broken_stream: str
    choices: dict[str, list[str]]
    """The allowed policies per failure class (the first is the default)."""

    @classmethod
    def of(cls, policy: ChargePolicy) -> ChargePolicyOut:
        return cls(**policy.as_dict(), choices={k: list(v) for k, v in CHOICES.items()})


class ChargePolicyPut(BaseModel):
    """Failure classes left out get their default policy."""

    rejected: str | None = None
    upstream_error: str | None = None
    empty_output: str | None = None
    client_abort: str | None = None
    broken_stream: str | None = None
    reason: str = ""


@admin_router.get("")
def get_policy(conn: ReadConn) -> ChargePolicyOut:
    return ChargePolicyOut.of(service.current(conn))


@admin_router.put("")
def put_policy(
    body: ChargePolicyPut, operator: CurrentOperator, conn: WriteConn, state: State
) -> ChargePolicyOut:
    values: dict[str, object] = body.model_dump(exclude={"reason"}, exclude_none=True)
    policy = service.set_policy(
        conn, values, operator=operator.email, now_us=state.now_us(), reason=body.reason
    )
    return ChargePolicyOut.of(policy)
