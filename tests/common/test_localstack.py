"""`its-local run` (what `make run` calls) end to end, and the supervisor's restarts."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

import psycopg
import redis

from its_common.localstack.servers import PostgresServer, free_port
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


def _leftover_cleanup(var_dir: Path, redis_port: int, pg_port: int) -> list[str]:
    """Stop what a failed `its-local` left behind (only this test's servers, by their ids)."""
    left = []
    if not _port_is_free(redis_port):
        left.append(f"redis ({redis_port})")
        with contextlib.suppress(redis.RedisError):
            redis.Redis(port=redis_port).shutdown(nosave=True)
    pid_file = PostgresServer(var_dir / "postgres", port=pg_port).pgdata / "postmaster.pid"
    if not _port_is_free(pg_port):
        left.append(f"postgres ({pg_port})")
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGINT)
    return left


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_ctrl_c_with_stdout_into_a_closed_pipe_still_stops_everything(work_dir: Path) -> None:
    """`make run | tee log`, Ctrl-C: tee dies first, so every later print hits a broken pipe."""
    var_dir = work_dir / "stack-var-pipe"
    redis_port, pg_port = free_port(), free_port()
    read_fd, write_fd = os.pipe()
    stderr_file = work_dir / "stack-pipe-stderr.txt"
    with stderr_file.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "its_common.localstack.cli", "run",
                "--var-dir", str(var_dir),
                "--redis-port", str(redis_port),
                "--postgres-port", str(pg_port),
                "--only-infra",
            ],
            stdout=write_fd,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "r") as reader:  # read until ready, then the reader "dies"
            lines, pump = _reader_of(reader)
            _wait_line(lines, "ITS is running locally", [], 90)
            pump.join(timeout=10)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        left = _wait_for_free_or_cleanup(var_dir, redis_port, pg_port)
    errors = stderr_file.read_text()
    assert not left, f"left running: {left}; stderr:\n{errors}"
    assert code == 0, errors
    assert "Traceback" not in errors, errors
    supervisor_log = (var_dir / "logs" / "supervisor.log").read_text()
    assert "stdout is gone" in supervisor_log
    assert "all stopped" in supervisor_log  # what could not be printed is still recorded


def _reader_of(stream: TextIO) -> tuple[queue.Queue[str], threading.Thread]:
    """Lines up to the ready banner (then the reader stops reading, like a killed `tee`)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip())
            if "ITS is running locally" in line:
                return

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return lines, thread


def _wait_for_free_or_cleanup(var_dir: Path, redis_port: int, pg_port: int) -> list[str]:
    """Both ports free within a few seconds, else stop the leftovers and name them."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _port_is_free(redis_port) and _port_is_free(pg_port):
            return []
        time.sleep(0.2)
    return _leftover_cleanup(var_dir, redis_port, pg_port)


async def test_supervisor_keeps_logging_and_stops_a_child_after_stdout_breaks(
    tmp_path: Path,
) -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the reader is gone before the first line
    with os.fdopen(write_fd, "w") as out:
        supervisor = Supervisor(tmp_path / "logs", out=out)
        script = (
            "import itertools, time\n"
            "for i in itertools.count():\n"
            "    print(f'line {i}', flush=True)\n"
            "    time.sleep(0.02)\n"
        )
        await supervisor.start(ProcessSpec("chatty", [sys.executable, "-c", script]))
        log_file = tmp_path / "logs" / "chatty.log"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                log_file.exists() and log_file.read_text().count("\n") >= 50
            ):
                await asyncio.sleep(0.05)
            assert log_file.read_text().count("\n") >= 50  # the pump goes on after the break
            assert isinstance(supervisor.console.broken, BrokenPipeError)
            assert supervisor.console.dropped >= 50
        finally:
            await supervisor.stop(timeout_s=5)
        supervisor.report("all stopped")  # printing after the break never raises
    state = supervisor.states["chatty"]
    assert state.process is not None and state.process.returncode is not None
    kept = (tmp_path / "logs" / "supervisor.log").read_text()
    assert "stdout is gone (BrokenPipeError" in kept
    assert "chatty stopped" in kept and "all stopped" in kept


def test_console_counts_what_neither_stdout_nor_the_log_file_could_take(tmp_path: Path) -> None:
    from its_common.localstack.console import Console

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be")
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    with os.fdopen(write_fd, "w") as out:
        console = Console(out, blocker / "supervisor.log")
        console.print("first")  # the pipe is broken, then recording that fails too
        console.print("second")
        console.record("stopping")
    assert isinstance(console.broken, BrokenPipeError)
    assert console.dropped == 2 and console.record_errors == 2


