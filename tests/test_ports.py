"""The test servers' ports stay out of the range outgoing connections take source ports from."""

from tests.ports import _ephemeral_range, free_port


def test_free_ports_are_outside_the_ephemeral_range_and_never_handed_out_twice() -> None:
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert all(not low <= port <= high for port in ports)
    assert len(set(ports)) == len(ports)
