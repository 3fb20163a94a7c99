"""python -m jepsen_like run --time-limit 60 --nemesis partition,kill,pause --seed 7
python -m jepsen_like run --topology postgresql --time-limit 60 --nemesis all --seed 7
python -m jepsen_like check RUN_DIR

Exit status 0 only when the run (or the checked history) is valid."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jepsen_like.nemesis import KINDS
from jepsen_like.pg_nemesis import PG_KINDS

TOPOLOGY_KINDS = {"raft": KINDS, "postgresql": PG_KINDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepsen_like", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a real 3-replica cluster under faults, then check")
    run.add_argument("--time-limit", type=float, default=60)
    run.add_argument(
        "--nemesis",
        default="partition,kill,pause",
        help=f"comma-separated, from {', '.join(KINDS)} (raft) or {', '.join(PG_KINDS)}"
        " (postgresql), or 'all' (every kind of the topology)",
    )
    run.add_argument(
        "--topology",
        choices=sorted(TOPOLOGY_KINDS),
        default="raft",
        help="raft: a StatefulSet of Raft members; postgresql: stateless replicas sharing one"
        " PostgreSQL server on a host of its own (DATABASE_TYPE=postgresql)",
    )
    run.add_argument("--seed", type=int, default=int(time.time()))
    run.add_argument("--workers", type=int, default=6)
    run.add_argument(
        "--overlaps",
        type=int,
        default=1,
        help="overlapping pairs of faults in each round of kinds (0: one fault at a time)",
    )
    run.add_argument("--out", type=Path, default=Path("store"))
    check = commands.add_parser("check", help="check a run directory again")
    check.add_argument("run_dir", type=Path)
    workload = commands.add_parser("workload", help=argparse.SUPPRESS)
    workload.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)

    if args.command == "workload":
        from jepsen_like.run import workload_main

        workload_main(args.run_dir)
        return 0
    if args.command == "check":
        from jepsen_like.check import check_run

        results = check_run(args.run_dir)
    else:
        from jepsen_like.hosts import available
        from jepsen_like.pg_server import available as postgres_available
        from jepsen_like.run import run as run_chaos

        offered = TOPOLOGY_KINDS[args.topology]
        kinds = list(offered) if args.nemesis == "all" else args.nemesis.split(",")
        problem = _not_offered(kinds, args.topology)
        if problem:
            parser.error(problem)
        problem = available() or (postgres_available() if args.topology == "postgresql" else None)
        if problem:
            print(f"jepsen_like: cannot run here: {problem}", file=sys.stderr)
            return 2
        run_dir = args.out / f"run-{time.strftime('%Y%m%d-%H%M%S')}-seed{args.seed}"
        results = run_chaos(
            run_dir,
            args.time_limit,
            kinds,
            args.seed,
            args.workers,
            overlaps=args.overlaps,
            topology=args.topology,
        )
        print(f"run directory: {run_dir}")
    verdicts = {k: v["valid"] for k, v in results.items() if isinstance(v, dict)}
    print(f"valid: {results['valid']}  {verdicts}")
    print(f"availability: {results['availability']}")
    for reason in results["evidence"]["reasons"] + results["job_evidence"]["reasons"]:
        print(f"not enough evidence: {reason}")
    return 0 if results["valid"] else 1


def _not_offered(kinds: list[str], topology: str) -> str | None:
    """Why ``kinds`` cannot run in ``topology`` (a kind of the other topology, or none at all),
    or None when they can."""
    offered = TOPOLOGY_KINDS[topology]
    wrong = [k for k in kinds if k not in offered]
    if not wrong:
        return None
    others = {name: ks for name, ks in TOPOLOGY_KINDS.items() if name != topology}
    parts = []
    for kind in wrong:
        homes = [name for name, ks in others.items() if kind in ks]
        parts.append(f"{kind} (a {homes[0]} topology nemesis)" if homes else f"{kind} (unknown)")
    return (
        f"nemesis not offered with --topology {topology}: {', '.join(parts)};"
        f" this topology's kinds: {', '.join(offered)}"
    )


if __name__ == "__main__":
    sys.exit(main())
