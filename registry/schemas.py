"""Schema-aware resolution and the canonical schemas agents registered (MCP Mesh issue #547).

SDKs (3.8) normalize each tool's input and output JSON Schema into a canonical form and send it
with its content hash (``inputSchemaCanonical``/``inputSchemaHash``, ``outputSchema...``). A
dependency may carry the consumer's expected result schema (``expectedSchemaCanonical``,
``expectedSchemaHash``) and a ``matchMode``; then it resolves only to providers whose output
schema is compatible, as the Go registry's resolver and schema_match.go decide:

- no ``matchMode``: no schema check at all;
- a provider that published no output schema (no hash, or no canonical object beside it) is
  kept under ``subset`` (the rollout window: producers that predate schemas stay usable) and
  dropped under ``strict``;
- equal hashes are compatible in both modes; under ``strict`` any other hash is not;
- any other mode (``subset``, or a mode the Go registry does not know) compares structurally:
  every field the consumer requires must be in the producer with a compatible type
  (``integer`` serves ``number``; each of a consumer's type alternatives needs a compatible
  producer type; a missing type is "anything"), recursively through required fields and array
  ``items``; extra producer fields are fine; without an expected canonical schema anything goes.

The comparison reads the provider's own canonical schema from its registration; the Go
registry reads the row its store keeps for the hash, the same thing unless two registrations
sent one hash with different canonical forms (docs/protocol.md).

:class:`SchemaStore` keeps the canonical schemas of the registered agents for ``GET /schemas``:
content-addressed (one entry per hash, the first canonical form and runtime kept), created when
the first registration carrying the hash is applied, dropped when no registered agent carries it
any more. It lives in the view and is rebuilt from the log like everything else there: pure,
no clock (creation times are the events' timestamps).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

SUBSET = "subset"
STRICT = "strict"
RUNTIMES = ("python", "typescript", "java")

Reason = dict[str, Any]
"""One incompatibility, in the Go registry's audit shape (``path``, ``kind``, details)."""


@dataclass(frozen=True, slots=True)
class Expected:
    """A dependency's schema requirement: its ``matchMode`` (never empty) and expected schema."""

    mode: str
    hash: str
    canonical: dict[str, Any] | None = field(default=None, hash=False)

    @classmethod
    def parse(cls, spec: dict[str, Any]) -> Expected | None:
        """The requirement in a dependency spec; None when it asks for no schema check."""
        mode = spec.get("matchMode")
        if not isinstance(mode, str) or not mode:
            return None
        expected_hash = spec.get("expectedSchemaHash")
        canonical = spec.get("expectedSchemaCanonical")
        return cls(
            mode,
            expected_hash if isinstance(expected_hash, str) else "",
            canonical if isinstance(canonical, dict) else None,
        )


def published(tool: dict[str, Any], side: str) -> tuple[str, dict[str, Any]] | None:
    """``(hash, canonical)`` of a tool's ``side`` (``input`` or ``output``) schema, when it
    sent both (the Go registry records a hash only with its canonical form)."""
    schema_hash = tool.get(f"{side}SchemaHash")
    canonical = tool.get(f"{side}SchemaCanonical")
    if isinstance(schema_hash, str) and schema_hash and isinstance(canonical, dict):
        return schema_hash, canonical
    return None


def admits(expected: Expected | None, tool: dict[str, Any]) -> bool:
    """Whether a provider ``tool`` passes the schema check of a dependency (module docstring)."""
    return refusal(expected, tool) is None


def refusal(expected: Expected | None, tool: dict[str, Any]) -> dict[str, Any] | None:
    """Why a provider ``tool`` fails the schema check, as the Go registry's audit details it
    (``mode``, both hashes, and ``reasons`` where there are some); None when it passes."""
    if expected is None:
        return None
    output = published(tool, "output")
    if output is None:
        if expected.mode != STRICT:
            return None
        return {
            "mode": STRICT,
            "consumer_hash": expected.hash,
            "producer_hash": "",
            "reasons": [{"kind": "no_published_hash"}],
        }
    if expected.hash and expected.hash == output[0]:
        return None
    details = {"mode": expected.mode, "consumer_hash": expected.hash, "producer_hash": output[0]}
    if expected.mode == STRICT:
        return details
    if expected.canonical is None:
        return None
    reasons = incompatibilities("", expected.canonical, output[1])
    return {**details, "mode": SUBSET, "reasons": reasons} if reasons else None


