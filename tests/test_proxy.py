"""Which registered agent a /proxy target names (registry/api/proxy.py)."""

from __future__ import annotations

from registry import events
from registry.api.proxy import registered_target
from registry.registration import from_heartbeat
from registry.view import View, apply


def test_only_registered_agents_ports_are_targets_the_host_before_ids_and_names() -> None:
    view = View()
    bodies = [
        {"agent_id": "a-1", "name": "worker", "http_host": "10.0.0.5", "http_port": 8080},
        {"agent_id": "b-1", "name": "other", "http_host": "a-1", "http_port": 8080},
        {"agent_id": "c-1", "name": "c", "http_host": "", "http_port": 9000},
    ]
    for index, body in enumerate(bodies, start=1):
        apply(view, index, events.upsert(from_heartbeat(body), 1000))
    assert registered_target(view, "10.0.0.5:8080") == "10.0.0.5:8080"
    assert registered_target(view, "a-1:8080") == "a-1:8080"  # b-1's host wins over a-1's id
    assert registered_target(view, "worker:8080") == "10.0.0.5:8080"  # by name: its host
    assert registered_target(view, "10.0.0.5:8081") is None
    assert registered_target(view, "10.0.0.9:8080") is None
    assert registered_target(view, "c-1:9000") == "0.0.0.0:9000"  # no host given: the default
    for malformed in ("10.0.0.5", "10.0.0.5:", "10.0.0.5:x", "10.0.0.5:0", "h:1:2"):
        assert registered_target(view, malformed) is None
