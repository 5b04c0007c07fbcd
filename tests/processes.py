"""ITS services as real processes for whole-stack tests (tracing, chaos)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from its_common.localstack.servers import free_port
from tests.router.harness import BIN, http, wait_until

REPO = Path(__file__).resolve().parents[1]


@dataclass
class ServiceProcess:
    """One running ``its-<name>``: what it needs to be started again on the same port."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_file: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:]


def start_service(
    name: str,
    log_dir: Path,
    env: dict[str, str],
    port: int | None = None,
    argv: list[str] | None = None,
) -> ServiceProcess:
    """Start ``its-<name>`` (or ``argv``) and wait for its health endpoint (log appended)."""
    port = port or free_port()
    environment = {**os.environ, "ITS_HTTP_PORT": str(port), "ITS_HEARTBEAT_INTERVAL_S": "1", **env}
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{name}.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            argv or [str(BIN / f"its-{name}")], env=environment, cwd=REPO, stdout=log, stderr=log
        )
    handle = ServiceProcess(name, process, port, log_file)
    try:
        wait_until(
            lambda: (
                process.poll() is not None
                or http("GET", f"http://127.0.0.1:{port}/healthz", timeout=2)[0] == 200
            ),
            60,
            f"{name} health endpoint",
        )
    except BaseException:
        stop_process(process)
        raise
    assert process.poll() is None, handle.log_tail()
    return handle


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    """SIGTERM (spans flush, groups left cleanly), SIGKILL if it does not end in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@contextmanager
def service(
    name: str, log_dir: Path, env: dict[str, str], port: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``its-<name>`` and wait for its health endpoint; SIGTERM on exit (spans flush).

    ``port``: the health endpoint's port (default: a free one)."""
    handle = start_service(name, log_dir, env, port)
    try:
        yield handle.process
    finally:
        stop_process(handle.process)
