"""A FUSE filesystem that forgets, on a power loss, every write not yet fsynced.

Killing a process (SIGKILL) cannot show a missing fsync: the kernel's page cache outlives the
process, so everything written reaches the disk anyway. A power loss does not keep it. This
filesystem mirrors a backing directory and keeps each file's data written since that file's
last ``fsync``/``fdatasync`` in this process's memory only; reads see it, the backing directory
does not. Killing this process (SIGKILL) and unmounting is the power loss: the unsynced data is
gone, and the page cache of the mount goes with the unmount. What was synced is in the backing
directory, and a new mount over it is the machine after the power came back.

The model, in the spirit of Jepsen's lazyfs, is simpler than a real disk but no kinder than
POSIX: data (and file size) is lazy, per file, at page granularity, until the file is synced;
the namespace (create, mkdir, rename, unlink, rmdir) is lazy per directory, until that
directory is synced (``fsync`` of the directory: a rename is durable once its target's
directory is). A file created and fsynced in a directory never synced is gone after a power
loss, as a filesystem is allowed to lose it. Namespace changes go to the backing directory at
once (so reads and listings see them) and, first, to an undo log beside it (``<backing>.undo``,
fsynced, with hard links under ``<backing>.stash`` to what an unlink or a rename over a file
would destroy); syncing a directory drops its entries, and the next mount undoes the rest,
newest first, before it serves anything.

Run as ``python -m jepsen_like.lazyfs BACKING MOUNTPOINT`` (root, /dev/fuse; in the foreground
until unmounted or killed). :class:`Mount` does that from a test or a nemesis.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mfusepy as fuse

from registry.store import sync_directory

PAGE = 4096


@dataclass
class Unsynced:
    """A file's data since its last sync: changed pages, its size now, and how much of the
    synced file still shows through (a truncation hides what lies past it, even if the file
    grows again)."""

    size: int
    valid: int
    pages: dict[int, bytearray] = field(default_factory=dict)


def _parent(path: str) -> str:
    """The directory whose sync makes a change of ``path``'s entry durable."""
    return os.path.dirname(path.rstrip("/")) or "/"


