"""`tallygate demo --host 0.0.0.0` listens on every interface, but what it prints for a newcomer
to paste is an address this machine can reach: loopback, never the wildcard."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.demo.test_readme_demo import _wait_for_port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(120)
def test_a_wildcard_bind_prints_the_loopback_address(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    env.update(TALLYGATE_LOG_LEVEL="WARNING")
    demo = subprocess.Popen(
        [sys.executable, "-m", "tallygate", "demo", "--host", "0.0.0.0", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(port, demo)
    finally:
        demo.terminate()
        out, _ = demo.communicate(timeout=30)
    printed = out.decode()
    assert f"listening on http://0.0.0.0:{port} (every interface)" in printed
    assert f"OpenAI base URL : http://127.0.0.1:{port}/v1" in printed
    assert f"curl http://127.0.0.1:{port}/v1/models" in printed
    assert "http://0.0.0.0" not in printed.split("(every interface)", 1)[1]
