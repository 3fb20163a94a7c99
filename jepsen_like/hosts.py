"""Separate network hosts on one machine: network namespaces on a private bridge.

Each replica gets its own namespace (its own IP, its own ports), its own data directory (its
"PVC") and an ``/etc/netns/<ns>/hosts`` file that resolves the StatefulSet's DNS names, so
replication runs exactly as in a Kubernetes pod. The bridge lives in a namespace of its own
and the clients in another: nothing is added to the machine's own network namespace, and the
10.77.0.0/24 addresses exist only inside. :meth:`Network.down` removes everything, and is
safe to call twice or after a partial setup.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

STATEFULSET = "mcp-mesh-registry"
HEADLESS = "mcp-mesh-registry-headless"
NAMESPACE = "mcp-mesh"
DOMAIN = "cluster.local"
SUBNET = "10.77.0"
NETNS_ETC = Path("/etc/netns")
DATABASE_SERVICE = f"postgres.{NAMESPACE}.svc.{DOMAIN}"
"""The Service name of the PostgreSQL topology's database host (k8s/overlays/postgresql's
Service ``postgres``), resolved by every host's hosts file."""


def dns_name(ordinal: int) -> str:
    return f"{STATEFULSET}-{ordinal}.{HEADLESS}.{NAMESPACE}.svc.{DOMAIN}"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


@dataclass
class Host:
    name: str
    netns: str
    ip: str


RESET = "meta l4proto tcp reject with tcp reset"
"""An nftables action for :meth:`Network.drop_ips`: refuse TCP at once (no packet reaches the
socket; the peer's connection is reset)."""


class Network:
    """Replica hosts ``n0..`` plus a client host ``cl``, all on one bridge; with ``database``,
    also a database host ``db`` (the PostgreSQL topology's server, a pod of its own)."""

    def __init__(self, run_id: str, replicas: int, database: bool = False) -> None:
        self.prefix = f"jl{run_id}"
        self.switch = f"{self.prefix}-sw"
        self.hosts = [
            Host(f"n{i}", f"{self.prefix}-n{i}", f"{SUBNET}.{11 + i}") for i in range(replicas)
        ]
        self.client = Host("cl", f"{self.prefix}-cl", f"{SUBNET}.100")
        self.database = Host("db", f"{self.prefix}-db", f"{SUBNET}.5") if database else None
        self._next_ip = 50

    @property
    def everyone(self) -> list[Host]:
        return [*self.hosts, self.client, *([self.database] if self.database else [])]

    def up(self) -> None:
        run("ip", "netns", "add", self.switch)
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for host in self.everyone:
            inside, outside = f"{self.prefix}{host.name}a", f"{self.prefix}{host.name}b"
            run("ip", "netns", "add", host.netns)
            run("ip", "link", "add", inside, "type", "veth", "peer", "name", outside)
            run("ip", "link", "set", inside, "netns", host.netns)
            run("ip", "link", "set", outside, "netns", self.switch)
            run("ip", "-n", host.netns, "link", "set", inside, "name", "eth0")
            run("ip", "-n", self.switch, "link", "set", outside, "master", "br0")
            run("ip", "-n", self.switch, "link", "set", outside, "up")
            run("ip", "-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            run("ip", "-n", host.netns, "link", "set", "eth0", "up")
            run("ip", "-n", host.netns, "link", "set", "lo", "up")
        self.write_hosts_files()

    def write_hosts_files(self) -> None:
        """Every host resolves every replica's StatefulSet DNS name to its current IP."""
        lines = ["127.0.0.1 localhost"]
        lines += [f"{host.ip} {dns_name(i)}" for i, host in enumerate(self.hosts)]
        if self.database is not None:
            lines.append(f"{self.database.ip} {DATABASE_SERVICE}")
        for host in self.everyone:
            directory = NETNS_ETC / host.netns
            directory.mkdir(parents=True, exist_ok=True)
            # Rewritten in place: running processes see it through a bind mount of this
            # inode (`ip netns exec`), which a rename would leave pointing at the old file.
            (directory / "hosts").write_text("\n".join(lines) + "\n")

    def change_ip(self, ordinal: int) -> str:
        """Give replica ``ordinal`` a new address (a pod rescheduled elsewhere)."""
        host = self.hosts[ordinal]
        run("ip", "-n", host.netns, "addr", "del", f"{host.ip}/24", "dev", "eth0")
        host.ip = f"{SUBNET}.{self._next_ip}"
        self._next_ip += 1
        run("ip", "-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        self.write_hosts_files()
        return host.ip

    def drop(self, ordinal: int, sources: list[int], direction: str = "input") -> None:
        """In replica ``ordinal``'s namespace, drop packets from (input) or to (output) peers."""
        self.drop_ips(ordinal, [self.hosts[s].ip for s in sources], direction)

    def drop_ips(
        self,
        ordinal: int,
        ips: list[str],
        direction: str = "input",
        table: str = "jepsen",
        action: str = "drop",
    ) -> None:
        """In replica ``ordinal``'s namespace, drop packets from (input) or to (output) the
        addresses ``ips``, with rules in nftables table ``table`` (one table per fault lets
        two partitions active at once heal one at a time: :meth:`heal_table`). ``action`` is
        what the rule does after matching the address: :data:`RESET` answers TCP with a reset
        at once, so the sender fails fast instead of waiting out its timeout."""
        host = self.hosts[ordinal]
        nft = ["ip", "netns", "exec", host.netns, "nft"]
        run(*nft, "add", "table", "inet", table)
        run(
            *nft,
            "add",
            "chain",
            "inet",
            table,
            direction,
            f"{{ type filter hook {direction} priority 0; }}",
        )
        field = "saddr" if direction == "input" else "daddr"
        for ip in ips:
            run(*nft, "add", "rule", "inet", table, direction, "ip", field, ip, *action.split())

    def heal_table(self, ordinal: int, table: str) -> None:
        """Remove one fault's rules (:meth:`drop_ips`) from replica ``ordinal``'s namespace."""
        netns = self.hosts[ordinal].netns
        run("ip", "netns", "exec", netns, "nft", "delete", "table", "inet", table, check=False)

    def heal_everything(self) -> None:
        """No rule left in any host's namespace, whatever table it is in."""
        for host in self.everyone:
            run("ip", "netns", "exec", host.netns, "nft", "flush", "ruleset", check=False)

    def heal(self) -> None:
        for host in self.hosts:
            run(
                "ip",
                "netns",
                "exec",
                host.netns,
                "nft",
                "delete",
                "table",
                "inet",
                "jepsen",
                check=False,
            )

    def down(self) -> None:
        for host in [*self.everyone, Host("sw", self.switch, "")]:
            pids = run("ip", "netns", "pids", host.netns, check=False).stdout.split()
            for pid in pids:
                run("kill", "-9", pid, check=False)
            run("ip", "netns", "del", host.netns, check=False)
            shutil.rmtree(NETNS_ETC / host.netns, ignore_errors=True)


def available() -> str | None:
    """Why this machine cannot run the harness, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install iproute2 nftables)"
    probe = f"jlprobe{os.getpid()}"
    made = run("ip", "netns", "add", probe, check=False)
    run("ip", "netns", "del", probe, check=False)
    if made.returncode != 0:
        return f"cannot create network namespaces: {made.stderr.strip()}"
    return None