def _its_local(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "its_common.localstack.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_tools_find_the_running_stack_with_env_and_exec(tmp_path: Path) -> None:
    """`its-local env` / `its-local exec CMD` give command-line tools the running stack's
    settings; without a running stack they say how to start one."""
    var_dir = tmp_path / "var"
    absent = _its_local("env", "--var-dir", str(var_dir))
    assert absent.returncode == 2 and "start it with `make run`" in absent.stderr

    redis_port, pg_port = free_port(), free_port()
    seen: list[str] = []
    process = _run_stack(var_dir, redis_port, pg_port)
    lines = _reader(process)
    try:
        _wait_line(lines, "ITS is running locally", seen, 90)
        exports = _its_local("env", "--var-dir", str(var_dir))
        assert exports.returncode == 0, exports.stderr
        assert f"export REDIS_URL=redis://127.0.0.1:{redis_port}" in exports.stdout
        assert f"127.0.0.1:{pg_port}/its" in exports.stdout
        probe = "import os, redis; print(redis.Redis.from_url(os.environ['REDIS_URL']).ping())"
        ran = _its_local("exec", "--var-dir", str(var_dir), "--", sys.executable, "-c", probe)
        assert ran.returncode == 0 and ran.stdout.strip() == "True", ran.stderr
        # `make run` does not activate the virtualenv: exec still finds the ITS tools
        bare = subprocess.run(
            [sys.executable, "-m", "its_common.localstack.cli", "exec", "--var-dir",
             str(var_dir), "its-local", "--help"],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert bare.returncode == 0 and "usage: its-local" in bare.stdout, bare.stderr
        missing = _its_local("exec", "--var-dir", str(var_dir), "no-such-its-tool")
        assert missing.returncode == 127 and "cannot run 'no-such-its-tool'" in missing.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 0
    stopped = _its_local("env", "--var-dir", str(var_dir))
    assert stopped.returncode == 2  # the file goes with the stack


def test_one_base_port_moves_every_port_of_the_stack() -> None:
    from its_common.localstack.services import PORT_OFFSETS, Ports, local_services

    default = {s.name: s.http_port for s in local_services(False, "ib-sim")}
    assert default["marketsim"] == 18080 and default["dashboard"] == 18089
    assert Ports()["redis"] == 16379 and Ports()["postgres"] == 15432  # the defaults are kept
    ports = Ports(21000)
    services = {s.name: s for s in local_services(False, "ib-sim", ports)}
    for name, service in services.items():
        assert service.http_port == 21000 + PORT_OFFSETS[name]
    every_port_named = " ".join(
        f"{value} {' '.join(s.urls.values())}"
        for s in services.values()
        for value in s.env.values()
    )
    for old in (18765, 18766, 14002, 18081, 18089):
        assert str(old) not in every_port_named, old  # nothing left on a default port
    assert services["router"].env["ITS_POLYGON_WS_URL"] == "ws://127.0.0.1:21685/stocks"
    assert services["trader"].env["ITS_IB_PORT"] == services["ibsim"].env["ITS_IBSIM_PORT"]
    assert (
        "router=http://127.0.0.1:21001/metrics"
        in services["collector"].env["ITS_COLLECTOR_TARGETS"]
    )
    assert services["dashboard"].urls["dashboard"] == "http://127.0.0.1:21009/"
    assert len(set(ports.all().values())) == len(PORT_OFFSETS)  # no two services share a port


def _free_base() -> int:
    """A base port whose Redis and PostgreSQL ports are free now."""
    for _ in range(50):
        base = free_port() % 30000 + 10000
        if _port_is_free(base - 1701) and _port_is_free(base - 2648):
            return base
    raise AssertionError("no free base port found")


def test_the_stack_listens_where_the_base_port_says_and_a_busy_port_names_the_fix(
    work_dir: Path,
) -> None:
    var_dir = work_dir / "stack-var-base"
    base = _free_base()
    seen: list[str] = []
    process = subprocess.Popen(
        [sys.executable, "-m", "its_common.localstack.cli", "run", "--var-dir", str(var_dir),
         "--base-port", str(base), "--only-infra"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines = _reader(process)
    try:
        _wait_line(lines, "ITS is running locally", seen, 90)
        assert redis.Redis(port=base - 1701).ping()
        with psycopg.connect(f"postgresql://its@127.0.0.1:{base - 2648}/its") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        _wait_line(lines, "CLI tools", seen, 10)  # the end of the summary
        assert any(f"redis://127.0.0.1:{base - 1701}/0" in line for line in seen)
        env = _its_local("env", "--var-dir", str(var_dir))
        assert f"127.0.0.1:{base - 2648}/its" in env.stdout
        # a second stack on the same ports: refused, with the exact command that works
        busy = _its_local("run", "--var-dir", str(work_dir / "second"), "--base-port",
                          str(base), "--only-infra")  # fmt: skip
        assert busy.returncode == 1
        assert f"redis ({base - 1701})" in busy.stderr
        match = re.search(r"make run BASE_PORT=(\d+)", busy.stderr)
        assert match is not None, busy.stderr
        suggested = int(match.group(1))
        assert f"its-local run --base-port {suggested}" in busy.stderr
        assert _port_is_free(suggested - 1701) and _port_is_free(suggested - 2648)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 0


def test_the_local_dashboard_token_is_generated_once_private_and_never_printed(
    tmp_path: Path,
) -> None:
    from its_common.localstack.token import dashboard_token

    env, hint = dashboard_token(tmp_path, environ={})
    path = Path(env["ITS_DASHBOARD_TOKEN_FILE"])
    token = path.read_text().strip()
    assert len(token) >= 24 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path.name) in hint and token not in hint
    path.chmod(0o644)
    again, _ = dashboard_token(tmp_path, environ={})
    assert again == env and path.read_text().strip() == token  # reused across runs
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    own, hint = dashboard_token(tmp_path, environ={"ITS_DASHBOARD_TOKEN": "mine"})
    assert own == {} and "ITS_DASHBOARD_TOKEN" in hint  # the user's own token wins


def test_the_demo_market_has_its_planted_pattern_and_the_trader_its_production_threshold() -> None:
    from its_common.localstack.services import local_services
    from its_common.risk import RiskLimits

    for broker in ("sim", "ib-sim", "ib"):
        services = {s.name: s for s in local_services(False, broker)}
        assert services["marketsim"].env["ITS_MARKETSIM_DEMO_PATTERN"] == "true"
        # No lowered confidence threshold: the trader's default (production) one applies.
        assert "ITS_TRADER_MIN_CONFIDENCE" not in services["trader"].env
    assert RiskLimits().min_confidence == 0.6
