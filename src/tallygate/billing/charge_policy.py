"""The charge policy: what a request costs when it does not end normally.

Every failure class has an explicit, operator-configurable policy, and every receipt names the
policy that applied (``<class>:<policy>``). docs/billing.md is the user-facing description.

| class          | when                                                        | default          |
|----------------|-------------------------------------------------------------|------------------|
| rejected       | refused before any upstream call (auth, scope, 402, 429)    | no_charge (fixed)|
| upstream_error | every upstream attempt failed before any output             | no_charge (fixed)|
| empty_output   | upstream answered but produced no output tokens             | no_charge        |
| client_abort   | the client disconnected mid-stream                          | charge_received  |
| broken_stream  | the upstream stream broke mid-way                           | charge_received  |

``charge_received`` bills the prompt plus the output tokens received from the upstream up to
the cut (never tokens that were not received); ``no_charge`` bills nothing; for empty_output,
``charge_prompt`` bills the prompt tokens only."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tallygate.errors import BadRequest

SETTINGS_KEY = "charge_policy"

CHOICES: dict[str, tuple[str, ...]] = {
    "rejected": ("no_charge",),
    "upstream_error": ("no_charge",),
    "empty_output": ("no_charge", "charge_prompt"),
    "client_abort": ("charge_received", "no_charge"),
    "broken_stream": ("charge_received", "no_charge"),
}


@dataclass(frozen=True, slots=True)
class ChargePolicy:
    rejected: str = "no_charge"
    upstream_error: str = "no_charge"
    empty_output: str = "no_charge"
    client_abort: str = "charge_received"
    broken_stream: str = "charge_received"

    def of(self, failure_class: str) -> str:
        return str(getattr(self, failure_class))

    def label(self, failure_class: str) -> str:
        """What receipts record, e.g. ``client_abort:charge_received``."""
        return f"{failure_class}:{self.of(failure_class)}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def parse(values: dict[str, object]) -> ChargePolicy:
    """Validate an operator's policy document; unknown classes or choices are refused."""
    unknown = sorted(set(values) - set(CHOICES))
    if unknown:
        raise BadRequest(
            f"unknown failure class(es): {', '.join(unknown)}; known: {', '.join(CHOICES)}"
        )
    merged = ChargePolicy().as_dict()
    for name, value in values.items():
        if value not in CHOICES[name]:
            raise BadRequest(
                f"policy for {name} must be one of {', '.join(CHOICES[name])}, got {value!r}",
                param=name,
            )
        merged[name] = str(value)
    return ChargePolicy(**merged)
