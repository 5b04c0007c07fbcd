"""Hand large numpy arrays from the generator process to the simulator without copying them.

A day is hundreds of MB of arrays. Pickled through a pipe, the receiving process copies them
while holding the GIL (about 0.3 s for a 6-million-trade day: a pause of every stream). Here
:func:`dumps` writes each large array to a ``.npy`` file in a folder the simulator owns (in
``/dev/shm`` when it has room, else the temp dir) and pickles only a reference; :func:`loads`
maps each file copy-on-write and unlinks it at once, so the pages belong to the mapping alone
and go when the arrays do. Nothing is copied under the GIL; pages are faulted in as read.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tempfile
import uuid
from typing import Any

import numpy as np

MIN_FILE_BYTES = 1 << 20  # smaller arrays travel inside the pickle
SHM = "/dev/shm"
PREFIX = "its-marketsim-days-"  # then the owner's pid
SHM_MIN_FREE = 4 << 30  # container /dev/shm is often 64 MB: use it only when it has room


def folder() -> str:
    """A new private folder for one simulator's handovers (remove it with :func:`remove`)."""
    base = tempfile.gettempdir()
    if os.path.isdir(SHM) and os.access(SHM, os.W_OK):
        try:
            if shutil.disk_usage(SHM).free >= SHM_MIN_FREE:
                base = SHM
        except OSError:
            pass
    _remove_orphans(base)
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base)


def _remove_orphans(base: str) -> None:
    """Folders left by simulators that were killed (SIGKILL: no stop) are removed."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            remove(os.path.join(base, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class _FilePickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, where: str) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.where = where

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray) and obj.nbytes >= MIN_FILE_BYTES and not obj.dtype.hasobject:
            path = os.path.join(self.where, f"{uuid.uuid4().hex}.npy")
            np.save(path, obj, allow_pickle=False)
            return _mapped, (path,)
        return NotImplemented


def dumps(obj: Any, where: str) -> bytes:
    """``obj`` pickled, its large arrays written to files in ``where``."""
    buffer = io.BytesIO()
    _FilePickler(buffer, where).dump(obj)
    return buffer.getvalue()


def loads(payload: bytes) -> Any:
    """The object of :func:`dumps`, its large arrays mapped from their files (then unlinked)."""
    return pickle.loads(payload)


def _mapped(path: str) -> np.ndarray[Any, Any]:
    try:
        array: np.ndarray[Any, Any] = np.load(path, mmap_mode="c", allow_pickle=False)
        return array
    finally:
        os.unlink(path)
