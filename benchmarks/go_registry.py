"""The Go MCP Mesh registry and meshctl from the published npm package, fetched once.

Shared by the compatibility tests (meshctl, resolution parity) and the benchmarks (the
registry we compare against). Cached in ``.npm-compat/`` at the repository root.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.compat.fetch_errors import registry_unreachable

ROOT = Path(__file__).resolve().parents[1]
CLI_VERSION = "3.7"
CLI_PACKAGE = f"@mcpmesh/cli-linux-x64@{CLI_VERSION}"
BINARIES = ROOT / ".npm-compat" / "package" / "bin"


def ensure_go_registry() -> tuple[Path | None, str]:
    """``(directory holding mcp-mesh-registry and meshctl, "")``, or ``(None, why not)`` when npm
    is missing or cannot reach its registry: the only reasons the comparison may not run.

    Raises RuntimeError when npm reached the registry and still failed, or the binaries do not
    run: that is a broken package, and calling it unavailable would hide it.
    """
    if not (BINARIES / "meshctl").exists():
        if shutil.which("npm") is None:
            return None, "npm is not installed: cannot fetch meshctl and the Go registry"
        target = BINARIES.parents[1]
        target.mkdir(exist_ok=True)
        packed = subprocess.run(
            ["npm", "pack", CLI_PACKAGE], cwd=target, capture_output=True, text=True, timeout=600
        )
        if packed.returncode != 0:
            if unreachable := registry_unreachable(packed.stderr):
                return None, f"npm registry unreachable ({unreachable})"
            raise RuntimeError(f"npm pack {CLI_PACKAGE} failed:\n{packed.stderr[-3000:]}")
        tarball = packed.stdout.strip().splitlines()[-1]
        subprocess.run(["tar", "xzf", tarball], cwd=target, check=True)
    for name in ("mcp-mesh-registry", "meshctl"):
        _check_runs(BINARIES / name)
    return BINARIES, ""


def _check_runs(binary: Path) -> None:
    """``binary --version`` answers with the pinned version (also catches a stale cache)."""
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=60
        )
    except OSError as exc:
        raise RuntimeError(f"{binary} from {CLI_PACKAGE} does not run: {exc}") from exc
    if done.returncode != 0 or f"v{CLI_VERSION}." not in done.stdout:
        raise RuntimeError(
            f"{binary} --version from {CLI_PACKAGE} exited {done.returncode}: "
            f"{(done.stdout + done.stderr)[-1000:]}"
        )
