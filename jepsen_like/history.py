"""Operation histories: every invocation and completion, as JSON lines.

An operation is invoked once and completed at most once. ``type`` is ``invoke``, then ``ok``
(it happened, with its result), ``fail`` (it certainly did not happen) or ``info`` (unknown:
a timeout; it may or may not have happened, now or at any later time). Times are monotonic
nanoseconds from the client's clock.

Functions (``f``) on one key (an agent id):
- ``write``: register or update the agent with ``value``; result ignored. ``api`` says which
  API carried it: ``heartbeat`` (the agent protocol's POST /heartbeat) or ``v1`` (the guide's
  POST /api/v1/agents), so a lost write can be tied to the path that acknowledged it.
- ``delete``: deregister; result ``True`` when the agent existed (204/200), ``False`` (404).
- ``read``: a linearizable read; result the value, or ``None`` when the agent is absent.
- ``heartbeat``: HEAD /heartbeat; result ``"ok"`` (200/202) or ``"gone"`` (410).

MeshJob functions (jepsen_like/jobs.py), on a key that is the job's *token*: a name the client
puts in the job's ``submitted_payload`` before it knows the id the registry will give the job,
so a job created with an unknown outcome can still be recognised (in a claim, in the final
state). Values and results are JSON objects:
- ``job-create``: POST /jobs; value ``{"capability", "max_duration", "max_retries"}``;
  result the job id.
- ``job-claim``: POST /jobs/claim; key the capability (which job it gets is the answer); value
  ``{"instance": id}``; result ``None`` (nothing claimed) or ``{"token", "id", "epoch",
  "max_duration"}``.
- ``job-batch``: POST /jobs/batch with one delta; value ``{"instance", "epoch", "status",
  "result", "error"}`` (status ``None`` for a progress report); result ``"accepted"`` or the
  rejection reason (``claim_superseded``, ``already_terminal``, ...).
- ``job-cancel``: POST /jobs/{id}/cancel; result ``"cancelled"`` (200), ``"terminal"`` (409,
  already terminal) or ``"absent"`` (404).
- ``job-read``: GET /jobs/{id}?consistency=linearizable; result ``None`` (404) or
  ``{"status", "result", "error", "owner", "epoch"}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
WRITE, DELETE, READ, HEARTBEAT = "write", "delete", "read", "heartbeat"
PROTOCOL_API, GUIDE_API = "heartbeat", "v1"
WRITE_APIS = (PROTOCOL_API, GUIDE_API)
JOB_CREATE, JOB_CLAIM, JOB_BATCH = "job-create", "job-claim", "job-batch"
JOB_CANCEL, JOB_READ = "job-cancel", "job-read"
JOB_FUNCTIONS = (JOB_CREATE, JOB_CLAIM, JOB_BATCH, JOB_CANCEL, JOB_READ)
UNREACHABLE = "unreachable"
"""The digest recorded in ``final.json`` for a replica that did not answer."""


@dataclass(frozen=True)
class Event:
    """One line of the history."""

    type: str
    process: int
    f: str
    key: str
    time: int
    value: Any = None
    node: str = ""
    api: str = ""


@dataclass
class Op:
    """An invocation joined with its completion (``outcome`` INFO if it never completed)."""

    process: int
    f: str
    key: str
    value: Any
    start: int
    end: int | None
    outcome: str
    result: Any = None
    node: str = ""
    api: str = ""


def read_events(path: Path) -> list[Event]:
    with path.open() as lines:
        return [Event(**json.loads(line)) for line in lines if line.strip()]


def write_events(path: Path, events: Iterable[Event]) -> None:
    with path.open("w") as out:
        for event in events:
            out.write(json.dumps(event.__dict__) + "\n")


def operations(events: Iterable[Event]) -> list[Op]:
    """Pair invocations with completions per process; unfinished ones are INFO."""
    pending: dict[int, Op] = {}
    ops: list[Op] = []
    for event in events:
        if event.type == INVOKE:
            if event.process in pending:
                raise ValueError(f"process {event.process} invoked twice without completing")
            op = Op(
                event.process,
                event.f,
                event.key,
                event.value,
                event.time,
                None,
                INFO,
                node=event.node,
                api=event.api,
            )
            pending[event.process] = op
            ops.append(op)
            continue
        done = pending.pop(event.process, None)
        if done is None or done.f != event.f or done.key != event.key:
            raise ValueError(f"completion without matching invocation: {event}")
        done.outcome = event.type
        done.result = event.value
        if event.type != INFO:
            done.end = event.time
    return ops


def by_key(ops: Iterable[Op]) -> Iterator[tuple[str, list[Op]]]:
    keys: dict[str, list[Op]] = {}
    for op in ops:
        keys.setdefault(op.key, []).append(op)
    yield from sorted(keys.items())
