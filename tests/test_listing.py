"""The cached agent listing equals a fresh rendering after any sequence of changes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import events
from registry.api.listing import RESTARTS, Listings, Select
from registry.api.render import agent_info
from registry.health import Liveness
from registry.registration import from_heartbeat
from registry.view import Agent, View, apply
from tests.conftest import agent_body
from tests.test_view_events import AGENTS, event_strategy

step = st.one_of(
    event_strategy().map(lambda event: ("event", event)),
    st.sampled_from(AGENTS).map(lambda agent_id: ("seen", agent_id)),
)


def fresh(view: View, liveness: Liveness) -> dict[str, Any]:
    agents = [agent_info(view, agent, liveness) for agent in view.agents.values()]
    return {"agents": agents, "count": len(agents)}


def everyone(view: View) -> list[Agent]:
    return list(view.agents.values())


def listed(listings: Listings, view: View, liveness: Liveness, select: Select = everyone) -> Any:
    return orjson.loads(asyncio.run(listings.body(view, select, liveness)))


def cached(listings: Listings, view: View, liveness: Liveness) -> dict[str, Any]:
    """The whole listing through both paths (reused whole, and per agent); they must agree."""
    whole = orjson.loads(asyncio.run(listings.everyone(view, liveness)))
    per_agent = listed(listings, view, liveness)
    for body in (whole, per_agent):
        assert isinstance(body.pop("timestamp"), str)
    assert whole == per_agent
    return dict(whole)


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=40))
def test_cached_listing_equals_fresh_rendering_after_every_step(steps: list[Any]) -> None:
    view, liveness, listings = View(history_limit=16), Liveness(), Listings(chunk=2)
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
    listed(listings, view, liveness)
    apply(view, len(AGENTS) + 1, events.remove(AGENTS[0], 0))
    body = listed(listings, view, liveness, lambda v: [v.agents[AGENTS[2]], v.agents[AGENTS[1]]])
    assert [a["id"] for a in body["agents"]] == [AGENTS[2], AGENTS[1]]
    assert body["count"] == 2
    assert AGENTS[0] not in listings._rendered


def _consumer_view() -> tuple[View, Liveness, Listings]:
    view, liveness, listings = View(), Liveness(), Listings()
    apply(view, 1, events.upsert(from_heartbeat(agent_body("a-1", "date", deps=["llm"])), 1))
    listed(listings, view, liveness)
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


def test_a_change_of_the_llm_answer_alone_invalidates_a_cached_agent() -> None:
    view, liveness, listings = View(), Liveness(), Listings()
    llm = agent_body("llm-1", "chat")
    llm["tools"][0]["llm_filter"] = {"filter": ["web"]}
    apply(view, 1, events.upsert(from_heartbeat(llm), 1))
    assert listed(listings, view, liveness)["agents"][0]["llm_tool_resolutions"][0]["status"] == (
        "unresolved"
    )
    web = agent_body("web-1", "web")
    web["tools"][0]["inputSchema"] = {"type": "object"}
    apply(view, 2, events.upsert(from_heartbeat(web), 2))
    body = cached(listings, view, liveness)
    assert body == fresh(view, liveness)
    assert body["agents"][0]["llm_tool_resolutions"][0]["provider_agent_id"] == "web-1"


def _populated(count: int) -> tuple[View, Liveness, Listings]:
    view, liveness, listings = View(), Liveness(), Listings(chunk=2)
    for n in range(1, count + 1):
        apply(view, n, events.upsert(from_heartbeat(agent_body(f"a-{n}", "date")), n))
    return view, liveness, listings


async def _list_while(
    view: View, listings: Listings, liveness: Liveness, write: Callable[[int], None], writes: int
) -> Any:
    """A whole listing while ``writes`` entries are applied, one at each pass through the loop."""

    async def writer() -> None:
        for n in range(writes):
            await asyncio.sleep(0)
            write(n)

    task = asyncio.create_task(writer())
    body = await listings.everyone(view, liveness)
    await task
    return orjson.loads(body)


def test_a_listing_overtaken_by_the_log_starts_over_and_shows_one_state() -> None:
    """The first agent's status changes after the first chunk was rendered: a listing that
    kept that chunk would show it healthy while the view (and a fresh rendering) says not."""
    view, liveness, listings = _populated(7)

    def mark_unhealthy(n: int) -> None:
        apply(view, 8, events.health("unhealthy", ["a-1"], 100))

    body = asyncio.run(_list_while(view, listings, liveness, mark_unhealthy, writes=1))
    assert body["agents"][0]["status"] == "unhealthy"
    assert isinstance(body.pop("timestamp"), str)
    assert body == fresh(view, liveness)


def test_a_log_that_keeps_moving_cannot_starve_a_listing() -> None:
    """An agent registered at every pass through the loop: after RESTARTS overtaken attempts
    the listing renders in one go, showing the agents of that moment."""
    view, liveness, listings = _populated(7)

    def register(n: int) -> None:
        apply(view, 8 + n, events.upsert(from_heartbeat(agent_body(f"w-{n}", "date")), 8 + n))

    body = asyncio.run(_list_while(view, listings, liveness, register, writes=20))
    assert len(view.agents) == 7 + 20  # the writer went on after the listing was done
    assert body["count"] == 7 + RESTARTS  # one registration per overtaken attempt
