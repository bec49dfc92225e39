"""The README's promise: `tallygate demo` then the README's Python snippet, exactly as written."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _readme_snippet() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    key = re.search(r"TALLYGATE_DEMO_KEY=(\S+) \./scripts/demo", text)
    assert code and key, "the README must show the demo key and a Python snippet"
    return code.group(1), key.group(1)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"tallygate demo exited early: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError("tallygate demo did not start listening")


@pytest.mark.timeout(180)
def test_readme_snippet_runs_as_written_against_the_demo(tmp_path: Path) -> None:
    snippet, key = _readme_snippet()
    port = 8000  # the README's address, as written
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    env.update(TALLYGATE_DEMO_KEY=key, TALLYGATE_LOG_LEVEL="WARNING")
    demo = subprocess.Popen(
        [sys.executable, "-m", "tallygate", "demo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(port, demo)
        (tmp_path / "snippet.py").write_text(snippet)
        run = subprocess.run(
            [sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert lines[0].startswith('You said: "Say hello to Tallygate"')
        costs = [line for line in lines if "cost:" in line]
        assert len(costs) == 2
        assert re.fullmatch(r"cost: [1-9]\d* nano-units of USD from credit", costs[0])
        assert re.fullmatch(r"cost: [1-9]\d* nano-units of CNY", costs[1])
        reconcile = subprocess.run(
            [sys.executable, "-m", "tallygate", "reconcile"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
    finally:
        demo.terminate()
        demo.wait(timeout=30)
