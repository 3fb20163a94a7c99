"""A network namespace of its own for a test, and code run inside it from this process.

Some binaries under test listen on every interface with no option to change that (MCP Mesh's
``meshui``). Started inside a namespace that has only its own loopback, "every interface" is
that loopback, so nothing they open is reachable from, or collides with, the machine's network.

:func:`run_inside` runs a coroutine on a thread of its own that has joined the namespace
(``setns`` changes only the calling thread): the sockets it opens and the processes it starts
(children inherit the thread's namespace) are all inside, while the test's own thread stays out.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000


def why_not() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed (.ci/run installs it)"
    return None


@contextmanager
def namespace(name: str) -> Iterator[str]:
    """A namespace with its loopback up; on leaving, every process still in it is killed and
    the namespace deleted."""
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
        for pid in pids.stdout.split():
            subprocess.run(["kill", "-9", pid], check=False)
        subprocess.run(["ip", "netns", "del", name], check=False)


def run_inside(name: str, work: Callable[[], Awaitable[T]]) -> T:
    """``await work()`` on a new event loop in a thread that has joined namespace ``name``."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(Path("/run/netns") / name, os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                failure.append(OSError(ctypes.get_errno(), f"setns into {name} failed"))
                return
        finally:
            os.close(fd)
        try:
            outcome.append(asyncio.run(work()))  # type: ignore[arg-type]
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{name}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
