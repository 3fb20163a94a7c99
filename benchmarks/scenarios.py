"""S1-S6 of issue 7, each measured on fresh processes.

Every scenario returns a :data:`Result`: ``name``, ``target``, ``measured`` (one line),
``met`` (True, False, or None when it cannot be judged, e.g. no Go registry), ``rows`` (one
per system and request kind, the report's table) and ``notes`` (what the table cannot say),
plus the raw figures. :class:`Scale` shrinks every scenario to seconds for CI (``--smoke``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from benchmarks import cpu, etcd, failover, recovery, workload
from benchmarks.load import HeadClient, Request, Stats, closed_loop, paced
from benchmarks.systems import OURS, REPLICAS, System, go, go_pg, ours, ours_pg
from tests import postgres
from tests.postgres import BIN as PG_BIN

Result = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class Scale:
    """How big each scenario is. The defaults are the issue's figures."""

    label: str = "full"
    seconds: float = 20.0
    """Length of each closed-loop phase (S1, and S3 per endpoint), per system."""
    connections: int = 16
    heartbeat_agents: int = 10_000
    steady_seconds: float = 60.0
    """S2's steady phase: long enough for every agent to send two full POSTs."""
    watch_every: float = 5.0
    discovery_agents: int = 2_000
    failover_trials: int = 10
    failover_agents: int = 1_000
    """S4's background load: a tenth of S2 (HEAD every 5 s each)."""
    recovery_events: int = 100_000
    recovery_restarts: int = 3
    etcd: bool = True
    """S1 also measures a 3-node etcd (when installed); smoke runs skip it."""

    @classmethod
    def smoke(cls) -> Scale:
        return cls("smoke", 2.0, 16, 200, 2.0, 1.0, 200, 2, 100, 2_000, 2, etcd=False)


def _row(system: System, request: str, stats: Stats, cost: dict[str, Any] | None) -> Result:
    return {"system": system.name, "request": request, **stats.summary(), **(cost or {})}


async def _each_system(measure: Callable[[System], Awaitable[T]]) -> tuple[T, T | None]:
    """``measure`` on our cluster, then on the Go registry (None when it is unavailable);
    each on fresh processes, stopped before the other starts so they never share the CPU."""
    with ours() as mine:
        await mine.wait_ready()
        our = await measure(mine)
    with go() as theirs:
        their = None
        if theirs is not None:
            await theirs.wait_ready()
            their = await measure(theirs)
    return our, their


def _ratio(
    ours_rate: float, go_row: Result | None, target: float, key: str = "per_second"
) -> Result:
    """Ours / Go throughput (``go_row[key]``) against ``target``; not judged without Go."""
    if go_row is None or not go_row[key]:
        return {"ratio": None, "met": None, "measured": f"ours {ours_rate}/s; Go n/a"}
    ratio = round(ours_rate / float(go_row[key]), 2)
    unit = "req/s" if key == "per_second" else "acknowledged writes/s"
    return {
        "ratio": ratio,
        "met": ratio >= target,
        "measured": f"{ratio}x ({ours_rate} vs {go_row[key]} {unit})",
    }


# -- S1 -------------------------------------------------------------------------------------

Trees = Sequence[tuple[str, Path | None]]
"""Our cluster's variants for S1: (row name, source tree, None for this checkout)."""
THIS_CHECKOUT: Trees = ((OURS, None),)


def _s1_request(system: System) -> tuple[str, Request]:
    urls = system.urls
    if system.name.startswith(etcd.ETCD):

        def put(client: aiohttp.ClientSession, n: int) -> Awaitable[int]:
            return etcd.put(client, urls[n % len(urls)], n)

        return f"PUT {etcd.VALUE_BYTES} B value (new key)", put

    def register(client: aiohttp.ClientSession, n: int) -> Awaitable[int]:
        return workload.post(client, urls[n % len(urls)], workload.body("s1", n))

    return "POST /heartbeat (new agent)", register


