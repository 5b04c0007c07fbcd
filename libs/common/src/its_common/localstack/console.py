"""The local stack's terminal output, which may go away while the stack runs.

With ``make run | tee log``, Ctrl-C reaches ``tee`` as well: it dies first, and every later write
to our stdout fails (``BrokenPipeError``; a closed terminal gives ``EIO``). Printing must never
abort the shutdown, so :class:`Console` stops writing to the stream on the first error, counts
what it drops, records the fact in the supervisor's own log file, and points the stream's file
descriptor at ``/dev/null`` so the interpreter's final flush cannot fail either. The per-process
log files (``var/logs/<name>.log``) and ``var/logs/supervisor.log`` keep everything.
"""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO


class Console:
    """Lines to a stream (the terminal or a pipe) until it breaks; the supervisor's log always."""

    def __init__(self, out: TextIO, log_file: Path) -> None:
        self.out = out
        self.log_file = log_file
        self.broken: OSError | None = None
        self.dropped = 0  # lines not printed since the stream broke
        self.record_errors = 0  # lines the log file could not take

    def print(self, line: str) -> None:
        if self.broken is not None:
            self.dropped += 1
            return
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except OSError as exc:  # BrokenPipeError, EIO: the reader or the terminal is gone
            self.broken = exc
            self.dropped += 1
            detached = _detach(self.out)
            self.record(
                f"stdout is gone ({type(exc).__name__}: {exc}); output continues in "
                f"{self.log_file.parent} only"
                + ("" if detached else " (stdout could not be pointed at /dev/null)")
            )

    def record(self, line: str) -> None:
        """Append one line to the supervisor's log file (created with its directory).

        A failing log file (disk full, directory removed) must not abort a shutdown either: the
        failure is counted in ``record_errors`` and said once on stderr.
        """
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        try:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with self.log_file.open("a", encoding="utf-8") as log:
                log.write(f"{stamp} {line}\n")
        except OSError as exc:
            self.record_errors += 1
            if self.record_errors == 1:
                with contextlib.suppress(OSError):  # stderr gone too: the count is what is left
                    print(f"its-local: cannot write {self.log_file}: {exc}", file=sys.stderr)


def _detach(out: TextIO) -> bool:
    """Point ``out``'s descriptor at /dev/null: its pending buffer and the exit flush succeed."""
    try:
        fd = out.fileno()
    except (OSError, ValueError):  # not a file (io.StringIO) or closed: nothing flushes at exit
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    return True
