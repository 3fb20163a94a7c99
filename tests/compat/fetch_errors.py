"""Did a package fetch fail because the package registry could not be reached?

The compatibility suite installs the published SDK with pip and the Go registry with npm. A
machine that cannot reach PyPI or npm cannot run those tests (a skip; a failure under CI=true,
tests/conftest.py), but every other failed fetch is a finding: the pinned version missing, a
dependency conflict, an sdist that does not build. Both tools report those with wording that a
loose match confuses with the network ("Could not find a version that satisfies the requirement"
is also what pip prints when the index was unreachable), so the network is recognised only by
the messages pip (urllib3) and npm (node) print for a failed connection.
"""

from __future__ import annotations

import re

# The cause, and the messages each tool prints for it. pip prints urllib3's error in its
# "Retrying (...) after connection broken by ..." warnings; npm prints node's error code.
NETWORK_CAUSES: dict[str, re.Pattern[str]] = {
    "connection refused": re.compile(r"\[Errno 111\] Connection refused|\bECONNREFUSED\b"),
    "name resolution failed": re.compile(
        r"NameResolutionError|Temporary failure in name resolution|Name or service not known"
        r"|getaddrinfo (?:ENOTFOUND|EAI_AGAIN)\b"
    ),
    "timed out": re.compile(
        r"ReadTimeoutError|ConnectTimeoutError|Read timed out|\[Errno 110\] Connection timed out"
        r"|npm error network timeout at:|\bETIMEDOUT\b"
    ),
    "network unreachable": re.compile(r"\[Errno 101\] Network is unreachable|\bENETUNREACH\b"),
}
# Proof that the registry did answer, whatever retries came before: pip listed versions it
# found (none matched) or found a dependency conflict; npm got a "no such version" or a 404.
REGISTRY_ANSWERED = re.compile(
    r"\(from versions: (?!none\))|ResolutionImpossible|npm error code E(?:TARGET|404)\b"
)


def registry_unreachable(output: str) -> str | None:
    """``"<cause>: <the tool's line naming it>"`` when ``output`` (a failed pip or npm run's
    stderr) shows the package registry could not be reached; None when the failure is anything
    else, which the caller must report as a failure rather than skip."""
    if REGISTRY_ANSWERED.search(output):
        return None
    for cause, pattern in NETWORK_CAUSES.items():
        for line in output.splitlines():
            if pattern.search(line):
                return f"{cause}: {line.strip()[:300]}"
    return None
