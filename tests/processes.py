"""Real registry processes on loopback ports, for process and cluster tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.ports import free_port
from tests.timing import scaled

CLUSTER_KEY = "cluster-test-key-0123456789abcdef"
"""The ENCRYPTION_KEY of the test clusters (cluster mode needs at least 32 bytes)."""


def _stopped(task: Path) -> bool:
    """Whether a thread (a /proc/PID/task entry) is stopped by a signal, or gone."""
    try:
        stat = (task / "stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("T", "t")


class Registry:
    """``python -m registry`` on loopback ports with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "REGISTRY_HOST": "127.0.0.1",
            "REGISTRY_PORT": str(self.port),
            "METRICS_PORT": str(self.metrics_port),
            "DATA_DIR": str(data_dir),
            "DATABASE_PATH": str(data_dir / "registry.db"),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}-{self.port}.log"

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it to listen (it may be meant to stop first)."""
        # Logs go to a file: an unread pipe would fill up and stall the server.
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:  # restarts append to the same log
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "registry"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        return self.proc

    def start(self) -> Registry:
        self.launch()
        assert self.proc is not None
        deadline = time.monotonic() + scaled(20)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(self.log_path.read_text())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("registry did not start listening")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the process holds its sockets open but answers nothing (a stalled pod).

        Returns once every thread is stopped: a signal is delivered asynchronously, and a
        thread still running on the other core could acknowledge one more entry after the
        caller believes the process paused."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.proc.pid}/task")
        deadline = time.monotonic() + scaled(5)
        while not all(_stopped(task) for task in tasks.iterdir()):
            if time.monotonic() > deadline:
                raise AssertionError(f"pid {self.proc.pid} did not stop after SIGSTOP")
            time.sleep(0.001)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def log(self) -> str:
        """Everything this registry (and its earlier runs on the same port) wrote to stderr."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        return self.proc.returncode
