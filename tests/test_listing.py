"""The cached agent listing equals a fresh rendering after any sequence of changes."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import events
from registry.api.listing import Listings
from registry.api.render import agent_info
from registry.health import Liveness
from registry.registration import from_heartbeat
from registry.view import View, apply
from tests.conftest import agent_body
from tests.test_view_events import AGENTS, event_strategy

step = st.one_of(
    event_strategy().map(lambda event: ("event", event)),
    st.sampled_from(AGENTS).map(lambda agent_id: ("seen", agent_id)),
)


def fresh(view: View, liveness: Liveness) -> dict[str, Any]:
    agents = [agent_info(view, agent, liveness) for agent in view.agents.values()]
    return {"agents": agents, "count": len(agents)}


def cached(listings: Listings, view: View, liveness: Liveness) -> dict[str, Any]:
    """The whole listing through both paths (reused whole, and per agent); they must agree."""
    whole = orjson.loads(listings.everyone(view, liveness))
    per_agent = orjson.loads(listings.body(view, view.agents.values(), liveness))
    for body in (whole, per_agent):
        assert isinstance(body.pop("timestamp"), str)
    assert whole == per_agent
    return dict(whole)


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=40))
def test_cached_listing_equals_fresh_rendering_after_every_step(steps: list[Any]) -> None:
    view, liveness, listings = View(history_limit=16), Liveness(), Listings()
    index = 0
    for kind, arg in steps:
        if kind == "event":
            index += 1
            apply(view, index, arg)
        else:
            liveness.seen(arg)
        assert cached(listings, view, liveness) == fresh(view, liveness)


def test_a_subset_is_listed_in_view_order_and_departed_agents_are_forgotten() -> None:
    view, liveness, listings = View(), Liveness(), Listings()
    for n, agent_id in enumerate(AGENTS, start=1):
        apply(view, n, events.upsert(from_heartbeat(agent_body(agent_id, "date")), n))
    listings.body(view, view.agents.values(), liveness)
    apply(view, len(AGENTS) + 1, events.remove(AGENTS[0], 0))
    chosen = [view.agents[AGENTS[2]], view.agents[AGENTS[1]]]
    body = orjson.loads(listings.body(view, chosen, liveness))
    assert [a["id"] for a in body["agents"]] == [AGENTS[2], AGENTS[1]]
    assert body["count"] == 2
    assert AGENTS[0] not in listings._rendered


def _consumer_view() -> tuple[View, Liveness, Listings]:
    view, liveness, listings = View(), Liveness(), Listings()
    apply(view, 1, events.upsert(from_heartbeat(agent_body("a-1", "date", deps=["llm"])), 1))
    listings.body(view, view.agents.values(), liveness)
    return view, liveness, listings


def test_each_input_of_a_cached_agent_invalidates_it() -> None:
    """One change of each kind after the agent's JSON was cached (the property test above
    reaches some of these only rarely)."""
    view, liveness, listings = _consumer_view()
    changes = [
        lambda: apply(view, 2, events.health("unhealthy", ["a-1"], 2)),  # status
        lambda: apply(view, 3, events.upsert(from_heartbeat(agent_body("a-2", "llm")), 3)),
        lambda: liveness.seen("a-1"),  # last_seen only
        # A new registration within the same millisecond: timestamps unchanged.
        lambda: apply(view, 4, events.upsert(from_heartbeat(agent_body("a-1", "date")), 1)),
    ]
    for change in changes:
        change()
        assert cached(listings, view, liveness) == fresh(view, liveness)
