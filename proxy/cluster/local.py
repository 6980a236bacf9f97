"""A real multi-node Ray cluster on 127.0.0.1, for the tests and ``maskproxy bench --live --cluster``.

A head with no CPU and no consult slot (as a production head should be), plus media nodes that each
declare ``maskproxy_consult`` slots; every node is a separate set of Ray processes
(``ray.cluster_utils.Cluster``), so a node can be killed while the others carry on. This process joins as
the driver. Nothing listens beyond loopback and Ray sends no usage statistics; its logs stay in Ray's own
temporary folder (``/tmp/ray``), as with any Ray cluster on the machine.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

#: Set before Ray is imported (Ray reads them once): keep every node on 127.0.0.1 instead of the host's own
#: address, and send no usage statistics anywhere.
LOOPBACK_ENVIRONMENT = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
#: Ray's node health checks for a quick failover: a dead node is noticed within about 2 s (Ray's default
#: takes about 15 s: a check every 3 s, 5 missed).
FAST_FAILOVER = {"health_check_period_ms": 500, "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}


class LocalCluster:
    """``media_nodes`` nodes with ``slots`` consult slots each, and a head; ``with LocalCluster(...) as c:``."""

    def __init__(self, media_nodes: int = 2, slots: int = 1, cpus: int = 1, fast_failover: bool = False) -> None:
        self.media_nodes = media_nodes
        self.slots = slots
        self.cpus = cpus
        self.fast_failover = fast_failover
        self.cluster: Any = None
        self.nodes: list[Any] = []  #: the media nodes' ray._private.node.Node objects, alive or not

    def __enter__(self) -> LocalCluster:
        for name, value in LOOPBACK_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        import ray
        from ray.cluster_utils import Cluster

        from proxy.cluster.actor import NAMESPACE

        head: dict[str, Any] = {"num_cpus": 0, "include_dashboard": False, "node_ip_address": "127.0.0.1"}
        if self.fast_failover:
            head["_system_config"] = FAST_FAILOVER
        try:
            self.cluster = Cluster(initialize_head=True, head_node_args=head)
            for _ in range(self.media_nodes):
                self.add_media_node()
            ray.init(address=self.cluster.address, namespace=NAMESPACE, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        ray.shutdown()
        if self.cluster is not None:
            self.cluster.shutdown()

    @property
    def address(self) -> str:
        """The head's GCS address (what ``--cluster`` and ``ray start --address`` take)."""
        return str(self.cluster.address)

    def add_media_node(self) -> Any:
        from proxy.cluster.actor import RESOURCE

        node = self.cluster.add_node(num_cpus=self.cpus, resources={RESOURCE: self.slots},
                                     node_ip_address="127.0.0.1")
        self.nodes.append(node)
        return node

    def kill_node(self, node_id: str) -> None:
        """Kill every process of the media node ``node_id`` at once (its workers first), as a power cut would."""
        from ray._private import ray_constants

        node = next(n for n in self.nodes if n.node_id == node_id and n in self.cluster.worker_nodes)
        raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        for pid in _descendants(raylet):  # the workers, e.g. the consult's actor with its peers
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.cluster.remove_node(node, allow_graceful=False)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found
