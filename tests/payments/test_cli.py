"""``tallygate serve`` refuses the sandbox provider unless explicitly allowed, and then shows a
test-mode banner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


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


def test_serve_with_allow_sandbox_shows_the_test_mode_banner(tmp_path: Path) -> None:
    """Explicitly allowed, the sandbox is served: the start-up banner says TEST MODE and the
    top-up options tell every client it is test mode."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    env |= {
        "TALLYGATE_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
        "TALLYGATE_PAYMENTS_SANDBOX": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "tallygate", "serve", "--allow-sandbox"]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start within 60 s"
            time.sleep(0.1)
        options = httpx.get(f"http://127.0.0.1:{port}/api/payments/options", timeout=5)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert "*** TEST MODE" in stderr
    assert options.status_code == 200 and options.json()["test_mode"] is True
    assert "sandbox" in options.json()["providers"]
