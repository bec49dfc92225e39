"""What a gateway process loads at start-up: the research assistant's numeric libraries load on
a research run's first use, so every serving process stays small (issue 3: ≤ 150 MB idle)."""

from __future__ import annotations

import subprocess
import sys


def test_serving_the_app_does_not_import_pandas_or_numpy() -> None:
    probe = (
        "import sys; from tallygate.app import create_app; create_app(); "
        "print(sorted(m for m in ('pandas', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
