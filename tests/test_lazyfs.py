"""jepsen_like/lazyfs.py: a real FUSE mount that loses unsynced data on a power loss.

What makes it worth having: a SIGKILL never shows a missing fsync (the page cache outlives the
process), this does, and it shows a synced write surviving.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from jepsen_like.lazyfs import Mount, UndoLog
from registry.store import sync_directory

PROBLEM = (
    "needs root"
    if os.geteuid() != 0
    else "no /dev/fuse"
    if not os.path.exists("/dev/fuse")
    else "fusermount3/libfuse3 missing (apt-get install -y fuse3)"
    if shutil.which("fusermount3") is None
    else None
)
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"lazyfs unavailable: {PROBLEM}")


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    made = Mount(tmp_path / "disk", tmp_path / "mnt").start()
    yield made
    made.power_loss()


def _remount(mount: Mount) -> Mount:
    mount.power_loss()
    return Mount(mount.backing, mount.mountpoint).start()


def test_unsynced_data_is_lost_and_synced_data_survives(mount: Mount) -> None:
    synced, lazy = mount.mountpoint / "synced", mount.mountpoint / "lazy"
    with open(synced, "wb") as out:
        out.write(b"a" * 10_000)
        out.flush()
        os.fsync(out.fileno())
        out.write(b"b" * 100)  # after the sync: lost
    with open(lazy, "wb") as out:
        out.write(b"never synced")
    sync_directory(str(mount.mountpoint))  # both names are durable; lazy's data is not
    assert lazy.read_bytes() == b"never synced"  # readers see it before the power loss
    assert (mount.backing / "lazy").read_bytes() == b""
    mount = _remount(mount)
    assert synced.read_bytes() == b"a" * 10_000
    assert lazy.read_bytes() == b""  # its name was synced, its data never was
    mount.power_loss()


def test_overwrites_truncation_and_reads_across_pages(mount: Mount) -> None:
    path = mount.mountpoint / "f"
    with open(path, "wb") as out:
        out.write(bytes(range(256)) * 64)  # 16 KiB
        os.fsync(out.fileno())
    sync_directory(str(mount.mountpoint))
    with open(path, "r+b") as f:
        f.seek(4000)
        f.write(b"X" * 200)  # spans a page boundary
        f.truncate(6000)
        f.truncate(9000)  # grows again: 6000..9000 reads as zeros
        f.flush()
        expected = (bytes(range(256)) * 64)[:4000] + b"X" * 200
        expected += (bytes(range(256)) * 64)[4200:6000] + bytes(3000)
        f.seek(0)
        assert f.read() == expected
        os.fsync(f.fileno())
    mount = _remount(mount)
    assert path.read_bytes() == expected
    mount.power_loss()


def test_lmdb_with_sync_survives_and_without_sync_does_not(mount: Mount) -> None:
    script = (
        "import lmdb, sys\n"
        "env = lmdb.open(sys.argv[1], sync=sys.argv[2] == 'sync', map_size=1 << 24)\n"
        "with env.begin(write=True) as txn:\n"
        "    txn.put(b'key', sys.argv[2].encode())\n"
        "env.close()\n"
    )
    for mode in ("sync", "nosync"):
        (mount.mountpoint / mode).mkdir()
        subprocess.run([sys.executable, "-c", script, str(mount.mountpoint / mode), mode], check=1)
        sync_directory(str(mount.mountpoint / mode))  # LMDB's files exist either way
    sync_directory(str(mount.mountpoint))
    mount = _remount(mount)
    for mode, expected in (("sync", b"sync"), ("nosync", None)):
        env = lmdb.open(str(mount.mountpoint / mode), map_size=1 << 24)
        with env.begin() as txn:
            assert txn.get(b"key") == expected, mode
        env.close()
    mount.power_loss()


def test_a_name_is_durable_only_once_its_directory_is_synced(mount: Mount) -> None:
    """Creating, renaming over and removing files, and making a directory: after a power
    loss, exactly the changes whose directory was synced remain. A file whose own data was
    synced is gone if its name never was (POSIX allows it, and a registry that acknowledged
    writes kept in it would lose them)."""
    root, sub = mount.mountpoint, mount.mountpoint / "sub"
    (root / "kept").write_bytes(b"old")
    (root / "doomed").write_bytes(b"doomed")
    for name in ("kept", "doomed"):
        with open(root / name, "r+b") as f:
            os.fsync(f.fileno())
    sync_directory(str(root))  # the starting point, all durable
    with open(root / "fresh", "wb") as out:  # data synced, name not
        out.write(b"fresh")
        out.flush()
        os.fsync(out.fileno())
    with open(root / "next", "wb") as out:
        out.write(b"new")
        out.flush()
        os.fsync(out.fileno())
    os.rename(root / "next", root / "kept")  # over a file, not synced
    os.unlink(root / "doomed")  # not synced
    sub.mkdir()
    (sub / "inside").write_bytes(b"x")
    sync_directory(str(sub))  # its entries are durable, its own name is not
    assert sorted(os.listdir(root)) == ["fresh", "kept", "sub"]
    mount = _remount(mount)
    assert sorted(os.listdir(root)) == ["doomed", "kept"]
    assert (root / "kept").read_bytes() == b"old"
    assert (root / "doomed").read_bytes() == b"doomed"
    # The same again, synced this time: every change stays.
    with open(root / "next", "wb") as out:
        out.write(b"new")
        out.flush()
        os.fsync(out.fileno())
    os.rename(root / "next", root / "kept")
    os.unlink(root / "doomed")
    sub.mkdir()
    sync_directory(str(root))
    mount = _remount(mount)
    assert sorted(os.listdir(root)) == ["kept", "sub"]
    assert (root / "kept").read_bytes() == b"new"
    mount.power_loss()


class _Crash(Exception):
    """The lazyfs process dying in the middle of its recovery."""


def test_a_recovery_cut_short_and_run_again_undoes_each_change_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/a`` durable; unsynced: ``rename /a -> /b``, then a new ``/a``. Recovery puts the
    original back at ``/a`` however often it is cut short and started again (undoing the new
    ``/a``'s creation twice would delete the restored original)."""
    backing = tmp_path / "disk"

    def real(path: str) -> str:
        return str(backing / path.lstrip("/"))

    real_rewrite = UndoLog._rewrite
    for survives in range(4):  # how many log rewrites the first attempt gets through
        shutil.rmtree(backing, ignore_errors=True)
        backing.mkdir()
        (backing / "a").write_text("orig")
        log = UndoLog(str(backing))
        log.record({"op": "rename", "path": "/a", "to": "/b", "stash": None}, ["/"])
        os.rename(backing / "a", backing / "b")
        log.record({"op": "create", "path": "/a"}, ["/"])
        (backing / "a").write_text("new")
        calls = 0

        def crashing(self: UndoLog, survives: int = survives) -> None:
            nonlocal calls
            if calls == survives:
                raise _Crash
            calls += 1
            real_rewrite(self)

        monkeypatch.setattr(UndoLog, "_rewrite", crashing)
        with contextlib.suppress(_Crash):
            UndoLog(str(backing)).recover(real)
        monkeypatch.setattr(UndoLog, "_rewrite", real_rewrite)
        UndoLog(str(backing)).recover(real)
        assert sorted(os.listdir(backing)) == ["a"], survives
        assert (backing / "a").read_text() == "orig", survives


def test_a_durable_rmdir_ends_what_was_pending_below_it(mount: Mount) -> None:
    """A file removed from a directory, the directory removed and made again, all synced but
    the file's own removal: after a power loss the new directory is empty (the name the file
    had is gone with the old directory), and a rename across directories needs both synced."""
    root, d = mount.mountpoint, mount.mountpoint / "d"
    d.mkdir()
    sync_directory(str(root))
    (d / "x").write_bytes(b"x")
    sync_directory(str(d))
    os.unlink(d / "x")  # pending in /d, which is about to go
    d.rmdir()
    sync_directory(str(root))
    d.mkdir()
    sync_directory(str(root))
    with open(root / "moved", "wb") as out:
        out.write(b"m")
        out.flush()
        os.fsync(out.fileno())
    sync_directory(str(root))
    os.rename(root / "moved", d / "moved")
    sync_directory(str(d))  # the target's directory only: the old name may come back
    mount = _remount(mount)
    assert os.listdir(d) == []
    assert (root / "moved").read_bytes() == b"m"
    mount.power_loss()