async def s1_measure(system: System, scale: Scale) -> Result:
    """One closed-loop phase of new writes on ``system``: its S1 row, with the server CPU
    summed over all its processes per acknowledged (2xx) write."""
    label, request = _s1_request(system)
    gc_before = _gc_seconds(await system.gc_pauses())
    system.mark()
    stats = await closed_loop(request, scale.connections, scale.seconds)
    total = system.cpu_total()
    row = _row(system, label, stats, system.cost())
    writes = cpu.acknowledged(stats.statuses)
    row = {**row, **cpu.per_write(total, writes, stats.seconds)}
    gc_after = _gc_seconds(await system.gc_pauses())
    if gc_before is not None and gc_after is not None and writes:
        row["gc_ms_per_write"] = round((gc_after - gc_before) * 1000 / writes, 3)
    return row


def _gc_seconds(pauses: list[dict[str, tuple[float, float]]] | None) -> float | None:
    """Seconds in every collection of every node (S1's CPU in the collector)."""
    if pauses is None:
        return None
    return sum(seconds for node in pauses for _, seconds in node.values())


def s1_system(
    kind: str, tree: Path | None = None, name: str = OURS
) -> AbstractContextManager[System | None]:
    """The context manager that starts one S1 system: ``ours`` (from ``tree``), ``go``, ``etcd``."""
    if kind == "ours":
        return ours(tree, name)
    return go() if kind == "go" else etcd.cluster()


async def _s1_on(
    kind: str, scale: Scale, tree: Path | None = None, name: str = OURS
) -> Result | None:
    with s1_system(kind, tree, name) as system:
        if system is None:
            return None
        await system.wait_ready()
        return await s1_measure(system, scale)


def _all_met(*verdicts: bool | None) -> bool | None:
    if False in verdicts:
        return False
    return None if None in verdicts else True


async def s1_registration(scale: Scale, trees: Trees = THIS_CHECKOUT) -> Result:
    """New agents via POST /heartbeat, closed loop: every request appends to the log. Then the
    Go registry, then (full scale) a 3-node etcd taking 2 KB puts at the same concurrency, one
    system at a time on fresh processes."""
    mine = [row for name, tree in trees if (row := await _s1_on("ours", scale, tree, name))]
    theirs = await _s1_on("go", scale)
    store = await _s1_on("etcd", scale) if scale.etcd else None
    rows = mine + [row for row in (theirs, store) if row is not None]
    our = mine[0]
    throughput = _ratio(float(our["writes_per_second"]), theirs, 5.0, "writes_per_second")
    cpu_met = None
    if store is not None and our["cpu_ms_per_write"] and store["cpu_ms_per_write"]:
        cpu_met = our["cpu_ms_per_write"] <= store["cpu_ms_per_write"]
    per_write = ", ".join(f"{row['system']} {row['cpu_ms_per_write']}" for row in rows)
    notes = [
        f"{scale.connections} connections, closed loop, {scale.seconds:g} s each. Server CPU "
        "per write: utime+stime (/proc) summed over all of a system's server processes during "
        "the phase, divided by its acknowledged (2xx) writes; the client's CPU is not in it. "
        "The ratio compares acknowledged writes/s."
    ]
    if not scale.etcd:
        notes.append("etcd: skipped at this scale.")
    elif store is None:
        notes.append("etcd: n/a (not installed; see the printed reason).")
    return {
        "name": "S1 registration",
        "rows": rows,
        "notes": notes,
        "target": ">= 5x Go's throughput; server CPU per write <= etcd's",
        **throughput,
        "measured": f"{throughput['measured']}; CPU ms per write: {per_write}",
        "met_throughput": throughput["met"],
        "met_cpu_per_write": cpu_met,
        "met": _all_met(throughput["met"], cpu_met),
    }


# -- S2 + S6 --------------------------------------------------------------------------------

