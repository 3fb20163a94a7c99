"""Is one key's history linearizable? A Wing-Gong / Lowe search over a register model.

Model: a register that holds a value or nothing (the agent is absent).
- ``write(v)``: the register becomes ``v``.
- ``delete``: it becomes absent; a result of True requires it to have held a value, False
  requires it to have been absent (an unknown result allows either).
- ``read``: its result must equal the register (None for absent).

Failed operations never happened and are dropped; reads with unknown outcome constrain
nothing and are dropped. Operations with unknown outcome (``info``) may take effect at any
moment after their invocation, or never. The search linearizes, one at a time, any
operation invoked before the earliest completion among the operations still owed, and
memoizes (set linearized, register) pairs it has already explored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jepsen_like.history import DELETE, FAIL, INFO, OK, READ, WRITE, Op

ABSENT = None
MAX_STEPS = 2_000_000


@dataclass
class Verdict:
    valid: bool | None  # None: the search gave up (too many steps)
    key: str
    ops: int
    steps: int
    stuck_at: dict[str, Any] | None = None


def _apply(op: Op, state: Any) -> tuple[bool, Any]:
    """Whether ``op`` may happen with the register at ``state``, and the register after it."""
    if op.f == WRITE:
        return True, op.value
    if op.f == DELETE:
        if op.outcome == OK and op.result is not None and bool(op.result) != (state is not ABSENT):
            return False, state
        return True, ABSENT
    if op.f == READ:
        return op.result == state, state
    raise ValueError(f"not a register operation: {op.f}")


def check_key(key: str, ops: list[Op], initial: Any = ABSENT) -> Verdict:
    relevant = [
        op
        for op in ops
        if op.f in (WRITE, DELETE, READ)
        and op.outcome != FAIL
        and not (op.f == READ and op.outcome == INFO)
    ]
    relevant.sort(key=lambda op: op.start)
    n = len(relevant)
    owed = 0
    for i, op in enumerate(relevant):
        if op.outcome == OK:
            owed |= 1 << i
    # Operations with an unknown outcome never fall due: they are never owed.
    never = float("inf")
    ends = [op.end if op.outcome == OK and op.end is not None else never for op in relevant]
    seen: set[tuple[int, Any]] = set()
    steps = 0
    deepest: tuple[int, Op | None] = (-1, None)

    def search(done: int, state: Any, depth: int) -> bool | None:
        nonlocal steps, deepest
        if owed & ~done == 0:
            return True
        if (done, state) in seen:
            return False
        seen.add((done, state))
        steps += 1
        if steps > MAX_STEPS:
            return None
        deadline = min(ends[i] for i in range(n) if owed >> i & 1 and not done >> i & 1)
        for i in range(n):
            if done >> i & 1:
                continue
            op = relevant[i]
            if op.start >= deadline:
                break  # sorted by start: nothing later may go first
            allowed, after = _apply(op, state)
            if not allowed:
                if depth > deepest[0]:
                    deepest = (depth, op)
                continue
            found = search(done | 1 << i, after, depth + 1)
            if found is None or found:
                return found
        return False

    result = search(0, initial, 0)
    stuck = None
    if result is False and deepest[1] is not None:
        op = deepest[1]
        stuck = {
            "f": op.f,
            "value": op.value,
            "result": op.result,
            "process": op.process,
            "start": op.start,
            "end": op.end,
            "node": op.node,
        }
    return Verdict(result, key, n, steps, stuck)
