"""``python -m benchmarks run --scenario all``: issue 7's scenarios, ours against the Go registry.

Writes ``benchmarks/results/latest.json`` and ``benchmarks/RESULTS.md`` (or into ``--out``).
``--smoke`` shrinks everything to seconds (what CI runs); the published table is full scale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import report, scenarios
from benchmarks.scenarios import Scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run scenarios and write the results")
    run.add_argument(
        "--scenario", default="all", help=f"all, or a comma list of {', '.join(scenarios.ORDER)}"
    )
    run.add_argument("--smoke", action="store_true", help="seconds-long version (CI)")
    run.add_argument("--out", type=Path, default=report.HERE, help="where results go")
    args = parser.parse_args(argv)
    chosen = list(scenarios.ORDER) if args.scenario == "all" else args.scenario.split(",")
    unknown = [name for name in chosen if name not in scenarios.ORDER]
    if unknown:
        print(
            f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(scenarios.ORDER)}",
            file=sys.stderr,
        )
        return 2
    scale = Scale.smoke() if args.smoke else Scale()
    header = report.header(scale.label)
    results = scenarios.run(chosen, scale, lambda line: print(line, flush=True))
    path = report.write({**header, "results": results}, args.out)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
