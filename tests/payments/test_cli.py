"""``tallygate serve`` refuses the sandbox provider unless explicitly allowed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_serve_refuses_the_sandbox_without_allow_sandbox(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    env |= {
        "TALLYGATE_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
        "TALLYGATE_PAYMENTS_SANDBOX": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tallygate", "serve", "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--allow-sandbox" in done.stderr
