"""The generator's child process (:mod:`its_marketsim.jobprocess`): replies and errors come back,
and a child that dies (even in the middle of a reply) fails what waits on it, leaves no thread
behind and never holds up the exit of the process that started it (CI hung there once)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from its_marketsim.jobprocess import JobProcess, JobProcessGoneError, RemoteTracebackError

REPO = Path(__file__).resolve().parents[2]


def _nothing() -> None:
    """The child's initializer."""


def _fail(message: str) -> None:
    raise ValueError(message)


def _torn_reply() -> None:
    """In the child: start a reply of 1 MiB, write 7 bytes of it, die (a kill mid-reply)."""
    sockets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                sockets.append(int(fd))
        except FileNotFoundError:  # the descriptor of the listing itself, closed since
            continue
    assert len(sockets) == 1, sockets  # the pipe to the parent is the child's only socket
    os.write(sockets[0], struct.pack("!i", 1 << 20) + b"partial")
    os._exit(3)


def _replies_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith("-replies") and t.is_alive()]


def _ended(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_a_job_s_result_and_its_error_come_back_in_order() -> None:
    jobs = JobProcess("test-jobs", _nothing)
    try:
        assert jobs.pid is None  # started by the first job
        first, second, third = (jobs.submit(pow, 2, 10), jobs.submit(_fail, "no luck"),
                                jobs.submit(divmod, 7, 2))  # fmt: skip
        assert first.result(60) == 1024
        with pytest.raises(ValueError, match="no luck") as raised:
            second.result(60)
        assert isinstance(raised.value.__cause__, RemoteTracebackError)
        assert "_fail" in str(raised.value.__cause__)  # where it failed, in the child
        assert third.result(60) == (3, 1)  # the child goes on after a failed job
    finally:
        jobs.stop()


def test_a_job_cancelled_by_its_caller_leaves_the_others_alone() -> None:
    # an asyncio caller cancelled (asyncio.wrap_future) cancels the job's future: its reply
    # must be dropped, not break the reader (set_result on a cancelled future raises)
    jobs = JobProcess("test-cancel", _nothing)
    try:
        assert jobs.submit(pow, 2, 2).result(60) == 4
        slow, after = jobs.submit(time.sleep, 0.5), jobs.submit(pow, 2, 5)
        assert slow.cancel()
        assert after.result(60) == 32
        assert jobs.submit(pow, 2, 6).result(60) == 64
    finally:
        jobs.stop()


def test_a_child_dead_in_the_middle_of_a_reply_fails_every_waiting_job() -> None:
    jobs = JobProcess("test-torn", _nothing)
    try:
        torn, after = jobs.submit(_torn_reply), jobs.submit(pow, 2, 2)
        for job in (torn, after):
            with pytest.raises(JobProcessGoneError, match="exit code 3"):
                job.result(60)
        with pytest.raises(JobProcessGoneError):
            jobs.submit(pow, 2, 3)  # refused at once, never left waiting
        assert not _replies_threads()  # the reader ended with the pipe
    finally:
        jobs.stop()


def test_stop_in_the_middle_of_a_job_ends_the_child_and_fails_the_job() -> None:
    jobs = JobProcess("test-stop", _nothing)
    assert jobs.submit(pow, 2, 2).result(60) == 4  # the child is up
    running, queued = jobs.submit(time.sleep, 120), jobs.submit(pow, 2, 3)
    pid = jobs.pid
    assert pid is not None
    jobs.stop()
    for job in (running, queued):
        with pytest.raises(JobProcessGoneError):
            job.result(10)
    assert _ended(pid) and jobs.pid is None and not _replies_threads()


SCRIPT = """
import sys
from its_marketsim.jobprocess import JobProcess, JobProcessGoneError
from tests.marketsim.test_jobprocess import _nothing, _torn_reply
jobs = JobProcess("exit-test", _nothing)
try:
    jobs.submit(_torn_reply).result(60)
except JobProcessGoneError:
    print("gone", flush=True)
# no stop(): the interpreter must still exit
"""


def test_a_torn_reply_never_holds_up_the_exit_of_the_parent() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "gone"