LOG_GROWTH_LIMIT = 0.1
"""Entries/s still counted as "~0": the steady phase must append (next to) nothing."""


async def _log_position(system: System) -> tuple[int, int] | None:
    """(registry events applied, Raft entries committed) after a barrier; None for a system
    without a log (Go). The two differ by the entries that carry no event: barriers, which a
    replica appends before acknowledging an unchanged full heartbeat against its view. Both
    are durable (fsynced on a majority), so the target is judged on Raft entries."""
    if system.cluster is None:
        return None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        url = f"{system.urls[0]}/api/v1/cluster?consistency=linearizable"
        status = await workload.get_json(client, url)
        return int(status["applied_index"]), int(status["commit_index"])


async def _steady(system: System, scale: Scale) -> Result:
    """Register and settle N agents, then heartbeat them on schedule while watching health.

    Only our cluster is settled: settling exists so that log growth (ours only; the Go
    registry has no log) is measured on a quiet mesh. The Go registry answers 202 to nearly
    every HEAD while agents keep registering (199 of 200 in a smoke run), so it never settles,
    and one round of 10,000 HEADs takes it minutes.
    """
    agents, urls = scale.heartbeat_agents, system.urls
    await workload.register(system, "s2", agents)
    rounds = 5 if system.cluster is not None else 0
    settled = await workload.settle(system, "s2", agents, rounds)
    gone: set[str] = set(settled["gone"])
    if system.cluster is not None:
        # Then one unchanged full heartbeat from every agent. A provider that joined an agent's
        # candidates without changing its winner changed the audit's trace only: HEAD does not
        # ask for it (nothing the agent is told changed), and its next full heartbeat records
        # it once, as the Go registry does. S2's POSTs would otherwise record the setup's
        # concurrent registrations during the first 30 s of the phase measuring steady growth.
        start = await _log_position(system)
        await workload.register(system, "s2", agents)  # the same bodies: unchanged
        end = await _log_position(system)
        if start is not None and end is not None:
            settled["audit_recorded"] = end[0] - start[0]  # events, not barrier entries

    head_client = HeadClient()

    async def head(_: aiohttp.ClientSession, n: int) -> int:
        agent = workload.agent_id("s2", n % agents)
        status = await head_client.head(urls[n % len(urls)], f"/heartbeat/{agent}")
        if status == 410:
            gone.add(agent)
        return status

    def post(client: aiohttp.ClientSession, n: int) -> Awaitable[int]:
        return workload.post(client, urls[(n + 1) % len(urls)], workload.body("s2", n % agents))

    before = await _log_position(system)
    gc_before = await system.gc_pauses()
    stop = asyncio.Event()
    watcher = asyncio.create_task(workload.watch_unhealthy(system, scale.watch_every, stop))
    system.mark()
    try:
        heads, posts = await asyncio.gather(
            paced(head, agents / 5, scale.steady_seconds),
            paced(post, agents / 30, scale.steady_seconds),
        )
    finally:
        stop.set()
        watched = await watcher
        head_client.close()
    cost = system.cost()
    after = await _log_position(system)
    gc_after = await system.gc_pauses()
    full_gcs = None
    if gc_before is not None and gc_after is not None:
        full_gcs = [
            {"count": int(a["2"][0] - b["2"][0]), "seconds": round(a["2"][1] - b["2"][1], 3)}
            for a, b in zip(gc_after, gc_before, strict=True)
        ]
    growth = event_growth = None
    if before is not None and after is not None:
        event_growth = round((after[0] - before[0]) / heads.seconds, 2)
        growth = round((after[1] - before[1]) / heads.seconds, 2)
    unhealthy = sorted(gone | set(watched["unhealthy"]))
    return {
        "rows": [
            _row(system, "HEAD /heartbeat/{id}", heads, cost),
            _row(system, "POST /heartbeat (unchanged)", posts, None),
        ],
        "false_unhealthy": len(unhealthy),
        "false_unhealthy_examples": unhealthy[:10],
        "log_growth_per_second": growth,
        "event_growth_per_second": event_growth,
        "full_gc_per_node": full_gcs,
        "settle": {k: v for k, v in settled.items() if k != "gone"},
        "watch": {k: v for k, v in watched.items() if k != "unhealthy"},
        **cost,
    }


