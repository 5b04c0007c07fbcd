"""A real Redis Cluster for tests: three primaries of the redis-server the other suites use.

Each node runs with ``cluster-enabled yes`` on a loopback port whose cluster-bus port (port +
10000; Redis 6.2 has no ``cluster-port``) is free too. The 16,384 slots are split in three
ranges (CLUSTER ADDSLOTS), the nodes meet (CLUSTER MEET), and the cluster is ready when every
node reports ``cluster_state:ok`` and knows all three.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from its_common.localstack.servers import RedisServer, ServerError

SLOTS = 16384
BUS_OFFSET = 10000


def free_port_with_bus() -> int:
    """A loopback port p with p + 10000 free as well."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port + BUS_OFFSET > 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
                try:
                    bus.bind(("127.0.0.1", port + BUS_OFFSET))
                except OSError:
                    continue
            return port
    raise ServerError("no loopback port with a free cluster-bus port")


@dataclass
class ClusterNode(RedisServer):
    def argv(self) -> list[str]:
        return [
            *super().argv(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.data_dir / "nodes.conf"),
            "--cluster-node-timeout", "5000",
            "--appendonly", "no",
        ]  # fmt: skip


@dataclass
class RedisClusterServers:
    base_dir: Path
    size: int = 3
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The seed URL services get (any node)."""
        return self.nodes[0].url

    def start(self, timeout_s: float = 30.0) -> RedisClusterServers:
        for index in range(self.size):
            node = ClusterNode(self.base_dir / f"node{index}", port=free_port_with_bus())
            self.nodes.append(node)
            node.start()
        per_node = SLOTS // self.size
        for index, node in enumerate(self.nodes):
            first = index * per_node
            last = SLOTS - 1 if index == self.size - 1 else first + per_node - 1
            with self._client(node) as client:
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
        with self._client(self.nodes[0]) as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        self._wait_ok(timeout_s)
        return self

    def _wait_ok(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                with self._client(node) as client:
                    fields = client.cluster("INFO")
                states.append(
                    fields.get("cluster_state") == "ok"
                    and int(fields.get("cluster_known_nodes", 0)) == self.size
                )
            if all(states):
                return
            state = str(states)
            time.sleep(0.1)
        raise ServerError(f"Redis Cluster not ready in {timeout_s:.0f}s: {state}")

    @staticmethod
    def _client(node: RedisServer) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=node.port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes.clear()
