"""Process-wide registry of secret values that must never be printed.

Settings register their secrets at load; the log formatter and error reporters pass text through
:func:`redact`. Values shorter than 4 characters are not registered (they would mangle text).
"""

from __future__ import annotations

import threading

MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()


def register(*values: str) -> None:
    with _lock:
        _secrets.update(value for value in values if len(value) >= 4)


def redact(text: str) -> str:
    if not _secrets:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def clear() -> None:
    """Forget every registered secret (tests)."""
    with _lock:
        _secrets.clear()
