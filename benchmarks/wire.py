"""Per-message cost of the peer wire against pysyncobj's (``python -m benchmarks.wire``).

One typical ``append_entries`` (a batch of registration events, as a leader sends under load)
and its ``next_node_idx`` answer, each encoded by one side and decoded by the other:

- pysyncobj's wire with a password: ``pickle.dumps`` + ``zlib.compress(level 3)`` + Fernet
  (AES-128-CBC + HMAC-SHA256 + base64), then the reverse: what ``TcpConnection`` did;
- ours: msgpack + ChaCha20-Poly1305 frame (``replication/wire.py``, ``replication/codec.py``),
  then the reverse.

Prints microseconds per message and bytes on the wire. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import pickle
import time
import zlib
from collections.abc import Callable
from typing import Any

from pysyncobj.encryptor import getEncryptor

from registry import events
from replication import codec, commands, wire

KEY = "benchmark-wire-key-0123456789abcdef"
"""Any ENCRYPTION_KEY of at least 32 bytes (shorter ones are refused)."""


def _registration(i: int) -> bytes:
    agent = {
        "agent_id": f"agent-{i}",
        "name": "agent",
        "agent_type": "mcp_agent",
        "version": "1.0.0",
        "http_host": "10.0.0.1",
        "http_port": 9000 + i,
        "namespace": "default",
        "tools": [
            {
                "function_name": f"tool_{t}",
                "capability": f"cap_{t}",
                "version": "1.0.0",
                "tags": ["a", "b"],
                "dependencies": [{"capability": "date"}],
            }
            for t in range(3)
        ],
    }
    return commands.regular(events.encode(events.upsert(agent, 1_700_000_000_000 + i)))


def messages(batch: int) -> dict[str, Any]:
    entries = [(b"\x00" + _registration(i), 1000 + i, 7) for i in range(batch)]
    append = {
        "type": "append_entries",
        "term": 7,
        "commit_index": 999,
        "entries": entries,
        "prevLogIdx": 999,
        "prevLogTerm": 7,
    }
    ack = {"type": "next_node_idx", "next_node_idx": 1000 + batch, "reset": False, "success": True}
    return {"append_entries": append, "next_node_idx": ack}


def _pysyncobj() -> Callable[[Any], tuple[Any, int]]:
    fernet = getEncryptor("benchmark-key")
    last = [0]

    def round_trip(message: Any) -> tuple[Any, int]:
        data = fernet.encrypt_at_time(zlib.compress(pickle.dumps(message, 2), 3), int(time.time()))
        size = len(data) + 4
        stamp = fernet.extract_timestamp(data)
        assert stamp >= last[0]
        last[0] = stamp
        return pickle.loads(zlib.decompress(fernet.decrypt(data))), size

    return round_trip


def _ours() -> Callable[[Any], tuple[Any, int]]:
    client = wire.ClientHandshake(wire.Secret.from_key(KEY))
    handshake = wire.ServerHandshake(wire.Secret.from_key(KEY))
    finish, client_session = client.finish(handshake.reply(client.hello()))
    server = handshake.finish(finish)

    def round_trip(message: Any) -> tuple[Any, int]:
        frame = client_session.sealer.seal(codec.encode(message))
        header, body = frame[: wire.HEADER.size], frame[wire.HEADER.size :]
        wire.frame_length(header)
        return codec.decode(server.opener.open(header, body)), len(frame)

    return round_trip


def measure(
    round_trip: Callable[[Any], tuple[Any, int]], message: Any, seconds: float
) -> tuple[float, int]:
    """Microseconds per encode+decode, and the bytes one message takes on the wire."""
    _, size = round_trip(message)
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(50):
            round_trip(message)
        count += 50
    return elapsed / count * 1e6, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=20, help="entries per append_entries")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args()
    for name, message in messages(args.batch).items():
        for wire_name, make in (("pysyncobj pickle+zlib+Fernet", _pysyncobj), ("ours", _ours)):
            micros, size = measure(make(), message, args.seconds)
            print(f"{name:16} {wire_name:30} {micros:9.1f} us/message {size:7d} bytes")


if __name__ == "__main__":
    main()
