"""Install a project's dependencies into the image's venv, constrained by requirements.lock.

Used by every Dockerfile before the project's own code is copied in, so the dependency layer is
cached until the lock or the pyproject.toml changes. A service's ``its-common[extra]`` is
replaced by the extra's dependencies (its-common itself and its own dependencies are in the base
image already, built once). Any further arguments go to pip (e.g. ``--extra-index-url``).

    python install_deps.py PYPROJECT [--common ITS_COMMON_PYPROJECT] [--constraints LOCK]
                           [--dry-run] [PIP ARGS...]
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

COMMON = "its-common"
NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _project(path: Path) -> dict[str, object]:
    project: dict[str, object] = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
    return project


def requirements(pyproject: Path, common: Path | None) -> list[str]:
    """The requirement strings to install for ``pyproject`` (its-common's extras expanded)."""
    extras: dict[str, list[str]] = {}
    if common is not None:
        extras = dict(_project(common).get("optional-dependencies", {}))  # type: ignore[call-overload]
    out: list[str] = []
    for requirement in _project(pyproject).get("dependencies", []):  # type: ignore[attr-defined]
        match = NAME.match(requirement)
        if match is None:
            raise SystemExit(f"{pyproject}: cannot read the requirement {requirement!r}")
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        if name != COMMON:
            out.append(requirement)
            continue
        for extra in filter(None, (e.strip() for e in (match.group(2) or "").split(","))):
            if extra not in extras:
                raise SystemExit(f"{pyproject}: its-common has no extra {extra!r}")
            out.extend(extras[extra])
    return list(dict.fromkeys(out))  # once each, in order


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--common", type=Path, default=None, help="its-common's pyproject.toml")
    parser.add_argument("--constraints", type=Path, default=None, help="requirements.lock")
    parser.add_argument("--dry-run", action="store_true", help="print the pip command only")
    args, pip_args = parser.parse_known_args(argv)
    reqs = requirements(args.pyproject, args.common)
    command = [sys.executable, "-m", "pip", "install", "--no-cache-dir"]
    if args.constraints is not None:
        command += ["--constraint", str(args.constraints)]
    command += [*pip_args, *reqs]
    print(shlex.join(command), flush=True)
    if args.dry_run or not reqs:
        return 0
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
