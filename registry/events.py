"""The registry's facts: immutable events and their on-disk encoding.

Every state change is one of these events. The proposer (an HTTP handler or the leader's
health monitor) decides everything time- or environment-dependent, the timestamp included,
before the event enters the log; :func:`registry.view.apply` only ever reads the event.

Encoding: a record is ``crc32(body) || body`` where ``body`` is msgpack of
``[SCHEMA_VERSION, kind, ts_ms, payload]``. The checksum catches torn or corrupted records
that LMDB itself would not notice (a bad disk, a hand-edited file); a record that fails the
checksum, does not decode, or names an unknown schema or kind raises :class:`CorruptRecord`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

SCHEMA_VERSION: Final = 1

# Kinds of events. New kinds get new names; an existing kind's payload only ever gains keys.
UPSERT: Final = "upsert"
"""An agent registered or changed: payload ``{"agent": <normalized registration>}``."""
REMOVE: Final = "remove"
"""An agent left: payload ``{"agent_id": str, "reason": "unregister"|"expire"}``."""
HEALTH: Final = "health"
"""Liveness transitions: payload ``{"status": "healthy"|"unhealthy", "agent_ids": [str]}``."""
# MeshJob transitions (registry/jobs.py holds their payloads and their apply).
JOB_CREATE: Final = "job_create"
JOB_CLAIM: Final = "job_claim"
JOB_BATCH: Final = "job_batch"
JOB_RELEASE: Final = "job_release"
JOB_CANCEL: Final = "job_cancel"
JOB_RECLAIM: Final = "job_reclaim"
JOB_EXTEND: Final = "job_extend"
JOB_POST: Final = "job_post"
JOB_SWEEP: Final = "job_sweep"
JOB_PURGE: Final = "job_purge"
JOB_DRAIN: Final = "job_drain"
"""Drain mode on or off for the whole cluster (``/admin/drain``): payload ``{"on": bool}``."""
JOB_KINDS: Final = frozenset(
    {
        JOB_CREATE,
        JOB_CLAIM,
        JOB_BATCH,
        JOB_RELEASE,
        JOB_CANCEL,
        JOB_RECLAIM,
        JOB_EXTEND,
        JOB_POST,
        JOB_SWEEP,
        JOB_PURGE,
        JOB_DRAIN,
    }
)
TRUST_ENTITY: Final = "trust_entity"
"""A CA trusted for client certificates (registry/trust.py): payload ``{"name", "ca_pem",
"fingerprint", "subject", "expires"}``, and ``"if_not_revoked": true`` when imported from a
trust directory file found at start."""
IF_NOT_REVOKED: Final = "if_not_revoked"
"""A trust event's flag: not applied if the certificate was revoked or replaced before. Set by
the trust directory import for files already there when the process started, so a stale file
left on one replica's disk cannot undo an operator's revocation at its next restart; an
explicit registration (the admin API, a file written while the replica runs) has no flag."""
REVOKE_ENTITY: Final = "revoke_entity"
"""An entity no longer trusted: payload ``{"name": str, "fingerprint": str}``."""
ROTATE: Final = "rotate"
"""``POST /admin/rotate`` (``meshctl entity rotate``): every healthy agent of entity
``{"entity_id": str}`` (of any entity for ``""``), chosen at apply, is asked for a full
heartbeat (HEAD 202) so that it registers again with its current certificate."""
KINDS: Final = frozenset({UPSERT, REMOVE, HEALTH, TRUST_ENTITY, REVOKE_ENTITY, ROTATE}) | JOB_KINDS


class CorruptRecord(Exception):
    """A log or snapshot record that cannot be trusted; startup stops and names the index."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"corrupt record at log index {index}: {reason}")
        self.index = index
        self.reason = reason


@dataclass(frozen=True)
class Event:
    """One fact. ``ts_ms`` is wall-clock milliseconds chosen by the proposer (informative only)."""

    kind: str
    ts_ms: int
    payload: dict[str, Any] = field(hash=False)


def upsert(agent: dict[str, Any], ts_ms: int) -> Event:
    return Event(UPSERT, ts_ms, {"agent": agent})


def remove(agent_id: str, ts_ms: int, reason: str = "unregister") -> Event:
    return Event(REMOVE, ts_ms, {"agent_id": agent_id, "reason": reason})


def health(status: str, agent_ids: list[str], ts_ms: int) -> Event:
    return Event(HEALTH, ts_ms, {"status": status, "agent_ids": sorted(agent_ids)})


def trust_entity(entity: dict[str, Any], ts_ms: int, *, if_not_revoked: bool = False) -> Event:
    """Trust ``entity`` (a registry/trust.py record); ``if_not_revoked``: unless its certificate
    was revoked or replaced before (registry/trust.py, ``IF_NOT_REVOKED``)."""
    payload = {**entity, IF_NOT_REVOKED: True} if if_not_revoked else entity
    return Event(TRUST_ENTITY, ts_ms, payload)


def revoke_entity(name: str, fingerprint: str, ts_ms: int) -> Event:
    return Event(REVOKE_ENTITY, ts_ms, {"name": name, "fingerprint": fingerprint})


def rotate(entity_id: str, ts_ms: int) -> Event:
    return Event(ROTATE, ts_ms, {"entity_id": entity_id})


def agents_named(event: Event) -> list[str]:
    """The agents whose own record ``event`` may change: a registration's, a removal's, the
    ones a health decision names (what a projection rewrites after applying it)."""
    payload = event.payload
    if "agent" in payload:
        return [payload["agent"]["agent_id"]]
    if "agent_id" in payload:
        return [payload["agent_id"]]
    return list(payload.get("agent_ids", ()))


def encode(event: Event) -> bytes:
    """The record stored in the log for ``event`` (checksum first, then msgpack)."""
    body: bytes = msgpack.packb(
        [SCHEMA_VERSION, event.kind, event.ts_ms, event.payload], use_bin_type=True
    )
    return zlib.crc32(body).to_bytes(4, "big") + body


def decode(record: bytes, index: int) -> Event:
    """The event in ``record`` at log ``index``; raises CorruptRecord naming ``index``."""
    if len(record) < 5:
        raise CorruptRecord(index, "record too short")
    body = record[4:]
    if zlib.crc32(body).to_bytes(4, "big") != record[:4]:
        raise CorruptRecord(index, "checksum mismatch")
    try:
        decoded = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise CorruptRecord(index, f"undecodable msgpack ({exc})") from None
    if not isinstance(decoded, list) or len(decoded) != 4:
        raise CorruptRecord(index, "not an event record")
    version, kind, ts_ms, payload = decoded
    if version != SCHEMA_VERSION:
        raise CorruptRecord(index, f"unknown schema version {version!r}")
    if kind not in KINDS:
        raise CorruptRecord(index, f"unknown event kind {kind!r}")
    if not isinstance(ts_ms, int) or not isinstance(payload, dict):
        raise CorruptRecord(index, "malformed event fields")
    return Event(kind, ts_ms, payload)
