"""Where the command-line tools find the running local stack.

`its-local run` writes the connection settings of the stack it started to
``<var>/stack.json`` once everything is up and removes the file when it stops. ``its-local env``
prints them as shell exports and ``its-local exec CMD...`` runs a command with them, so
``its-local exec its-loader audit`` or ``its-local exec its-router set-symbols NVDA,MSFT,AAPL``
work against ``make run`` without exporting anything. Secrets are never written: a real
``POLYGON_API_KEY`` stays in the user's own environment (only the simulator's documented local
key is in the file).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import redis

STACK_FILE: Final = "stack.json"


class NoStackError(RuntimeError):
    """No local stack is running (or it cannot be reached)."""


def stack_file(var_dir: Path) -> Path:
    return var_dir / STACK_FILE


def write_stack_env(var_dir: Path, env: Mapping[str, str]) -> Path:
    path = stack_file(var_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(env), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def remove_stack_env(var_dir: Path) -> None:
    stack_file(var_dir).unlink(missing_ok=True)


def read_stack_env(var_dir: Path, check_redis: bool = True) -> dict[str, str]:
    """The running stack's settings; :class:`NoStackError` saying what to do otherwise."""
    path = stack_file(var_dir)
    if not path.is_file():
        raise NoStackError(
            f"no local stack is running ({path} does not exist): start it with `make run` "
            "(or `its-local run`) in another terminal"
        )
    env: dict[str, str] = {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
    if check_redis:
        client = redis.Redis.from_url(env["REDIS_URL"], socket_connect_timeout=2)
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            raise NoStackError(
                f"the local stack in {var_dir} does not answer ({env['REDIS_URL']}: {exc}); "
                "is `make run` still running?"
            ) from exc
        finally:
            client.close()
    return env


def shell_exports(env: Mapping[str, str]) -> str:
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in sorted(env.items()))


def exec_with(env: Mapping[str, str], argv: list[str]) -> None:
    """Replace this process with ``argv`` run with the stack's settings (the user's own
    environment wins for variables they set themselves, e.g. a real POLYGON_API_KEY).

    The virtualenv's ``bin`` comes first on ``PATH``, so ``.venv/bin/its-local exec its-loader
    audit`` finds ``its-loader`` without an activated virtualenv."""
    merged = {**env, **os.environ}
    venv_bin = str(Path(sys.executable).parent)
    merged["PATH"] = os.pathsep.join([venv_bin, *filter(None, [merged.get("PATH")])])
    os.execvpe(argv[0], argv, merged)


def its_local_command() -> str:
    """How to call ``its-local`` from here: bare when it is on ``PATH``, else its path (e.g.
    ``.venv/bin/its-local`` after `make run`, which does not activate the virtualenv)."""
    script = Path(sys.executable).parent / "its-local"
    if shutil.which("its-local") == str(script):
        return "its-local"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)
