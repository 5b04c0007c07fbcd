"""`its-local run` (what `make run` calls) end to end, and the supervisor's restarts."""

from __future__ import annotations

import asyncio
import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import redis

from its_common.localstack.servers import free_port
from its_common.localstack.supervisor import ProcessSpec, StartError, Supervisor


def _reader(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip())

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_line(lines: queue.Queue[str], needle: str, seen: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"{needle!r} not printed; output was:\n" + "\n".join(seen[-40:]))


def _run_stack(var_dir: Path, redis_port: int, pg_port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "its_common.localstack.cli", "run",
            "--var-dir", str(var_dir),
            "--redis-port", str(redis_port),
            "--postgres-port", str(pg_port),
            "--only-infra",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def test_local_stack_starts_applies_schema_stops_and_reuses_data(work_dir: Path) -> None:
    var_dir = work_dir / "stack-var"
    redis_port, pg_port = free_port(), free_port()
    seen: list[str] = []

    process = _run_stack(var_dir, redis_port, pg_port)
    lines = _reader(process)
    try:
        _wait_line(lines, "ITS is running locally", seen, 90)
        assert any("applied ['0001_core_schema.sql'" in line for line in seen)
        client = redis.Redis(port=redis_port)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert client.config_get("maxmemory")["maxmemory"] == str(200 * 1024 * 1024)
        client.set("kept", "across runs")
        client.close()
        url = f"postgresql://its@127.0.0.1:{pg_port}/its"
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO positions (account, symbol, quantity) VALUES ('DU1', 'NVDA', 5)"
            )
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    _wait_line(lines, "all stopped", seen, 5)
    assert process.returncode == 0

    process = _run_stack(var_dir, redis_port, pg_port)
    lines = _reader(process)
    try:
        _wait_line(lines, "ITS is running locally", seen, 90)
        assert any("applied nothing new" in line for line in seen)
        assert redis.Redis(port=redis_port).get("kept") == b"across runs"
        with psycopg.connect(f"postgresql://its@127.0.0.1:{pg_port}/its") as conn:
            row = conn.execute("SELECT quantity FROM positions WHERE symbol = 'NVDA'").fetchone()
            assert row == (5.0,)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 0


async def test_supervisor_restarts_a_crashed_process_and_reports_it(tmp_path: Path) -> None:
    out = io.StringIO()
    supervisor = Supervisor(tmp_path / "logs", out=out, max_backoff_s=0.2)
    marker = tmp_path / "starts"
    script = (
        "import pathlib, sys, time\n"
        f"p = pathlib.Path({str(marker)!r})\n"
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x')\n"
        "print('up', flush=True)\n"
        "sys.exit(3) if len(p.read_text()) < 3 else time.sleep(60)\n"
    )
    await supervisor.start(ProcessSpec("flaky", [sys.executable, "-c", script]))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(supervisor.events) < 2:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    await supervisor.stop(timeout_s=5)
    assert marker.read_text() == "xxx"  # crashed twice, third start stays up
    restarts = [e for e in supervisor.events if "flaky exited with code 3" in e]
    assert len(restarts) == 2 and "restart #2" in restarts[1]
    assert "flaky      | up" in out.getvalue()
    assert (tmp_path / "logs" / "flaky.log").read_text().count("up") == 3


async def test_supervisor_reports_a_process_that_dies_during_start_up(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs", out=io.StringIO())

    def never_ready() -> None:
        raise ConnectionError("not yet")

    spec = ProcessSpec("broken", [sys.executable, "-c", "raise SystemExit(7)"], ready=never_ready)
    try:
        await supervisor.start(spec)
    except StartError as exc:
        assert "broken exited with code 7 during start-up" in str(exc)
    else:
        raise AssertionError("start-up failure not reported")
    finally:
        await supervisor.stop(timeout_s=5)


def test_broker_choice_wires_the_ib_simulator_before_the_trader() -> None:
    from its_common.localstack.services import local_services

    names = [s.name for s in local_services(False)]
    assert "ibsim" not in names
    services = local_services(False, "ib-sim")
    names = [s.name for s in services]
    assert names.index("ibsim") < names.index("trader")
    ibsim = services[names.index("ibsim")]
    trader = services[names.index("trader")]
    assert trader.env["ITS_TRADER_BROKER"] == "ib"
    assert trader.env["ITS_IB_PORT"] == ibsim.env["ITS_IBSIM_PORT"]
