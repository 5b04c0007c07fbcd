"""The kill-switch token of the local dashboard.

`its-local run` gives the dashboard a token so its kill switch works without any setup: the
user's own ``ITS_DASHBOARD_TOKEN`` / ``ITS_DASHBOARD_TOKEN_FILE`` when exported, otherwise one
generated once into ``<var>/dashboard-token`` (mode 0600, reused by later runs) and passed as
``ITS_DASHBOARD_TOKEN_FILE``, so the secret is in no process environment, no log and no console
line: the start-up summary prints the file's path (the console is mirrored into
``var/logs/supervisor.log`` and often into ``make run | tee``).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Final

TOKEN_FILE: Final = "dashboard-token"
USER_SETTINGS: Final = ("ITS_DASHBOARD_TOKEN", "ITS_DASHBOARD_TOKEN_FILE")


def dashboard_token(
    var_dir: Path, environ: dict[str, str] | None = None
) -> tuple[dict[str, str], str]:
    """``(env for the dashboard, where the token is)``."""
    environ = dict(os.environ) if environ is None else environ
    for name in USER_SETTINGS:
        if environ.get(name):
            return {}, f"the {name} you exported"
    path = var_dir / TOKEN_FILE
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
    elif stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)  # a copy or an umask made it readable by others: not any more
    return {"ITS_DASHBOARD_TOKEN_FILE": str(path.resolve())}, f"cat {path}"
