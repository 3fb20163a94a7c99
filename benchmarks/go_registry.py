"""The Go MCP Mesh registry and meshctl from the published npm package, fetched once.

Shared by the compatibility tests (meshctl, resolution parity) and the benchmarks (the
registry we compare against). Cached in ``.npm-compat/`` at the repository root.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI_PACKAGE = "@mcpmesh/cli-linux-x64@3.7"
BINARIES = ROOT / ".npm-compat" / "package" / "bin"


def ensure_go_registry() -> tuple[Path | None, str]:
    """``(directory holding mcp-mesh-registry and meshctl, "")``, or ``(None, why not)``."""
    if (BINARIES / "meshctl").exists():
        return BINARIES, ""
    if shutil.which("npm") is None:
        return None, "npm is not installed: cannot fetch meshctl and the Go registry"
    target = BINARIES.parents[1]
    target.mkdir(exist_ok=True)
    packed = subprocess.run(
        ["npm", "pack", CLI_PACKAGE], cwd=target, capture_output=True, text=True, timeout=600
    )
    if packed.returncode != 0:
        return None, f"npm registry unreachable: {packed.stderr[-300:]}"
    tarball = packed.stdout.strip().splitlines()[-1]
    subprocess.run(["tar", "xzf", tarball], cwd=target, check=True)
    return BINARIES, ""
