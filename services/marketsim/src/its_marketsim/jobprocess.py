"""One child process that runs jobs one after another and replies over a pipe of its own.

Why not :class:`concurrent.futures.ProcessPoolExecutor`: its parent holds the write end of the
result pipe as well, so a worker that dies in the middle of a reply (terminated at stop, killed)
leaves the pool's manager thread waiting for the rest of that reply for ever, and the interpreter
joins that thread at exit (CI hung after its last test). Here only the child holds the write end:
its death is an end of file, every job still waiting fails with :class:`JobProcessGoneError`, and
the thread that reads the replies is a daemon that ends with the pipe.

The child is started with ``spawn`` (no copy of the parent's state, no fork of its threads) at
the first job, and ends by itself when the parent is gone (its end of the pipe closes).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import multiprocessing
import pickle
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, NamedTuple

log = logging.getLogger("its.marketsim.jobprocess")
STOP_JOIN_S = 30.0


class JobProcessGoneError(RuntimeError):
    """The child process ended (stopped, killed or crashed) before it replied."""


class RemoteTracebackError(Exception):
    """The traceback of a job's exception, as the child printed it (the exception's cause)."""

    def __str__(self) -> str:
        return str(self.args[0])


class _Child(NamedTuple):
    process: BaseProcess
    connection: Connection  # the parent's end
    reader: threading.Thread  # reads the replies


class JobProcess:
    """A child process running ``fn(*args)`` jobs in order (see the module docstring)."""

    def __init__(
        self, name: str, initializer: Callable[..., None], initargs: tuple[Any, ...] = ()
    ) -> None:
        self.name = name
        self._initializer = initializer
        self._initargs = initargs
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._pending: dict[int, concurrent.futures.Future[Any]] = {}
        self._child: _Child | None = None  # from the first job on
        self._stopped = False
        self._gone: JobProcessGoneError | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id (None before the first job and after stop)."""
        child = self._child
        return child.process.pid if child is not None and not self._stopped else None

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Queue ``fn(*args)`` for the child (``fn`` importable there); its reply settles the
        future, or :class:`JobProcessGoneError` if the child ends first."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._stopped:
                raise JobProcessGoneError(f"{self.name} is stopped")
            if self._gone is not None:
                raise self._gone
            connection = (self._child or self._start()).connection
            job = next(self._ids)
            self._pending[job] = future
            try:
                connection.send((job, fn, args))
            except OSError as error:
                del self._pending[job]
                raise JobProcessGoneError(f"{self.name} ended: {error}") from error
        return future

    def _start(self) -> _Child:
        context = multiprocessing.get_context("spawn")
        mine, theirs = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(theirs, self._initializer, self._initargs),
            name=self.name,
            daemon=True,  # ended by multiprocessing if this process exits without stop()
        )
        process.start()
        theirs.close()  # the child's end lives in the child only: its death is our end of file
        reader = threading.Thread(
            target=self._read, args=(mine, process), name=f"{self.name}-replies", daemon=True
        )
        reader.start()
        self._child = _Child(process, mine, reader)
        return self._child

    def _read(self, connection: Connection, process: BaseProcess) -> None:
        try:
            while True:
                job, ok, value, remote = connection.recv()
                with self._lock:
                    future = self._pending.pop(job)
                if not future.set_running_or_notify_cancel():
                    continue  # cancelled by its caller meanwhile: the reply is not wanted
                if ok:
                    future.set_result(value)
                else:
                    value.__cause__ = RemoteTracebackError(remote)
                    future.set_exception(value)
        except Exception as error:  # the child ended (maybe in the middle of a reply)
            if process.is_alive():  # a reply that could not be read: the child is no use
                process.terminate()
            process.join(STOP_JOIN_S)
            gone = JobProcessGoneError(
                f"{self.name} ended (exit code {process.exitcode}): {error!r}"
            )
            with self._lock:
                self._gone = gone
                waiting, self._pending = list(self._pending.values()), {}
                stopped = self._stopped
            if not stopped:
                log.error("%s ended with %d jobs waiting: %r", self.name, len(waiting), error)
            for future in waiting:
                if future.set_running_or_notify_cancel():
                    future.set_exception(gone)

    def stop(self) -> None:
        """End the child, even in the middle of a job (whose future fails); blocking."""
        with self._lock:
            self._stopped = True
            child = self._child
        if child is None:
            return
        process, connection, reader = child
        if process.is_alive():
            process.terminate()
        process.join(STOP_JOIN_S)
        if process.is_alive():
            process.kill()
            process.join()
        reader.join(STOP_JOIN_S)  # at the child's end of file
        if reader.is_alive():
            log.error("the reply reader of %s did not end after the child", self.name)
        else:
            connection.close()


def _serve(
    connection: Connection, initializer: Callable[..., None], initargs: tuple[Any, ...]
) -> None:
    """In the child: run the jobs in order until the parent's end of the pipe closes."""
    initializer(*initargs)
    while True:
        try:
            job, fn, args = connection.recv()
        except (EOFError, OSError):  # the parent stopped us or is gone
            return
        reply: tuple[int, bool, Any, str | None]
        try:
            reply = (job, True, fn(*args), None)
        except BaseException as error:  # sent back to the caller, not swallowed
            reply = (job, False, _picklable(error), traceback.format_exc())
        try:
            connection.send(reply)
        except OSError:  # the parent is gone
            return
        except Exception as error:  # a result that cannot be pickled (nothing was written)
            failed = RuntimeError(f"the reply of {fn!r} could not be pickled: {error}")
            connection.send((job, False, failed, traceback.format_exc()))


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error
