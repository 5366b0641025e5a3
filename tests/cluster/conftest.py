"""A three-node RabbitMQ cluster on loopback, started by the tests themselves (issue 20).

Each node has its own node name (``RABBITMQ_NODENAME``), AMQP and distribution ports, data, log
and config files, no plugins (so nothing competes for the machine's management port), and all
share one Erlang cookie through ``$HOME/.erlang.cookie`` of a private home directory, which the
CLI tools read too. Node 1 boots first; nodes 2 and 3 then boot side by side and join it through
classic peer discovery (their ``rabbitmq.conf`` names node 1). docs/deploy.md describes the same
set-up for real hosts. Without ``rabbitmq-server`` the tests skip on a laptop and FAIL under CI.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.processes import free_port

SBIN = Path("/usr/lib/rabbitmq/bin")  # Debian's scripts that run as the calling user (not the wrapper)


def _tool(name: str) -> str | None:
    candidate = SBIN / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


@dataclass
class Node:
    name: str  # rc1@localhost
    port: int  # AMQP
    dist_port: int  # Erlang distribution
    base: Path

    @property
    def pid_file(self) -> Path:
        return self.base / "pid"


@dataclass
class RabbitCluster:
    home: Path
    nodes: list[Node] = field(default_factory=list)
    user: str = "guest"
    password: str = "guest"

    def env(self, node: Node | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env["HOME"] = str(self.home)  # the Erlang cookie: $HOME/.erlang.cookie, for nodes and CLI
        env["ERL_EPMD_ADDRESS"] = "127.0.0.1"
        if node is not None:
            env.update(
                {
                    "RABBITMQ_NODENAME": node.name,
                    "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                    "RABBITMQ_NODE_PORT": str(node.port),
                    "RABBITMQ_DIST_PORT": str(node.dist_port),
                    "RABBITMQ_CONFIG_FILE": str(node.base / "rabbitmq.conf"),
                    "RABBITMQ_CONF_ENV_FILE": str(node.base / "rabbitmq-env.conf"),  # not /etc/rabbitmq's
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.base / "enabled_plugins"),
                    "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(node.base / "log"),
                    "RABBITMQ_PID_FILE": str(node.pid_file),
                }
            )
        return env

    def ctl(self, node: Node, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [_tool("rabbitmqctl"), "-q", "-n", node.name, *args],
            env=self.env(),
            text=True,
            capture_output=True,
            timeout=timeout,
            check=check,
        )

    def url(self, nodes: list[Node] | None = None, vhost: str = "%2F") -> str:
        """The broker URL naming every node (shared/bus: the client tries them in turn)."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in (nodes or self.nodes))
        return f"amqp://{self.user}:{self.password}@{hosts}/{vhost}"

    def running(self, via: Node) -> list[str]:
        import json

        return sorted(json.loads(self.ctl(via, "cluster_status", "--formatter", "json").stdout)["running_nodes"])

    def leader(self, queue: str, via: Node) -> str:
        out = self.ctl(via, "list_queues", "name", "leader").stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return parts[1]
        raise AssertionError(f"queue {queue} is not in the cluster")

    def connections(self, node: Node) -> int:
        """Client connections held by ``node`` (a connection's pid names its node: <rc1@localhost.1.2.3>)."""
        out = self.ctl(node, "list_connections", "pid").stdout
        return sum(1 for line in out.splitlines() if line.strip().startswith(f"<{node.name}."))

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # --- life cycle --------------------------------------------------------------------------------
    def start(self, count: int = 3, prefix: str = "recept-rc") -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
        tag = secrets.token_hex(3)
        for index in range(1, count + 1):
            node = Node(f"{prefix}{index}-{tag}@localhost", free_port(), free_port(), self.home.parent / f"node{index}")
            node.base.mkdir(parents=True, exist_ok=True)
            (node.base / "rabbitmq-env.conf").write_text("")
            (node.base / "enabled_plugins").write_text("[].\n")
            self.nodes.append(node)
        first = self.nodes[0]
        for node in self.nodes:
            (node.base / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = 127.0.0.1:{node.port}\n"
                "loopback_users.guest = true\n"
                # Quorum queues need a majority: a node that lost it should not accept writes.
                "cluster_partition_handling = pause_minority\n"
                # The other nodes join the first as they boot (no stop_app/join_cluster/start_app
                # round of the slow CLI): classic peer discovery, the first node already running.
                + (
                    "cluster_formation.peer_discovery_backend = classic_config\n"
                    f"cluster_formation.classic_config.nodes.1 = {first.name}\n"
                    if node is not first
                    else ""
                )
            )
        self._boot(first)
        self._each(self._boot, self.nodes[1:])  # booting is the slow part: the others side by side
        deadline = time.monotonic() + 60
        while len(running := self.running(first)) != count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster runs {len(running)} of {count} nodes")
            time.sleep(1)

    def _boot(self, node: Node) -> None:
        subprocess.run(
            [_tool("rabbitmq-server"), "-detached"], env=self.env(node), check=True, capture_output=True, timeout=60
        )
        self.await_startup(node)

    def await_startup(self, node: Node, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            done = self.ctl(node, "await_startup", "--timeout", "30", check=False, timeout=60)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                log = "\n".join(p.read_text()[-2000:] for p in (node.base / "log").glob("*.log"))
                raise RuntimeError(f"node {node.name} did not start: {done.stderr[-500:]}\n{log}")
            time.sleep(1)

    def stop_node(self, node: Node) -> None:
        self.ctl(node, "stop", check=False, timeout=120)

    @staticmethod
    def _each(action, nodes: list[Node]) -> None:
        """``action(node)`` for every node at once (threads); the first failure is raised."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            for future in [pool.submit(action, node) for node in nodes]:
                future.result()

    def stop(self) -> None:
        self._each(self.stop_node, self.nodes)
        for node in self.nodes:  # whatever did not stop is killed by its own pid
            try:
                pid = int(node.pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, 0)
            except OSError:
                continue
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def rabbit_cluster(tmp_path_factory) -> RabbitCluster:
    if _tool("rabbitmq-server") is None or _tool("rabbitmqctl") is None:
        missing("rabbitmq-server (for a three-node cluster)")
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbit-cluster") / "home")
    try:
        try:
            cluster.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            missing(f"a three-node RabbitMQ cluster ({type(exc).__name__}: {str(exc)[:1500]})")
        yield cluster
    finally:
        cluster.stop()