def incompatibilities(
    path: str, consumer: dict[str, Any], producer: dict[str, Any]
) -> list[Reason]:
    """Why ``producer`` does not satisfy ``consumer`` under ``subset``; empty when it does.

    Keeps walking after a mismatch, so every reason is listed (what an audit wants to show).
    """
    reasons: list[Reason] = []
    if not _types_compatible(consumer.get("type"), producer.get("type")):
        reasons.append(
            {
                "path": path,
                "kind": "type_mismatch",
                "consumer_type": consumer.get("type"),
                "producer_type": producer.get("type"),
            }
        )
    wanted_fields = _dict(consumer.get("properties"))
    offered_fields = _dict(producer.get("properties"))
    for name in _strings(consumer.get("required")):
        if offered_fields is None or name not in offered_fields:
            reasons.append({"path": _join(path, name), "kind": "missing_field", "field": name})
            continue
        wanted = _dict(wanted_fields.get(name)) if wanted_fields is not None else None
        offered = _dict(offered_fields[name])
        if wanted is not None and offered is not None:
            reasons += incompatibilities(_join(path, name), wanted, offered)
    wanted_items = _dict(consumer.get("items"))
    if wanted_items is not None:
        offered_items = _dict(producer.get("items"))
        if offered_items is None:
            reasons.append({"path": _join(path, "[]"), "kind": "missing_items_schema"})
        else:
            reasons += incompatibilities(_join(path, "[]"), wanted_items, offered_items)
    return reasons


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _types(declared: Any) -> list[str]:
    if isinstance(declared, str):
        return [declared] if declared else []
    return [t for t in _strings(declared) if t]


def _types_compatible(consumer: Any, producer: Any) -> bool:
    wanted, offered = _types(consumer), _types(producer)
    if not wanted or not offered:
        return True
    return all(any(w == o or (w == "number" and o == "integer") for o in offered) for w in wanted)


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def carried(registration: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ``(hash, canonical)`` a registration publishes: tool by tool, input then output."""
    for tool in registration.get("tools") or ():
        for side in ("input", "output"):
            if (pair := published(tool, side)) is not None:
                yield pair


def runtime_origin(registration: dict[str, Any]) -> str:
    runtime = str(registration.get("runtime") or "").lower()
    return runtime if runtime in RUNTIMES else "unknown"


@dataclass(slots=True)
class Entry:
    """One canonical schema, as ``GET /schemas`` lists it, and the agents that carry it."""

    hash: str
    canonical: dict[str, Any]
    runtime_origin: str
    created_ms: int
    holders: set[str] = field(default_factory=set)

    def to_state(self) -> list[Any]:
        return [self.hash, self.canonical, self.runtime_origin, self.created_ms]


class SchemaStore:
    """The registered agents' canonical schemas by hash, in the order they first arrived."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def update(
        self,
        agent_id: str,
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
        ts_ms: int,
    ) -> None:
        """The agent's registration went from ``old`` to ``new`` (None: absent) at ``ts_ms``."""
        kept = dict(carried(new)) if new is not None else {}
        for schema_hash, _ in carried(old) if old is not None else ():
            entry = self.entries.get(schema_hash)
            if entry is not None and schema_hash not in kept:
                entry.holders.discard(agent_id)
                if not entry.holders:
                    del self.entries[schema_hash]
        for schema_hash, canonical in kept.items():
            entry = self.entries.get(schema_hash)
            if entry is None:
                origin = runtime_origin(new or {})
                entry = self.entries[schema_hash] = Entry(schema_hash, canonical, origin, ts_ms)
            entry.holders.add(agent_id)

    def newest_first(self) -> list[Entry]:
        """Newest first; among equal times (one registration's schemas) the later one first."""
        return sorted(reversed(self.entries.values()), key=lambda e: -e.created_ms)

    def to_state(self) -> list[list[Any]]:
        """The entries without their holders (those are rebuilt from the agents)."""
        return [entry.to_state() for entry in self.entries.values()]

    def restore(self, state: list[list[Any]]) -> None:
        """Entries from :meth:`to_state`; the agents' :meth:`update` calls add the holders, and
        :meth:`prune` then drops any that none holds."""
        self.entries = {item[0]: Entry(*item) for item in state}

    def prune(self) -> None:
        self.entries = {h: e for h, e in self.entries.items() if e.holders}
