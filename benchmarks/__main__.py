"""``python -m benchmarks run --scenario all``: issue 7's scenarios, ours against the Go registry.

Writes ``benchmarks/results/latest.json`` and ``benchmarks/RESULTS.md`` (or into ``--out``).
``--smoke`` shrinks everything to seconds (what CI runs); the published table is full scale.

``python -m benchmarks s1-cpu --before PATH --rounds 3``: S1's writes/s and server CPU per
acknowledged write for our cluster from an older source tree and from this checkout, the Go
registry and a 3-node etcd, repeated, median and range; writes ``results/s1_cpu.json`` and the
"S1 CPU per write (issue 14)" section of ``RESULTS.md`` (the rest of the file is kept).
"""

from __future__ import annotations

import argparse
import dataclasses
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
    run.add_argument(
        "--ours",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="S1 also on our cluster run from the source tree PATH, in a row named NAME",
    )
    repeat = commands.add_parser("s1-cpu", help="S1 CPU per write, repeated (issue 14)")
    repeat.add_argument("--before", type=Path, help="source tree of the older commit")
    repeat.add_argument("--rounds", type=int, default=3)
    repeat.add_argument("--seconds", type=float, default=Scale.seconds)
    repeat.add_argument("--smoke", action="store_true", help="seconds-long version")
    repeat.add_argument("--out", type=Path, default=report.HERE, help="where results go")
    args = parser.parse_args(argv)
    if args.command == "s1-cpu":
        return _s1_cpu(args)
    chosen = list(scenarios.ORDER) if args.scenario == "all" else args.scenario.split(",")
    unknown = [name for name in chosen if name not in scenarios.ORDER]
    if unknown:
        print(
            f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(scenarios.ORDER)}",
            file=sys.stderr,
        )
        return 2
    trees: list[tuple[str, Path | None]] = list(scenarios.THIS_CHECKOUT)
    for variant in args.ours:
        name, sep, path = variant.partition("=")
        if not sep or not Path(path, "registry").is_dir():
            print(f"--ours {variant}: want NAME=PATH of a source tree", file=sys.stderr)
            return 2
        trees.append((name, Path(path)))
    scale = Scale.smoke() if args.smoke else Scale()
    header = report.header(scale.label)
    results = scenarios.run(chosen, scale, lambda line: print(line, flush=True), trees)
    path = report.write({**header, "results": results}, args.out)
    print(path.read_text())
    return 0


def _s1_cpu(args: argparse.Namespace) -> int:
    scale = Scale.smoke() if args.smoke else Scale()
    scale = dataclasses.replace(scale, seconds=args.seconds if not args.smoke else scale.seconds)
    trees: list[tuple[str, Path | None]] = []
    commits, server_code = {}, {}
    if args.before is not None:
        if not (args.before / "registry").is_dir():
            print(f"--before {args.before}: not a source tree", file=sys.stderr)
            return 2
        commits["before"] = report.commit_of(args.before)
        server_code["before"] = report.commit_of(args.before, report.SERVER_CODE)
        trees.append((f"ours before ({commits['before']})", args.before))
    commits["now"] = report.commit_of(report.HERE)
    server_code["now"] = report.commit_of(report.HERE, report.SERVER_CODE)
    trees.append((f"ours now ({server_code['now']})", None))
    header = {
        **report.header(scale.label),
        "commits": commits,
        "server_code": server_code,
        "before_tree": None if args.before is None else str(args.before),
    }
    result = scenarios.s1_cpu_rounds(
        scale, trees, args.rounds, lambda line: print(line, flush=True)
    )
    path = report.write_s1_cpu({**header, **result}, args.out)
    print(report.s1_cpu_markdown({**header, **result}))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
