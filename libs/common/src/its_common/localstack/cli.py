"""``its-local``: run the whole system on one machine (what ``make run`` calls).

Starts Redis and PostgreSQL from pip-installed binaries with data under ``./var`` (reused by the
next run), applies the migrations, starts every installed ITS service, prints what runs where,
restarts a crashed process and reports it, and stops everything cleanly on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import psycopg

from its_common.db.migrate import apply_migrations
from its_common.localstack.servers import PostgresServer, RedisServer, ServerError
from its_common.localstack.services import (
    DEFAULT_BASE_PORT,
    MAX_BASE_PORT,
    MIN_BASE_PORT,
    LocalService,
    Ports,
    local_services,
)
from its_common.localstack.stackenv import (
    NoStackError,
    exec_with,
    its_local_command,
    read_stack_env,
    remove_stack_env,
    shell_exports,
    write_stack_env,
)
from its_common.localstack.supervisor import ProcessSpec, Supervisor, http_ok
from its_common.localstack.token import dashboard_token


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is ok
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _check_ports(ports: dict[str, int], base: int, fixed: set[str]) -> None:
    """Every port free, else say which are taken and a base port where all of them are free."""
    busy = [f"{name} ({port})" for name, port in ports.items() if not _port_free(port)]
    if not busy:
        return
    hint = "Is another `make run` running? Stop it, or move every port of this stack: "
    free = _free_base(ports, base, fixed)
    if free is None:
        hint += "`make run BASE_PORT=N` (or `its-local run --base-port N`, ITS_LOCAL_BASE_PORT)."
    else:
        hint += (
            f"`make run BASE_PORT={free}` (or `its-local run --base-port {free}`, "
            f"ITS_LOCAL_BASE_PORT={free}), where all of them are free now."
        )
    if fixed:
        hint += f" ({', '.join(sorted(fixed))}: set explicitly, not moved by the base port.)"
    raise ServerError(f"ports already in use: {', '.join(busy)}. {hint}")


def _free_base(ports: dict[str, int], base: int, fixed: set[str]) -> int | None:
    """The first base port above ``base`` (in steps of 100) where every port is free."""
    for candidate in range(base + 100, MAX_BASE_PORT + 1, 100):
        moved = {n: p + candidate - base if n not in fixed else p for n, p in ports.items()}
        if all(_port_free(port) for port in moved.values()):
            return candidate
    return None


async def run(args: argparse.Namespace) -> int:
    var_dir: Path = args.var_dir
    ports = Ports(args.base_port)
    supervisor = Supervisor(var_dir / "logs")
    redis_server = RedisServer(var_dir / "redis", port=args.redis_port or ports["redis"])
    postgres = PostgresServer(var_dir / "postgres", port=args.postgres_port or ports["postgres"])
    polygon_key_set = bool(
        os.environ.get("POLYGON_API_KEY") or os.environ.get("POLYGON_API_KEY_FILE")
    )
    broker = os.environ.get("BROKER", "sim")
    if broker not in {"sim", "ib-sim", "ib"}:
        raise ServerError(f"BROKER={broker!r}: expected sim, ib-sim or ib")
    token_env, token_hint = ({}, "") if args.only_infra else dashboard_token(var_dir)
    services = (
        []
        if args.only_infra
        else _installed(
            local_services(
                polygon_key_set,
                broker,
                ports,
                dashboard_env=token_env,
                marketsim_env=marketsim_env(var_dir),
            )
        )
    )
    fixed = {
        n for n, given in (("redis", args.redis_port), ("postgres", args.postgres_port)) if given
    }
    _check_ports(
        {"redis": redis_server.port, "postgres": postgres.port} | _service_ports(services),
        ports.base,
        fixed,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    startup = asyncio.create_task(
        _start_all(supervisor, redis_server, postgres, services, var_dir, token_hint)
    )
    stop_wait = asyncio.create_task(stop.wait())
    exit_code = 0
    try:
        await asyncio.wait({startup, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not startup.done():
            startup.cancel()
            await asyncio.gather(startup, return_exceptions=True)
            supervisor.report("interrupted during start-up")
        elif startup.exception() is not None:
            supervisor.report(f"start-up failed: {startup.exception()}")
            exit_code = 1
        else:
            await stop_wait
            supervisor.report("stopping (Ctrl-C)")
    finally:  # whatever happened above, nothing we started is left running
        stop_wait.cancel()
        remove_stack_env(var_dir)
        await supervisor.stop()
    kept = f"{var_dir} (PostgreSQL: {postgres.pgdata})" if postgres.relocated else str(var_dir)
    console = supervisor.console
    if console.broken is not None:
        supervisor.report(f"{console.dropped} lines not printed (stdout gone); logs in {var_dir}")
    supervisor.report(f"all stopped; data kept in {kept}")
    return exit_code


async def _start_all(
    supervisor: Supervisor,
    redis_server: RedisServer,
    postgres: PostgresServer,
    services: list[LocalService],
    var_dir: Path,
    token_hint: str = "",
) -> None:
    await asyncio.to_thread(redis_server.prepare)
    await supervisor.start(
        ProcessSpec("redis", redis_server.argv(), ready=redis_server.ping, ready_timeout_s=20)
    )
    await asyncio.to_thread(postgres.prepare)
    if postgres.relocated:
        supervisor.report(
            f"postgres data in {postgres.server_dir}: the its-postgres user cannot reach "
            f"{var_dir} (a parent directory is private; its permissions are left alone); "
            f"{postgres.data_dir / 'LOCATION'} names it"
        )
    await supervisor.start(
        ProcessSpec(
            "postgres",
            postgres.argv(),
            ready=postgres.ping,
            popen_kwargs=postgres.run_as(),
            stop_signal=signal.SIGINT,
        )
    )
    await asyncio.to_thread(postgres.bootstrap)
    report = await asyncio.to_thread(_migrate, postgres.url)
    supervisor.report(
        f"schema ready: applied {report.applied or 'nothing new'}, "
        f"skipped {report.skipped or 'none'} (timescaledb: {report.timescale})"
    )
    common_env = {
        "REDIS_URL": redis_server.url,
        "DATABASE_URL": postgres.url,
        "ITS_HTTP_HOST": "127.0.0.1",
        "ITS_ENVIRONMENT": "local",
        "PYTHONUNBUFFERED": "1",
    }
    for service in services:
        executable = service.executable()
        assert executable is not None
        env = common_env | service.env
        env |= {"ITS_SERVICE_NAME": service.name, "ITS_HTTP_PORT": str(service.http_port)}
        await supervisor.start(
            ProcessSpec(
                service.name,
                [executable],
                env=env,
                ready=http_ok(f"http://127.0.0.1:{service.http_port}/healthz"),
            )
        )
    _print_summary(supervisor, redis_server, postgres, services, var_dir, token_hint)
    write_stack_env(var_dir, _tool_env(common_env, services))


def _tool_env(common: dict[str, str], services: list[LocalService]) -> dict[str, str]:
    """What the command-line tools need to reach this stack (its-local env / exec)."""
    env = {"REDIS_URL": common["REDIS_URL"], "DATABASE_URL": common["DATABASE_URL"]}
    router = next((s for s in services if s.name == "router"), None)
    if router is not None:
        for key in ("ITS_POLYGON_REST_URL", "POLYGON_API_KEY"):
            if key in router.env:  # the simulator's local key only: a real one is never written
                env[key] = router.env[key]
    return env


EXTRA_PORTS = {
    "ITS_MARKETSIM_PORT": "marketsim websocket",
    "ITS_MARKETSIM_REST_PORT": "marketsim rest",
    "ITS_IBSIM_PORT": "ibsim api",
}


def _service_ports(services: list[LocalService]) -> dict[str, int]:
    """Every port the services listen on: HTTP, and the simulators' feed and API ports."""
    out = {service.name: service.http_port for service in services}
    for service in services:
        for key, name in EXTRA_PORTS.items():
            if key in service.env:
                out[name] = int(service.env[key])
    return out