async def s2_heartbeats(scale: Scale) -> Result:
    """N agents: HEAD every 5 s each and a full POST every 30 s each (open loop), spread
    over the replicas; the log must not grow and nobody may be declared unhealthy."""
    our, their = await _each_system(lambda system: _steady(system, scale))
    head, post = our["rows"]
    met = (
        head["p99_ms"] < 20
        and post["p99_ms"] < 20
        and our["false_unhealthy"] == 0
        and our["log_growth_per_second"] is not None
        and our["log_growth_per_second"] < LOG_GROWTH_LIMIT
        and head["errors"] == post["errors"] == 0
    )
    notes = [
        f"{scale.heartbeat_agents} agents registered first, ours then settled (agents told 202 "
        "send their full POST, as the SDK does; then one unchanged full POST from every agent, "
        "which records the audit traces the setup's concurrent registrations changed without "
        "changing any answer: 'audit recorded', in events), then "
        f"{scale.steady_seconds:g} s of HEAD at "
        f"{scale.heartbeat_agents / 5:.4g}/s and POST at {scale.heartbeat_agents / 30:.4g}/s, "
        "open loop (late sends: the client fell more than 5 ms behind its schedule). Health is "
        f"watched by listing every agent every {scale.watch_every:g} s, fetched and parsed in a "
        "separate process so that parsing does not stall the measuring client.",
    ]
    for label, side in (("ours", our), ("Go", their)):
        if side is None:
            notes.append(f"{label}: n/a (Go registry unavailable)")
            continue
        growth = side["log_growth_per_second"]
        notes.append(
            f"{label}: false unhealthy {side['false_unhealthy']} (HTTP 410 or not healthy in "
            f"{side['watch']['polls']} listings), log growth "
            + (
                "n/a (no log)"
                if growth is None
                else f"{growth} Raft entries/s (registry events "
                f"{side['event_growth_per_second']}/s)"
            )
            + f", settle re-POSTs {side['settle']['reposted']}"
            + (
                f", audit recorded {side['settle']['audit_recorded']}"
                if "audit_recorded" in side["settle"]
                else ""
            )
            + (
                ""
                if side["full_gc_per_node"] is None
                else ", full GC pauses during the steady phase per node: "
                + " / ".join(f"{g['count']} ({g['seconds']} s)" for g in side["full_gc_per_node"])
            )
            + "."
        )
    return {
        "name": "S2 steady heartbeats",
        "rows": our["rows"] + (their["rows"] if their else []),
        "notes": notes,
        "ours": {k: v for k, v in our.items() if k != "rows"},
        "go": {k: v for k, v in their.items() if k != "rows"} if their else None,
        "target": f"p99 < 20 ms, zero false unhealthy, log growth < {LOG_GROWTH_LIMIT}/s",
        "measured": (
            f"HEAD p99 {head['p99_ms']} ms, POST p99 {post['p99_ms']} ms, "
            f"{our['false_unhealthy']} false unhealthy, log {our['log_growth_per_second']} "
            "entries/s"
        ),
        "met": met,
    }


def s6_memory(s2: Result, agents: int) -> Result:
    """Peak RSS per node with S2's agents (the processes S2 ran)."""
    peak = s2["ours"]["peak_rss_mib"]
    theirs = s2["go"]["peak_rss_mib"] if s2["go"] else None
    return {
        "name": "S6 memory",
        "rows": [],
        "notes": [
            f"From S2 ({agents} agents, after the steady phase). Go, one node: "
            f"{'n/a' if theirs is None else ' / '.join(map(str, theirs))} MiB."
        ],
        "peak_rss_mib": peak,
        "go_peak_rss_mib": theirs,
        "target": "< 256 MiB per node",
        "measured": f"{' / '.join(map(str, peak))} MiB",
        "met": max(peak) < 256,
    }


