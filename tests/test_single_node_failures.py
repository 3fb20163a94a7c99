"""Single-node mode when its storage misbehaves: a full LMDB map, a locked SQLite projection."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import pytest

from registry.store import Store
from tests.conftest import Api, agent_body

TINY_MAP = 64 << 10
"""Room for a few dozen registrations in the log (LMDB's own pages take the rest)."""


async def test_full_lmdb_map_answers_503_applies_nothing_and_keeps_serving_reads(
    start_api: Callable[..., Awaitable[Api]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("registry.node.Store", functools.partial(Store, map_size=TINY_MAP))
    api = await start_api()
    registered: list[str] = []
    for n in range(500):
        state = (api.log_index, api.node.view.digest(), api.node.store.last_index())
        resp = await api.client.post("/heartbeat", json=agent_body(f"filler-{n}", "date"))
        if resp.status != 200:
            break
        registered.append(f"filler-{n}")
    else:
        pytest.fail("a 64 KiB map never filled up")
    assert resp.status == 503
    error = await resp.json()
    assert error["error"] == "registry unavailable"
    assert "storage full" in error["detail"] and str(TINY_MAP) in error["detail"]
    assert registered, "the map was full before the first write"
    # Nothing of the refused write reached the log or the view.
    assert (api.log_index, api.node.view.digest(), api.node.store.last_index()) == state
    assert f"filler-{len(registered)}" not in api.node.view.agents
    # The node keeps answering reads from the view it has; the same write is refused again.
    listing = await (await api.client.get("/agents")).json()
    assert sorted(a["id"] for a in listing["agents"]) == sorted(registered)
    assert (await api.client.head(f"/heartbeat/{registered[0]}")).status == 200
    assert (await api.client.get("/health")).status == 200
    assert (await api.client.get(f"/api/v1/agents/{registered[-1]}")).status == 200
    again = await api.client.post(
        "/heartbeat", json=agent_body(f"filler-{len(registered)}", "date")
    )
    assert again.status == 503
    assert (api.log_index, api.node.view.digest(), api.node.store.last_index()) == state
