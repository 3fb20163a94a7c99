"""Schema-aware resolution and GET /schemas side by side with the Go registry (npm 3.7).

The same registrations go to the Go registry binary and to ours (one node, and a 3-replica
cluster written and read through different replicas): providers with and without published
output schemas, consumers whose dependencies expect a schema under ``subset``, ``strict``, a
mode the Go registry does not know, and none; then a provider leaves, one changes its output
schema and the one that left comes back. Every consumer's ``dependencies_resolved`` after each
round must be identical, and so must ``GET /schemas`` (timestamps aside), ``meshctl list
--schemas`` and ``meshctl schema diff``, except for the difference docs/protocol.md lists (a
schema no registered agent carries any more), which is asserted here as each registry answers.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.compat.test_llm import Target, our_urls  # noqa: F401 (fixture)
from tests.compat.test_meshctl_and_go import go_registry, mesh_cli  # noqa: F401 (fixtures)
from tests.processes import Registry
from tests.test_cluster import all_ready, until
from tests.timing import scaled

pytestmark = [pytest.mark.compat, pytest.mark.slow]


def h(char: str) -> str:
    return "sha256:" + char * 64


PERSON = {
    "properties": {"age": {"type": "integer"}, "name": {"type": "string"}},
    "required": ["age", "name"],
    "type": "object",
}
NAME_ONLY = {"properties": {"name": {"type": "string"}}, "required": ["name"], "type": "object"}
RICH = {
    "properties": {
        "age": {"type": "integer"},
        "name": {"type": "string"},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["address", "age", "name", "tags"],
    "type": "object",
}
AGE_NUMBER = {"properties": {"age": {"type": "number"}}, "required": ["age"], "type": "object"}
NESTED = {
    "properties": {
        "address": {"type": "object", "properties": {"city": {}}, "required": ["city"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["address", "tags"],
    "type": "object",
}
ARGS = {"properties": {"id": {"type": "string"}}, "required": ["id"], "type": "object"}


def provider(
    agent_id: str,
    port: int,
    version: str,
    output: tuple[str, dict[str, Any]] | None,
    runtime: str = "python",
    tags: tuple[str, ...] = (),
) -> dict[str, Any]:
    person: dict[str, Any] = {
        "function_name": "get_person",
        "capability": "person",
        "version": version,
        "tags": list(tags),
        "inputSchemaHash": h("9"),
        "inputSchemaCanonical": ARGS,
    }
    if output is not None:
        person |= {"outputSchemaHash": output[0], "outputSchemaCanonical": output[1]}
    return {"agent_id": agent_id, "name": agent_id, "http_host": "127.0.0.1", "http_port": port,
            "runtime": runtime, "tools": [person]}  # fmt: skip


PROVIDERS = {
    "pa": provider("pa", 9001, "1.0.0", (h("a"), PERSON)),
    "pb": provider("pb", 9002, "2.0.0", (h("b"), NAME_ONLY), runtime="typescript"),
    "pc": provider("pc", 9003, "0.5.0", None),  # publishes no output schema
    "pd": provider("pd", 9004, "1.5.0", (h("d"), RICH), tags=("rich",)),
    "pe": provider("pe", 9005, "1.2.0", (h("e"), AGE_NUMBER), runtime="java"),
}
CHANGED_PB = provider("pb", 9002, "2.0.0", (h("f"), PERSON), runtime="typescript")


def expecting(mode: str | None, schema: tuple[str, dict[str, Any] | None], **more: Any) -> Any:
    spec: dict[str, Any] = {"capability": "person", "expectedSchemaHash": schema[0], **more}
    if schema[1] is not None:
        spec["expectedSchemaCanonical"] = schema[1]
    if mode is not None:
        spec["matchMode"] = mode
    return spec


# function name -> its one dependency
DEPENDENCIES = {
    "subset_person": expecting("subset", (h("1"), PERSON)),
    "subset_name": expecting("subset", (h("2"), NAME_ONLY)),
    "subset_number": expecting("subset", (h("3"), AGE_NUMBER)),
    "subset_nested": expecting("subset", (h("4"), NESTED)),
    "subset_nobody": expecting("subset", (h("5"), {"required": ["salary"], "type": "object"})),
    "subset_no_canonical": expecting("subset", (h("6"), None)),
    "subset_same_hash": expecting("subset", (h("b"), {"required": ["zzz"]})),
    "subset_tagged": expecting("subset", (h("1"), PERSON), tags=["-rich"]),
    "strict_a": expecting("strict", (h("a"), PERSON)),
    "strict_b": expecting("strict", (h("b"), NAME_ONLY)),
    "strict_unknown": expecting("strict", (h("7"), PERSON)),
    "strict_versioned": expecting("strict", (h("a"), PERSON), version=">=2.0.0"),
    "unknown_mode": expecting("fuzzy", (h("1"), PERSON)),
    "no_mode": expecting(None, (h("1"), PERSON)),
}
CONSUMERS = {
    name: {
        "agent_id": f"c-{name.replace('_', '-')}",
        "http_host": "127.0.0.1",
        "http_port": 9100 + i,
        "tools": [{"function_name": name, "capability": f"use-{i}", "dependencies": [dep]}],
    }
    for i, (name, dep) in enumerate(DEPENDENCIES.items())
}


async def schemas(target: Target) -> list[tuple[str, Any, str]]:
    """GET /schemas as (hash, canonical, runtime_origin), newest first."""
    async with target.session.get(f"{target._url()}/schemas", params=target.reads) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert body["count"] == len(body["schemas"])
    return [(s["hash"], s["canonical"], s["runtime_origin"]) for s in body["schemas"]]


Round = tuple[dict[str, str], list[tuple[str, Any, str]]]
"""Each consumer's chosen provider (agent/function/endpoint, "" unresolved) and the schemas."""