# -- S3 -------------------------------------------------------------------------------------


async def s3_discovery(scale: Scale) -> Result:
    """GET /agents and GET /api/v1/agents (Go: /agents only) with N agents, closed loop."""

    async def measure(system: System) -> list[Result]:
        await workload.register(system, "s3", scale.discovery_agents)
        rows = []
        for path in system.listings:

            def request(client: aiohttp.ClientSession, n: int, path: str = path) -> Any:
                return _get(client, f"{system.urls[n % len(system.urls)]}{path}")

            system.mark()
            stats = await closed_loop(request, scale.connections, scale.seconds)
            rows.append(_row(system, f"GET {path}", stats, system.cost()))
        return rows

    our, their = await _each_system(measure)
    return {
        "name": "S3 discovery",
        "rows": our + (their or []),
        "notes": [
            f"{scale.discovery_agents} agents, {scale.connections} connections, closed loop, "
            f"{scale.seconds:g} s per endpoint; the ratio compares GET /agents (the Go registry "
            "has no /api/v1/agents)."
        ],
        "target": ">= 20x Go's requests/s",
        **_ratio(float(our[0]["per_second"]), their[0] if their else None, 20.0),
    }


async def _get(client: aiohttp.ClientSession, url: str) -> int:
    async with client.get(url) as resp:
        await resp.read()
        return resp.status


# -- S4 -------------------------------------------------------------------------------------


async def s4_failover(scale: Scale) -> Result:
    """Leader SIGKILL under heartbeat load -> first accepted write, -> survivors ready."""
    agents = scale.failover_agents
    with ours() as mine:
        assert mine.cluster is not None
        await mine.wait_ready()
        await workload.register(mine, "s4", agents)
        urls = mine.urls

        def head(client: aiohttp.ClientSession, n: int) -> Awaitable[int]:
            return workload.head(client, urls[n % len(urls)], workload.agent_id("s4", n % agents))

        stop = asyncio.Event()
        bound = 3 * failover.LIMIT * scale.failover_trials  # stop ends it much sooner
        load = asyncio.create_task(paced(head, agents / 5, bound, stop=stop))
        try:
            trials = await failover.trials(mine.cluster, scale.failover_trials)
        finally:
            stop.set()
            background = await load
    writes = [round(t.first_write_s, 3) for t in trials]
    readies = [round(t.survivors_ready_s, 3) for t in trials]
    write, ready = round(statistics.median(writes), 3), round(statistics.median(readies), 3)
    return {
        "name": "S4 failover",
        "rows": [],
        "notes": [
            f"{len(trials)} trials under HEAD load ({agents} agents, {agents / 5:g}/s). "
            f"Leader SIGKILL -> first accepted write (s): {' / '.join(map(str, writes))}; "
            f"-> /ready 200 under a new leader on every survivor (s): "
            f"{' / '.join(map(str, readies))}.",
            f"Background HEADs: {background.summary()['statuses']}, "
            f"{background.errors} transport errors (the killed node refuses connections).",
        ],
        "first_write_s": writes,
        "survivors_ready_s": readies,
        "median_first_write_s": write,
        "median_survivors_ready_s": ready,
        "background": background.summary(),
        "target": "median leader kill -> first accepted write < 2 s",
        "measured": f"first write {write} s, survivors ready {ready} s (medians)",
        "met": write < 2.0,
    }


# -- S5 -------------------------------------------------------------------------------------


