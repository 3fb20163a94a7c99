"""The pure core: event codec and apply, including snapshot-plus-replay equivalence."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import events
from registry.events import CorruptRecord, Event
from registry.registration import from_heartbeat
from registry.view import View, apply
from tests.conftest import agent_body

AGENTS = ["a-1", "a-2", "a-3", "a-4"]
CAPS = ["date", "weather", "llm"]


@st.composite
def event_strategy(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from([events.UPSERT, events.UPSERT, events.REMOVE, events.HEALTH]))
    ts = draw(st.integers(min_value=0, max_value=2**48))
    agent_id = draw(st.sampled_from(AGENTS))
    if kind == events.UPSERT:
        body = agent_body(
            agent_id,
            draw(st.sampled_from(CAPS)),
            deps=draw(st.lists(st.sampled_from(CAPS), max_size=2)),
            port=draw(st.integers(min_value=1, max_value=3)),
            tags=draw(st.lists(st.sampled_from(["x", "y"]), unique=True)),
            # JSON integers reach us through orjson, which stops at 64 bits (as msgpack does).
            extra_field=draw(
                st.one_of(st.none(), st.text(max_size=5), st.integers(-(2**63), 2**64 - 1))
            ),
        )
        return events.upsert(from_heartbeat(body), ts)
    if kind == events.REMOVE:
        return events.remove(agent_id, ts)
    status = draw(st.sampled_from(["healthy", "unhealthy"]))
    return events.health(status, draw(st.lists(st.sampled_from(AGENTS), unique=True)), ts)


event_lists = st.lists(event_strategy(), max_size=40)


def replay(evts: list[Event], view: View | None = None, start: int = 1) -> View:
    view = view or View(history_limit=16)
    for offset, event in enumerate(evts):
        apply(view, start + offset, event)
    return view


def comparable(view: View) -> dict[str, Any]:
    """The view's state, including every agent's current resolution (derived indexes)."""
    return {
        "state": view.to_state(),
        "resolutions": {agent_id: view.resolution(agent_id) for agent_id in view.agents},
    }


@settings(max_examples=150, deadline=None)
@given(event_lists, st.data())
def test_snapshot_at_any_point_plus_replay_equals_full_replay(
    evts: list[Event], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(evts)))
    full = replay(evts)
    prefix = replay(evts[:cut])
    # The snapshot goes through the same msgpack encoding the store uses.
    packed = msgpack.packb(prefix.to_state(), use_bin_type=True)
    restored = View.from_state(msgpack.unpackb(packed, raw=False, strict_map_key=False))
    resumed = replay(evts[cut:], restored, start=cut + 1)
    assert comparable(resumed) == comparable(full)


@settings(max_examples=200, deadline=None)
@given(event_strategy(), st.integers(min_value=1, max_value=2**40))
def test_codec_roundtrip(event: Event, index: int) -> None:
    assert events.decode(events.encode(event), index) == event


def test_corrupt_records_name_their_index() -> None:
    record = events.encode(events.remove("a-1", 5))
    flipped = record[:-1] + bytes([record[-1] ^ 1])
    with pytest.raises(CorruptRecord, match="index 42: checksum mismatch"):
        events.decode(flipped, 42)
    with pytest.raises(CorruptRecord, match="index 7"):
        events.decode(b"\x00", 7)
    body = msgpack.packb([events.SCHEMA_VERSION, "teleport", 1, {}])
    import zlib

    unknown = zlib.crc32(body).to_bytes(4, "big") + body
    with pytest.raises(CorruptRecord, match="index 9: unknown event kind 'teleport'"):
        events.decode(unknown, 9)
    future = msgpack.packb([99, "upsert", 1, {}])
    with pytest.raises(CorruptRecord, match="unknown schema version 99"):
        events.decode(zlib.crc32(future).to_bytes(4, "big") + future, 3)


def test_apply_ignores_what_cannot_apply_and_bounds_history() -> None:
    view = View(history_limit=3)
    assert apply(view, 1, events.remove("ghost", 1)) is False
    assert apply(view, 2, events.health("unhealthy", ["ghost"], 2)) is False
    assert view.agents == {} and len(view.history) == 0
    for i in range(3, 9):
        assert apply(view, i, events.upsert(from_heartbeat(agent_body(f"a-{i}", "c")), i))
    assert len(view.history) == 3
    assert [h["index"] for h in view.history] == [6, 7, 8]
    with pytest.raises(ValueError, match="already applied"):
        apply(view, 8, events.remove("a-8", 9))


def test_health_transitions() -> None:
    view = replay(
        [
            events.upsert(from_heartbeat(agent_body("p-1", "date")), 1),
            events.upsert(from_heartbeat(agent_body("c-1", "x", deps=["date"])), 2),
        ]
    )
    assert view.resolution("c-1")["x_fn"][0]["agent_id"] == "p-1"
    apply(view, 3, events.health("unhealthy", ["p-1"], 3))
    assert view.agents["p-1"].status == "unhealthy"
    assert view.resolution("c-1")["x_fn"][0]["status"] == "unresolved"
    assert view.resolution_changed("c-1")
    apply(view, 4, events.upsert(from_heartbeat(agent_body("p-1", "date")), 4))
    assert view.agents["p-1"].status == "healthy"
    assert not view.resolution_changed("c-1")


def test_expiry_does_not_remove_an_agent_that_came_back() -> None:
    body = from_heartbeat(agent_body("p-1", "date"))
    view = replay(
        [
            events.upsert(body, 1),
            events.health("unhealthy", ["p-1"], 2),
            events.upsert(body, 3),
            events.remove("p-1", 4, reason="expire"),
        ]
    )
    assert view.agents["p-1"].status == "healthy"
    assert apply(view, 5, events.remove("p-1", 5, reason="expire")) is False  # healthy again
    assert apply(view, 6, events.health("unhealthy", ["p-1", "ghost"], 6)) is True
    assert apply(view, 7, events.health("unhealthy", ["p-1"], 7)) is False  # already unhealthy
    assert apply(view, 8, events.remove("p-1", 8, reason="expire")) is True
    assert apply(view, 9, events.remove("p-1", 9)) is False  # already gone
    assert "p-1" not in view.agents
    assert view.history[-1]["event_type"] == "expire"