class UndoLog:
    """The namespace changes not yet made durable by a sync of their directories, on the real
    disk beside the backing directory, so a later mount can take them back.

    An entry is durable once every directory it changed was synced: its parent's, and for a
    rename across directories both. A durable ``rmdir`` also ends the entries below the
    directory it removed (the names they would restore are gone for good). Not modelled: the
    entries below a renamed directory keep its old path (the registry renames no directory)."""

    def __init__(self, backing: str) -> None:
        self.path = f"{backing}.undo"
        self.stash_dir = f"{backing}.stash"
        self.entries: list[dict[str, Any]] = []
        self._stashed = 0

    def record(self, entry: dict[str, Any], directories: list[str]) -> None:
        """Write ``entry`` (durable once ``directories`` are synced) before the change it
        undoes is made."""
        self.entries.append({**entry, "dirs": sorted(set(directories))})
        with open(self.path, "a") as log:
            log.write(json.dumps(self.entries[-1]) + "\n")
            log.flush()
            os.fsync(log.fileno())

    @contextlib.contextmanager
    def change(self, entry: dict[str, Any], *directories: str) -> Iterator[None]:
        """Record ``entry``, then make the change (the ``with`` body); a change that fails
        (EEXIST, ENOTEMPTY, ...) is taken out of the log again, with what it stashed."""
        self.record(entry, list(directories))
        try:
            yield
        except OSError:
            self._drop([self.entries.pop()])
            self._rewrite()
            raise

    def stash(self, real: str) -> str:
        """A hard link to the file at ``real``, which the change about to be made destroys."""
        os.makedirs(self.stash_dir, exist_ok=True)
        self._stashed += 1
        kept = os.path.join(self.stash_dir, str(self._stashed))
        os.link(real, kept)
        return kept

    def synced(self, directory: str) -> None:
        """``directory`` was synced: the changes of its entries are durable now."""
        if not any(directory in e["dirs"] for e in self.entries):
            return
        durable: list[dict[str, Any]] = []
        for entry in self.entries:
            if directory in entry["dirs"]:
                entry["dirs"] = [d for d in entry["dirs"] if d != directory]
                if not entry["dirs"]:
                    durable.append(entry)
        gone = [e["path"].rstrip("/") + "/" for e in durable if e["op"] == "rmdir"]
        durable += [
            e
            for e in self.entries
            if e not in durable and any(e["path"].startswith(p) for p in gone)
        ]
        self._drop(durable)
        self.entries = [e for e in self.entries if e not in durable]
        self._rewrite()

    def recover(self, real: Any) -> None:
        """Take back, newest first, every change a power loss left undurable (``real`` maps a
        mount path to the backing directory's). Each undone change leaves the log at once, so a
        recovery cut short and run again never undoes one twice."""
        if os.path.exists(self.path):
            with open(self.path) as log:
                self.entries = [json.loads(line) for line in log if line.endswith("\n")]
        while self.entries:
            _undo(self.entries[-1], real)
            self.entries.pop()
            self._rewrite()
        shutil.rmtree(self.stash_dir, ignore_errors=True)
        self._rewrite()

    def discard(self) -> None:
        """Forget every change (the disk they were made on is gone)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        shutil.rmtree(self.stash_dir, ignore_errors=True)

    def _drop(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            if entry.get("stash"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry["stash"])

    def _rewrite(self) -> None:
        fresh = f"{self.path}.new"
        with open(fresh, "w") as log:
            log.writelines(json.dumps(e) + "\n" for e in self.entries)
            log.flush()
            os.fsync(log.fileno())
        os.replace(fresh, self.path)
        sync_directory(os.path.dirname(self.path))


def _undo(entry: dict[str, Any], real: Any) -> None:
    """Take back one namespace change (the log was written before the change: it may not have
    been made at all)."""
    path = real(entry["path"])
    op = entry["op"]
    with contextlib.suppress(FileNotFoundError, FileExistsError):
        if op == "create":
            os.unlink(path)
        elif op == "mkdir":
            shutil.rmtree(path)
        elif op == "rmdir":
            os.mkdir(path)
        elif op == "unlink":
            if not os.path.exists(path):
                os.link(entry["stash"], path)
        elif op == "rename":
            target = real(entry["to"])
            if os.path.lexists(target) and not os.path.lexists(path):
                os.rename(target, path)
            if entry["stash"] and not os.path.lexists(target):
                os.link(entry["stash"], target)


class LazyFS(fuse.Operations):  # type: ignore[misc]  # mfusepy is untyped
    """Passthrough to ``backing`` with file data held in memory until the file is synced."""

    use_ns = True

    def __init__(self, backing: str) -> None:
        self.backing = os.path.realpath(backing)
        self._mutex = threading.RLock()
        self.unsynced: dict[str, Unsynced] = {}
        self.undo = UndoLog(self.backing)
        self.undo.recover(self._real)

    def _real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _state(self, path: str) -> Unsynced:
        state = self.unsynced.get(path)
        if state is None:
            size = os.stat(self._real(path)).st_size
            state = self.unsynced[path] = Unsynced(size, size)
        return state

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self._mutex:
            st = os.lstat(self._real(path))
            attrs = {
                key: getattr(st, key)
                for key in (
                    "st_mode",
                    "st_nlink",
                    "st_uid",
                    "st_gid",
                    "st_size",
                    "st_atime_ns",
                    "st_mtime_ns",
                    "st_ctime_ns",
                )
            }
            for key in ("st_atime", "st_mtime", "st_ctime"):
                attrs[key] = attrs.pop(f"{key}_ns")
            state = self.unsynced.get(path)
            if state is not None:
                attrs["st_size"] = state.size
            return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._real(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            os.utime(self._real(path))
        else:
            os.utime(self._real(path), ns=times)
        return 0

    # -- namespace: applied at once, undone at the next mount unless its directory was synced --

    def mkdir(self, path: str, mode: int) -> int:
        with self._mutex, self.undo.change({"op": "mkdir", "path": path}, _parent(path)):
            os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        with self._mutex, self.undo.change({"op": "rmdir", "path": path}, _parent(path)):
            os.rmdir(self._real(path))
        return 0

    def unlink(self, path: str) -> int:
        with self._mutex:
            entry = {"op": "unlink", "path": path, "stash": self.undo.stash(self._real(path))}
            with self.undo.change(entry, _parent(path)):
                os.unlink(self._real(path))
            self.unsynced.pop(path, None)
        return 0

    def rename(self, old: str, new: str) -> int:
        with self._mutex:
            target = self._real(new)
            replaced = self.undo.stash(target) if os.path.isfile(target) else None
            entry = {"op": "rename", "path": old, "to": new, "stash": replaced}
            with self.undo.change(entry, _parent(old), _parent(new)):
                os.rename(self._real(old), target)
            self.unsynced.pop(new, None)
            moved = self.unsynced.pop(old, None)
            if moved is not None:
                self.unsynced[new] = moved
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._real(path))
        names = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files")
        return {key: getattr(st, key) for key in (*names, "f_flag", "f_frsize", "f_namemax")}

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        with self._mutex:
            self.undo.synced(path)
        return 0

    # -- data: lazy until fsync -------------------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        with self._mutex:
            fd = os.open(self._real(path), os.O_RDWR)
            if flags & os.O_TRUNC:
                self._truncate(path, 0)
            return fd

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        with self._mutex:
            real = self._real(path)
            if os.path.exists(real):
                fd = os.open(real, os.O_RDWR | os.O_CREAT, mode)
            else:
                with self.undo.change({"op": "create", "path": path}, _parent(path)):
                    fd = os.open(real, os.O_RDWR | os.O_CREAT, mode)
            self.unsynced.pop(path, None)
            return fd

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._mutex:
            state = self.unsynced.get(path)
            if state is None:
                return os.pread(fh, size, offset)
            end = min(offset + size, state.size)
            out = bytearray()
            position = offset
            while position < end:
                page, within = divmod(position, PAGE)
                take = min(PAGE - within, end - position)
                held = state.pages.get(page)
                if held is None:
                    held = self._synced_page(fh, state, page)
                out += held[within : within + take]
                position += take
            return bytes(out)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._mutex:
            state = self._state(path)
            position, written = offset, 0
            while written < len(data):
                page, within = divmod(position, PAGE)
                take = min(PAGE - within, len(data) - written)
                held = state.pages.get(page)
                if held is None:
                    held = state.pages[page] = self._synced_page(fh, state, page)
                held[within : within + take] = data[written : written + take]
                position += take
                written += take
            state.size = max(state.size, offset + len(data))
            return len(data)

    def _synced_page(self, fh: int, state: Unsynced, page: int) -> bytearray:
        """A page as the synced file shows it through ``state``, padded with zeros."""
        start = page * PAGE
        chunk = os.pread(fh, max(0, min(PAGE, state.valid - start)), start)
        return bytearray(chunk + bytes(PAGE - len(chunk)))

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self._mutex:
            self._truncate(path, length)
        return 0

    def _truncate(self, path: str, length: int) -> None:
        state = self._state(path)
        for page in [p for p in state.pages if p * PAGE >= length]:
            del state.pages[page]
        last = state.pages.get(length // PAGE)
        if last is not None:
            within = length % PAGE
            last[within:] = bytes(PAGE - within)
        state.valid = min(state.valid, length)
        state.size = length

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self._mutex:
            state = self.unsynced.pop(path, None)
            if state is not None:
                os.ftruncate(fh, state.valid)  # what a truncation hid reads as zeros again
                for page, data in sorted(state.pages.items()):
                    start = page * PAGE
                    if start < state.size:
                        os.pwrite(fh, bytes(data[: state.size - start]), start)
                os.ftruncate(fh, state.size)
            os.fsync(fh)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0  # close(2) syncs nothing

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0


class Mount:
    """A LazyFS process over ``backing`` at ``mountpoint``; ``power_loss`` drops unsynced data."""

    def __init__(self, backing: Path, mountpoint: Path) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Mount:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jepsen_like.lazyfs", str(self.backing), str(self.mountpoint)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None:
                error = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"lazyfs did not mount {self.mountpoint}: {error}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"lazyfs did not mount {self.mountpoint} within {timeout}s")
            time.sleep(0.02)
        return self

    def power_loss(self) -> None:
        """Lose everything not fsynced: kill the filesystem and detach the mount (its page
        cache with it). Processes with files open here must be killed first."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._detach()

    def replaced(self) -> Mount:
        """A new, empty disk mounted in this one's place (a PVC deleted and made again): what
        was on it is gone for good, and nothing a later power loss undoes brings it back."""
        self.power_loss()
        UndoLog(os.path.realpath(self.backing)).discard()  # first: never replayed on an empty disk
        shutil.rmtree(self.backing, ignore_errors=True)
        return Mount(self.backing, self.mountpoint).start()

    def stop(self) -> None:
        """A clean unmount (still nothing synced that was not fsynced: data stays lazy)."""
        self.power_loss()

    def _detach(self) -> None:
        if os.path.ismount(self.mountpoint) or _is_dead_mount(self.mountpoint):
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False, capture_output=True)


def _is_dead_mount(path: Path) -> bool:
    """A FUSE mount whose process is gone answers ENOTCONN."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def main() -> None:
    backing, mountpoint = sys.argv[1:3]
    fuse.FUSE(
        LazyFS(backing),
        mountpoint,
        foreground=True,
        nothreads=False,
        allow_other=True,
        fsname="lazyfs",
    )


if __name__ == "__main__":
    main()