def s5_recovery(scale: Scale) -> Result:
    """Restart of a single node whose log holds N events (built offline, see recovery.py)."""
    with tempfile.TemporaryDirectory(prefix="bench-s5-") as root:
        data = Path(root) / "node"
        started = time.monotonic()
        built = recovery.build_log(data, scale.recovery_events)
        build_seconds = round(time.monotonic() - started, 1)
        measured = recovery.restarts(data, scale.recovery_restarts)
    replayed = built["events"] - built["snapshot_index"]
    return {
        "name": "S5 recovery",
        "rows": [],
        "notes": [
            f"Single node, log of {built['events']} events written offline with the node's own "
            f"store and state machine in {build_seconds} s; newest snapshot at index "
            f"{built['snapshot_index']} (default SNAPSHOT_EVERY), so a start loads it and "
            f"replays {replayed} events. Process start -> /ready 200 (s): "
            f"{' / '.join(map(str, measured['trials_s']))}; peak RSS "
            f"{measured['peak_rss_mib'][0]} MiB."
        ],
        **built,
        "replayed_events": replayed,
        "build_seconds": build_seconds,
        **measured,
        "target": "< 5 s",
        "measured": f"{measured['median_s']} s (median)",
        "met": measured["median_s"] < 5.0,
    }


# -- S1's CPU per write, repeated (issue 14) -------------------------------------------------


def _spread(values: list[float]) -> dict[str, float | list[float]]:
    if not values:
        return {"all": []}
    return {
        "median": round(statistics.median(values), 3),
        "min": min(values),
        "max": max(values),
        "all": values,
    }


def s1_cpu_rounds(
    scale: Scale, trees: Trees, rounds: int, progress: Callable[[str], None]
) -> Result:
    """S1's phase on each of our variants, the Go registry and etcd, ``rounds`` times.

    One system at a time, each on fresh processes; every round runs them all back to back,
    the order rotated by one each round so that a change in the machine's other load does not
    always fall on the same system. Per system: writes/s and server CPU ms per acknowledged
    write, median and range over the rounds.
    """
    jobs: list[tuple[str, Path | None, str]] = [("ours", tree, name) for name, tree in trees]
    jobs += [("go", None, "Go"), ("etcd", None, "etcd")]
    seen: dict[str, list[Result]] = {}
    skipped: list[str] = []
    for n in range(rounds):
        for kind, tree, name in jobs[n % len(jobs) :] + jobs[: n % len(jobs)]:
            row = asyncio.run(_s1_on(kind, scale, tree, name))
            if row is None:
                skipped.append(name)
                continue
            row = {**row, "round": n + 1, "load_average_after": round(os.getloadavg()[0], 2)}
            seen.setdefault(str(row["system"]), []).append(row)
            progress(
                f"round {n + 1}/{rounds} {row['system']}: {row['writes_per_second']} writes/s, "
                f"{row['cpu_ms_per_write']} ms CPU per write, load {row['load_average_after']}"
            )
    summary = {
        system: {
            "request": rows[0]["request"],
            "writes_per_second": _spread([float(r["writes_per_second"]) for r in rows]),
            "cpu_ms_per_write": _spread(
                [float(r["cpu_ms_per_write"]) for r in rows if r["cpu_ms_per_write"] is not None]
            ),
            "gc_ms_per_write": _spread(
                [float(r["gc_ms_per_write"]) for r in rows if "gc_ms_per_write" in r]
            ),
            "errors": sum(int(r["errors"]) for r in rows),
            "non_2xx": sum(int(r["requests"]) - int(r["acknowledged_writes"]) for r in rows),
            "client_cpu_seconds": [r["client_cpu_seconds"] for r in rows],
            "load_average_after": [r["load_average_after"] for r in rows],
        }
        for system, rows in seen.items()
    }
    return {
        "name": "S1 CPU per write (issue 14)",
        "rounds": rounds,
        "seconds": scale.seconds,
        "connections": scale.connections,
        "systems": summary,
        "runs": seen,
        "skipped": sorted(set(skipped)),
    }


