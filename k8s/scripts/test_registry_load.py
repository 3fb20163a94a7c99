#!/usr/bin/env python3
"""test_registry_load.py: the guide's registry load test, against this registry's API.

Registers N agents concurrently with the guide's body (POST /api/v1/agents), counts status
200 as success, prints the guide's two lines, and exits 1 unless every registration
succeeded. With AUTH_TOKEN set (the Secret's value), requests carry
``Authorization: Bearer $AUTH_TOKEN``; /api/v1 writes need it whenever the registry has one.

    kubectl -n mcp-mesh port-forward svc/mcp-mesh-registry 8080:8080 &
    AUTH_TOKEN=$(kubectl -n mcp-mesh get secret mcp-registry-secret \\
        -o jsonpath='{.data.AUTH_TOKEN}' | base64 -d) python3 k8s/scripts/test_registry_load.py

Needs aiohttp (the registry's venv, or `pip install aiohttp`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import aiohttp


async def register_agent(
    session: aiohttp.ClientSession, url: str, agent_id: int, prefix: str
) -> tuple[bool, str]:
    """Register a test agent; (succeeded, reason)."""
    data = {
        "id": f"{prefix}-{agent_id}",
        "capabilities": ["test"],
        "endpoint": f"http://agent-{agent_id}:8080",
    }
    try:
        async with session.post(f"{url}/api/v1/agents", json=data) as response:
            if response.status == 200:
                return True, ""
            return False, f"HTTP {response.status}: {(await response.text())[:200]}"
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # noqa: UP041 (Python < 3.11)
        return False, f"{type(exc).__name__}: {exc}"


async def cleanup(session: aiohttp.ClientSession, url: str, count: int, prefix: str) -> None:
    await asyncio.gather(
        *(session.delete(f"{url}/api/v1/agents/{prefix}-{i}") for i in range(count)),
        return_exceptions=True,
    )


async def load_test(url: str, count: int, prefix: str, remove: bool, timeout: float) -> float:
    """Test registry under load; returns the success rate."""
    token = os.environ.get("AUTH_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(
        headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        start = time.time()

        # Register the agents concurrently
        tasks = [register_agent(session, url, i, prefix) for i in range(count)]
        results = await asyncio.gather(*tasks)

        duration = time.time() - start
        succeeded = sum(ok for ok, _ in results)
        success_rate = succeeded / len(results) if results else 0.0

        print(f"Registered {len(results)} agents in {duration:.2f}s")
        print(f"Success rate: {success_rate * 100:.1f}%")
        failures = [reason for ok, reason in results if not ok]
        for reason in sorted(set(failures))[:5]:
            print(f"  failure ({failures.count(reason)}x): {reason}", file=sys.stderr)
        if remove:
            await cleanup(session, url, count, prefix)
        return success_rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("REGISTRY_URL", "http://localhost:8080"),
        help="registry base URL (default: $REGISTRY_URL or http://localhost:8080)",
    )
    parser.add_argument("--agents", type=int, default=100, help="agents to register (100)")
    parser.add_argument("--prefix", default="test-agent", help="agent id prefix (test-agent)")
    parser.add_argument("--timeout", type=float, default=60.0, help="overall seconds (60)")
    parser.add_argument("--cleanup", action="store_true", help="delete the test agents afterwards")
    args = parser.parse_args(argv)
    rate = asyncio.run(
        load_test(args.url.rstrip("/"), args.agents, args.prefix, args.cleanup, args.timeout)
    )
    return 0 if rate == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