def marketsim_env(var_dir: Path) -> dict[str, str]:
    """The simulator keeps its replay position here, so the next run continues from it."""
    return {"ITS_MARKETSIM_POSITION_PATH": str(var_dir / "marketsim" / "position.json")}


def _installed(services: list[LocalService]) -> list[LocalService]:
    return [service for service in services if service.executable() is not None]


def _migrate(url: str) -> Any:
    with psycopg.connect(url) as conn:
        return apply_migrations(conn)


def _print_summary(
    supervisor: Supervisor,
    redis_server: RedisServer,
    postgres: PostgresServer,
    services: list[LocalService],
    var_dir: Path,
    token_hint: str = "",
) -> None:
    lines = [
        "",
        "ITS is running locally (Ctrl-C stops everything):",
        f"  redis        {redis_server.url}   (maxmemory 200mb, noeviction)",
        f"  postgres     {postgres.url}",
        f"  {'':<12} data: {postgres.pgdata}",
    ]
    for service in services:
        lines.append(
            f"  {service.name:<12} http://127.0.0.1:{service.http_port}/healthz  /readyz  /metrics"
        )
        for label, url in service.urls.items():
            if label == "dashboard":
                continue  # printed once, last
            lines.append(f"  {'':<12} {label}: {url}")
    dashboard = next((s for s in services if s.name == "dashboard"), None)
    lines.append(
        f"  dashboard    {dashboard.urls['dashboard']}"
        if dashboard
        else "  dashboard    not installed yet"
    )
    if dashboard and token_hint:
        lines.append(f"  {'':<12} kill switch token: {token_hint}")
    lines.append(f"  data and logs under {var_dir}")
    its_local = its_local_command()
    lines.append(
        f'  CLI tools    {its_local} exec its-loader audit   (or: eval "$({its_local} env)")'
    )
    for line in lines:
        supervisor.announce("its-local", line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="its-local", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="start the whole system locally")
    run_parser.add_argument("--var-dir", default=os.environ.get("ITS_VAR_DIR", "var"))
    # string defaults from the environment go through type=int too: a bad value is a usage error
    run_parser.add_argument(
        "--base-port",
        type=int,
        default=os.environ.get("ITS_LOCAL_BASE_PORT") or str(DEFAULT_BASE_PORT),
        help=f"every port of the stack at a fixed offset from this one (ITS_LOCAL_BASE_PORT, "
        f"make run BASE_PORT=N; default {DEFAULT_BASE_PORT}: redis 16379, postgres 15432, "
        f"services 18080-18090, simulator feed 18765/18766; {MIN_BASE_PORT}..{MAX_BASE_PORT})",
    )
    run_parser.add_argument(
        "--redis-port",
        type=int,
        default=os.environ.get("ITS_LOCAL_REDIS_PORT") or "0",
        help="Redis only (ITS_LOCAL_REDIS_PORT; default: base port - 1701)",
    )
    run_parser.add_argument(
        "--postgres-port",
        type=int,
        default=os.environ.get("ITS_LOCAL_POSTGRES_PORT") or "0",
        help="PostgreSQL only (ITS_LOCAL_POSTGRES_PORT; default: base port - 2648)",
    )
    run_parser.add_argument(
        "--only-infra", action="store_true", help="Redis and PostgreSQL only, no services"
    )
    env_parser = sub.add_parser(
        "env", help='print the running stack\'s settings as shell exports (eval "$(its-local env)")'
    )
    exec_parser = sub.add_parser(
        "exec", help="run a command against the running stack, e.g. its-local exec its-loader audit"
    )
    exec_parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND")
    for tool in (env_parser, exec_parser):
        tool.add_argument("--var-dir", default=os.environ.get("ITS_VAR_DIR", "var"))
    args = parser.parse_args(argv)
    args.var_dir = Path(args.var_dir).resolve()
    if args.command == "run":
        try:
            Ports(args.base_port)
        except ValueError as exc:
            parser.error(str(exc))
    if args.command in ("env", "exec"):
        return _tool(args)
    try:
        return asyncio.run(run(args))
    except ServerError as exc:
        print(f"its-local: {exc}", file=sys.stderr)
        return 1


def _tool(args: argparse.Namespace) -> int:
    try:
        env = read_stack_env(args.var_dir)
    except NoStackError as exc:
        print(f"its-local: {exc}", file=sys.stderr)
        return 2
    if args.command == "env":
        sys.stdout.write(shell_exports(env))
        return 0
    command = [a for a in args.argv if a != "--"] if args.argv[:1] == ["--"] else args.argv
    if not command:
        print(
            "its-local exec: give a command, e.g. its-local exec its-loader audit", file=sys.stderr
        )
        return 2
    try:
        exec_with(env, command)
    except OSError as exc:
        print(f"its-local exec: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        return 127
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