# -- S7: PostgreSQL mode ---------------------------------------------------------------------


async def s7_postgresql(scale: Scale) -> Result:
    """S1 and S3 with the log in PostgreSQL: our three DATABASE_TYPE=postgresql replicas, then
    three Go registries on one database of the same server (MCP Mesh's HA mode). The database
    server's CPU (the postmaster and its backends) is counted in each system's CPU per write."""
    if not (PG_BIN / "initdb").exists():
        return _not_run("S7 PostgreSQL mode", f"no PostgreSQL server binaries in {PG_BIN}")
    rows: list[Result] = []
    with postgres.running() as server:
        for start in (ours_pg, go_pg):
            with start(server) as system:
                if system is None:
                    continue
                system.pids.append(server.pid)
                await system.wait_ready()
                rows.append(await s1_measure(system, scale))
                await workload.register(system, "s7", scale.discovery_agents)
                system.mark()
                urls = system.urls

                def listing(client: aiohttp.ClientSession, n: int, urls: list[str] = urls) -> Any:
                    return _get(client, f"{urls[n % len(urls)]}/agents")

                stats = await closed_loop(listing, scale.connections, scale.seconds)
                rows.append(_row(system, "GET /agents", stats, system.cost()))
    writes = [row for row in rows if row["request"].startswith("POST")]
    reads = [row for row in rows if row["request"] == "GET /agents"]
    ratio = _ratio(
        float(writes[0]["writes_per_second"]),
        writes[1] if len(writes) > 1 else None,
        1.0,
        "writes_per_second",
    )
    read_ratio = _ratio(float(reads[0]["per_second"]), reads[1] if len(reads) > 1 else None, 1.0)
    return {
        "name": "S7 PostgreSQL mode",
        "rows": rows,
        "notes": [
            f"One PostgreSQL 15 server (fsync on, synchronous_commit on), {REPLICAS} replicas "
            f"each; {scale.connections} connections, closed loop, {scale.seconds:g} s per "
            f"phase; S3 with {scale.discovery_agents} agents (registered after the S1 phase, "
            "so the view also holds S1's). CPU per write includes the database server's.",
            f"reads: ours/Go {read_ratio['measured']}",
        ],
        "target": "reported beside the Go registry on the same database server (issue 18)",
        **ratio,
        "met": None,
    }


def _not_run(name: str, why: str) -> Result:
    return {"name": name, "rows": [], "notes": [why], "target": "", "measured": "n/a", "met": None}


# -- the registry of scenarios --------------------------------------------------------------

ORDER = ("s1", "s2", "s3", "s4", "s5", "s6", "s7")


def run(
    chosen: list[str],
    scale: Scale,
    progress: Callable[[str], None],
    trees: Trees = THIS_CHECKOUT,
) -> dict[str, Result]:
    """Run the ``chosen`` scenarios in order; S6 is read from S2, which it runs if needed.
    ``trees``: S1's variants of our cluster (the first is the one judged)."""
    steps: dict[str, Callable[[], Result]] = {
        "s1": lambda: asyncio.run(s1_registration(scale, trees)),
        "s2": lambda: asyncio.run(s2_heartbeats(scale)),
        "s3": lambda: asyncio.run(s3_discovery(scale)),
        "s4": lambda: asyncio.run(s4_failover(scale)),
        "s5": lambda: s5_recovery(scale),
        "s7": lambda: asyncio.run(s7_postgresql(scale)),
    }
    wanted = set(chosen) | ({"s2"} if "s6" in chosen else set())
    results: dict[str, Result] = {}
    for name in ORDER:
        if name not in wanted:
            continue
        started = time.monotonic()
        progress(f"{name}: running")
        if name == "s6":
            results[name] = s6_memory(results["s2"], scale.heartbeat_agents)
        else:
            results[name] = steps[name]()
        progress(f"{name}: {results[name]['measured']} ({time.monotonic() - started:.0f} s)")
    return results
