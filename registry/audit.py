"""The dependency-resolution audit ``meshctl audit`` reads: why a dependency went where it went.

When a consumer's registration or heartbeat is applied, each of its dependencies is resolved
with :func:`registry.resolve.choose` recording its stages; this module turns that into the Go
registry's audit trace (``consumer``, ``dep_index``, ``spec``, ``stages``, ``chosen``,
``prior_chosen``) and decides, as the Go registry does, whether it is worth an event in the
history (``dependency_resolved`` / ``dependency_unresolved`` in ``GET /events``):

- a resolution is recorded when two or more candidates entered some stage (a real choice),
  when the chosen agent differs from the one the last recorded resolution chose, or when the
  last recorded event for this dependency was an unresolved one;
- a failure is recorded when two or more candidates entered some stage, when a candidate was
  evicted (the "why isn't my dependency wired" case), or when a resolution was recorded for this
  dependency before;
- either is dropped when its trace equals the last one recorded for the dependency (ignoring
  ``prior_chosen`` and the order within a stage), so a steady mesh that re-resolves on every
  heartbeat records nothing.

Pure: the view keeps one :class:`Slot` per (consumer, function, dependency index) and passes it
in, so every replica records the same events at the same log indexes. The Go registry finds the
last recorded trace by scanning the consumer's recent events; a slot remembers it for as long as
the consumer is registered (docs/protocol.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import orjson

from registry.resolve import Dependency, Provider, Stages

RESOLVED = "dependency_resolved"
UNRESOLVED = "dependency_unresolved"


@dataclass(slots=True)
class Slot:
    """What was last recorded for one dependency of one consumer."""

    chosen: str = ""
    """The agent the last recorded resolution chose ("" before any)."""
    last_type: str = ""
    last_hash: str = ""

    def to_state(self) -> list[str]:
        return [self.chosen, self.last_type, self.last_hash]


def trace(
    consumer: str, dep_index: int, dep: Dependency, stages: Stages, winner: Provider | None
) -> dict[str, Any]:
    """The trace of one resolution (without ``prior_chosen``, which :func:`decide` adds)."""
    spec: dict[str, Any] = {"capability": dep.capability}
    if dep.required_tags:
        spec["tags"] = list(dep.required_tags)
    if dep.version:
        spec["version_constraint"] = dep.version
    spec["schema_mode"] = dep.schema.mode if dep.schema is not None else "none"
    result: dict[str, Any] = {
        "consumer": consumer,
        "dep_index": dep_index,
        "spec": spec,
        "stages": stages,
    }
    if winner is not None:
        result["chosen"] = {
            "agent_id": winner.agent_id,
            "endpoint": winner.endpoint,
            "function_name": winner.function_name,
        }
    return result


def decide(traced: dict[str, Any], slot: Slot | None) -> tuple[str | None, Slot | None]:
    """The event type to record for ``traced`` (None: nothing) and the slot after it.

    Sets ``traced["prior_chosen"]`` when a resolution was recorded before."""
    prior = slot.chosen if slot is not None else ""
    if prior:
        traced["prior_chosen"] = prior
    stages: Stages = traced["stages"]
    real_choice = any(len(s["kept"]) + len(s.get("evicted", ())) >= 2 for s in stages)
    chosen = traced.get("chosen")
    if chosen is None:
        event_type = UNRESOLVED
        evictions = any(s.get("evicted") for s in stages)
        wanted = real_choice or evictions or bool(prior)
    else:
        event_type = RESOLVED
        flipped = bool(prior) and prior != chosen["agent_id"]
        recovered = slot is not None and slot.last_type == UNRESOLVED
        wanted = real_choice or flipped or recovered
    if not wanted:
        return None, slot
    digest = _canonical_hash(traced)
    if slot is not None and slot.last_hash == digest:
        return None, slot
    after = Slot(chosen["agent_id"] if chosen else prior, event_type, digest)
    return event_type, after


def _canonical_hash(traced: dict[str, Any]) -> str:
    """A hash of what the trace says about the resolution: not ``prior_chosen``, and not the
    order of the candidates within a stage or of the spec's tags."""
    spec = dict(traced["spec"])
    if "tags" in spec:
        spec["tags"] = sorted(spec["tags"])
    stages = [
        {
            **stage,
            "kept": sorted(stage["kept"]),
            **(
                {"evicted": sorted(stage["evicted"], key=lambda e: str(e["id"]))}
                if "evicted" in stage
                else {}
            ),
        }
        for stage in traced["stages"]
    ]
    canonical = {**traced, "spec": spec, "stages": stages}
    canonical.pop("prior_chosen", None)
    return hashlib.sha256(canonical_json(canonical)).hexdigest()


def canonical_json(canonical: dict[str, Any]) -> bytes:
    """``json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)``, byte for
    byte: the hash is kept in every replica's view and snapshots, so a replica that computed it
    another way would see every dependency as changed and record audit events the others do
    not. orjson writes that same text about ten times faster for what a trace holds (str keys,
    strings, ints, lists) except where ``json`` escapes: non-ASCII and DEL characters, seen in
    the output. Its floats in exponent form differ too (``1e-05`` against ``0.00001``); only a
    schema eviction's reasons carry values that are not strings (the agents' own schema
    ``type`` values, any JSON: a float, an int beyond 64 bits), so a trace with one takes
    ``json``; so does anything else orjson refuses to write."""
    if not _schema_evictions(canonical["stages"]):
        try:
            fast = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # something json writes and orjson refuses (an int key)
            pass
        else:
            if fast.isascii() and b"\x7f" not in fast:
                return fast
    packed = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return packed.encode()


def _schema_evictions(stages: Stages) -> bool:
    return any(stage["stage"] == "schema" and stage.get("evicted") for stage in stages)