async def resolve_all(target: Target) -> dict[str, Any]:
    chosen = {}
    for name, body in CONSUMERS.items():
        answer = (await target.post(body))["dependencies_resolved"][name]
        assert len(answer) == 1
        chosen[name] = answer[0]
    return chosen


async def scenario(target: Target, mesh_cli: Path) -> tuple[dict[str, Round], list[str]]:  # noqa: F811
    """Every round's answers, and meshctl's views of the first round (through the last URL)."""
    rounds: dict[str, Round] = {}
    for body in PROVIDERS.values():
        await target.post(body)
    rounds["registered"] = (await resolve_all(target), await schemas(target))
    views = await meshctl_views(target, mesh_cli)
    await target.delete("pd")
    rounds["left"] = (await resolve_all(target), await schemas(target))
    await target.post(CHANGED_PB)
    rounds["changed"] = (await resolve_all(target), await schemas(target))
    await target.post(PROVIDERS["pd"])
    rounds["back"] = (await resolve_all(target), await schemas(target))
    return rounds, views


def meshctl(mesh_cli: Path, *args: str) -> str:  # noqa: F811 (the fixture's name)
    done = subprocess.run(
        [str(mesh_cli / "meshctl"), *args], capture_output=True, text=True, timeout=60
    )
    # Colours and times (created_at) aside; exit status kept.
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    text = re.sub(r"\d{4}-\d{2}-\d{2}[T ][\d:.]+Z?", "<time>", text)
    return f"exit {done.returncode}\n{text}"


async def meshctl_views(target: Target, mesh_cli: Path) -> list[str]:  # noqa: F811
    """What meshctl shows, read from the target's last URL once that node has applied every
    acknowledged write (meshctl cannot ask for a linearizable read)."""
    expected = await schemas(target)
    last = Target(target.session, target.urls[-1:], ours=False)

    async def caught_up() -> bool:
        return await schemas(last) == expected

    await until(caught_up)
    at = ("--registry-url", target.urls[-1])
    return [
        meshctl(mesh_cli, "list", "--schemas", *at),
        meshctl(mesh_cli, "list", "--schemas", "--limit", "2", *at),
        meshctl(mesh_cli, "schema", "diff", h("a"), h("d"), *at),
        meshctl(mesh_cli, "schema", "diff", h("d"), h("e"), "--json", *at),
        meshctl(mesh_cli, "schema", "diff", h("a"), h("a"), "--json", *at),
        meshctl(mesh_cli, "schema", "diff", h("a"), h("7"), *at),  # unknown: an error
    ]


async def test_schema_resolution_and_listings_match_the_go_registry(
    our_urls: list[str],  # noqa: F811 (the fixture imported above)
    registries: list[Registry],
    go_registry: str,  # noqa: F811
    mesh_cli: Path,  # noqa: F811
) -> None:
    timeout = aiohttp.ClientTimeout(total=scaled(30))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await all_ready(session, registries)

        theirs, go_views = await scenario(Target(session, [go_registry], ours=False), mesh_cli)
        ours, our_views = await scenario(Target(session, our_urls, ours=True), mesh_cli)
    assert our_views == go_views
    assert "Fields only in B:\n  + address (object)\n  + tags (array)" in go_views[2]
    assert "schema not found" in go_views[-1] and go_views[-1].startswith("exit 1")
    assert ours.keys() == theirs.keys()
    for round_name in ours:
        assert ours[round_name][0] == theirs[round_name][0], round_name

    # What the table expects of both (so that agreeing on nothing could not pass).
    def chosen(round_name: str) -> dict[str, str]:
        return {name: item["agent_id"] for name, item in theirs[round_name][0].items()}

    assert chosen("registered") == {
        "subset_person": "pd",  # pa, pd and pc (no schema: kept) qualify; pd's version is highest
        "subset_name": "pb",
        "subset_number": "pd",  # integer serves number; pe's number serves it too
        "subset_nested": "pd",
        "subset_nobody": "pc",
        "subset_no_canonical": "pb",
        "subset_same_hash": "pb",  # equal hashes: its unsatisfiable canonical is not compared
        "subset_tagged": "pa",
        "strict_a": "pa",
        "strict_b": "pb",
        "strict_unknown": "",
        "strict_versioned": "",
        "unknown_mode": "pd",
        "no_mode": "pb",
    }
    assert (chosen("left")["subset_person"], chosen("left")["subset_number"]) == ("pa", "pe")
    assert chosen("changed")["subset_person"] == "pb" and chosen("changed")["strict_b"] == ""
    assert chosen("back")["subset_person"] == "pb"

    # GET /schemas: the same entries in the same order while every schema is carried. The Go
    # registry keeps a schema nothing carries any more (pd's after its DELETE, pb's old one
    # after its change) until its sweep, and keeps its creation time when it is carried again;
    # ours drops it at once, and lists it as new when it comes back.
    first = theirs["registered"][1]
    assert [entry[0] for entry in first] == [h("e"), h("d"), h("b"), h("a"), h("9")]
    assert [entry[2] for entry in first] == ["java", "python", "typescript", "python", "python"]
    assert ours["registered"][1] == first
    assert ours["left"][1] == [e for e in theirs["left"][1] if e[0] != h("d")]
    assert ours["changed"][1] == [e for e in theirs["changed"][1] if e[0] not in (h("d"), h("b"))]
    returned = [e for e in theirs["back"][1] if e[0] == h("d")]
    assert ours["back"][1] == returned + [
        e for e in theirs["back"][1] if e[0] not in (h("d"), h("b"))
    ]
