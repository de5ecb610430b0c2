"""Start and stop `haste llm serve` (the real local model) for tests, as a child process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LocalLLM:
    """A `haste llm serve` process with the default model (the local-llm extra)."""

    url: str
    model: str
    process: subprocess.Popen


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_llm_server(port: int, *, alias: str = "smollm2") -> subprocess.Popen:
    """`haste llm serve` as a child process with 1 thread (cores are shared in CI)."""
    return subprocess.Popen(
        [sys.executable, "-m", "haste_dagster", "llm", "serve", "--port", str(port),
         "--threads", os.environ.get("HASTE_TEST_LLM_THREADS", "1"), "--alias", alias],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_healthy(process: subprocess.Popen, url: str, timeout_s: float = 300.0) -> None:
    from haste_dagster.llm.serve import health

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"haste llm serve exited with {process.returncode}: {process.stderr.read()}"
            )
        if health(url):
            return
        time.sleep(0.5)
    raise AssertionError(f"haste llm serve not healthy after {timeout_s:.0f}s")


def stop_llm_server(process: subprocess.Popen, timeout_s: float = 60.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


