"""Entries larger than pysyncobj's chunk size (64 KiB) replicate as ordinary entries.

pysyncobj sends an entry of ``appendEntriesBatchSizeBytes`` or more in chunks whose last one it
unpickles, miscounting where that is (a registration of a few hundred tools raised inside
the tick), and whose handling deletes entries the follower holds. Our leaders never chunk
(``replication/commands.py``: BATCH_BYTES exceeds every record) and our followers drop chunks;
so a large registration must reach every node, also one catching up from an empty disk.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import agent_body
from tests.processes import Registry
from tests.test_cluster import Cluster, all_ready, converged, get_json, leader_of, register

pytestmark = pytest.mark.slow

TOOLS = 300


def big_agent(agent_id: str, tools: int, description: int) -> dict[str, Any]:
    body = agent_body(agent_id, "big")
    body["tools"] = [
        {
            "function_name": f"tool_{i}",
            "capability": f"cap_{i}",
            "version": "1.0.0",
            "tags": [f"tag-{i}", "large"],
            "description": f"tool {i} " + "d" * description,
            "kwargs": {"function_name": f"tool_{i}", "timeout": 30},
        }
        for i in range(tools)
    ]
    return body


async def capabilities(session: aiohttp.ClientSession, node: Registry, agent_id: str) -> int:
    agent = await get_json(session, f"{node.url}/api/v1/agents/{agent_id}")
    return len(agent["capabilities"])


async def test_a_300_tool_registration_reaches_every_node_as_one_entry(
    tmp_path: Path, registries: list[Registry]
) -> None:
    cluster = Cluster(tmp_path, registries)
    cluster.start_all()
    nodes = cluster.nodes
    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes)
        leader = await leader_of(session, nodes)
        follower = nodes[(leader + 1) % 3]
        # Bodies of ~115 KiB and ~470 KiB: over the 64 KiB chunk size, the second near the
        # default MAX_REQUEST_BYTES (512 KiB).
        for agent_id, description in (("tools-300", 200), ("tools-300-long", 1400)):
            body = big_agent(agent_id, TOOLS, description)
            async with session.post(f"{follower.url}/heartbeat", json=body) as resp:
                assert resp.status == 200, await resp.text()
        for i in range(5):
            assert await register(session, nodes[i % 3], f"after-{i}")
        await converged(session, nodes)
        for node in nodes:
            assert await capabilities(session, node, "tools-300") == TOOLS
            assert await capabilities(session, node, "tools-300-long") == TOOLS

        # An emptied follower catches up through the log, large entries in its batches.
        victim = (leader + 2) % 3
        nodes[victim].kill()
        shutil.rmtree(nodes[victim].data_dir)
        cluster.start(victim)
        await all_ready(session, cluster.nodes)
        await converged(session, cluster.nodes)
        assert await capabilities(session, cluster.nodes[victim], "tools-300-long") == TOOLS
    for node in cluster.nodes:
        text = node.log_path.read_text()
        assert "failed _onTick" not in text
        assert "chunked append_entries" not in text
