"""ITS services as real processes for whole-stack tests (tracing, chaos)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from its_common.localstack.servers import free_port
from tests.router.harness import BIN, http, wait_until

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def service(
    name: str, log_dir: Path, env: dict[str, str], port: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``its-<name>`` and wait for its health endpoint; SIGTERM on exit (spans flush).

    ``port``: the health endpoint's port (default: a free one)."""
    port = port or free_port()
    environment = {**os.environ, "ITS_HTTP_PORT": str(port), "ITS_HEARTBEAT_INTERVAL_S": "1", **env}
    log_file = log_dir / f"{name}.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [str(BIN / f"its-{name}")], env=environment, cwd=REPO, stdout=log, stderr=log
        )
    try:
        wait_until(
            lambda: (
                process.poll() is not None
                or http("GET", f"http://127.0.0.1:{port}/healthz", timeout=2)[0] == 200
            ),
            30,
            f"{name} health endpoint",
        )
        assert process.poll() is None, log_file.read_text(errors="replace")[-3000:]
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
