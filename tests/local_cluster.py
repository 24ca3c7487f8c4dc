"""A real multi-node Ray cluster on this machine, for tests and benchmarks.

Every node is its own ``ray start --block`` process (its own session of one ``--temp-dir``,
its own ports), started in a new process group. ``stop()`` kills exactly those nodes: the
process groups it started plus every process descending from them (Ray's core workers put
themselves in their own groups). It never runs ``ray stop``, which would kill every Ray instance
on the machine, other people's included.

Processes run with ``RAY_AUTH_MODE=disabled``: Ray's token authentication otherwise refuses the
second node (a real cluster shares its token instead: docs/cluster.md).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
# Faster death notices: a killed raylet is declared dead after ~3 s, not ~30 s.
HEAD_ENV = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
            "RAY_health_check_timeout_ms": "1000", "RAY_health_check_initial_delay_ms": "1000"}


def cluster_env() -> dict:
    """Environment of the cluster's processes (and of drivers that join it)."""
    return dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
                PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_next_range = [(os.getpid() % 50) * 100]


def worker_port_range() -> int:
    """First port of a free 100-port block for one node's workers.

    The block lies below the kernel's ephemeral range, so no port the other components were
    given (``free_ports`` binds port 0, which draws from that range) can fall inside it; each
    node of this process gets the next block, and a block with any port in use is skipped.
    """
    top = _ephemeral_low() - 100
    for _ in range(400):
        lo = 10000 + _next_range[0] % max(100, top - 10000)
        lo -= lo % 100
        _next_range[0] += 100
        if all(_port_free(q) for q in range(lo, lo + 100)):
            return lo
    raise RuntimeError("no free block of 100 worker ports below the ephemeral range")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d.name))
    return kids


def descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _start_time(pid: int) -> str | None:
    """The process's start time (a pid is only killed if it still names the same process)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())[19]
    except (OSError, IndexError):
        return None


def _kill(pids: dict[int, str | None]) -> None:
    for pid, started in pids.items():
        if started is not None and _start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    num_cpus: int
    num_gpus: int
    resources: dict
    log: Path
    node_id: str | None = None
    pids: dict = field(default_factory=dict)  # pid -> start time of every process seen under this node

    def remember(self) -> None:
        self.pids.update({p: _start_time(p) for p in descendants(self.proc.pid)})

    def raylet_pid(self) -> int | None:
        for p in descendants(self.proc.pid):
            if _name(p) == "raylet":
                return p
        return None


class LocalCluster:
    """``LocalCluster(root).start(head_cpus=1, workers=[dict(num_cpus=1), ...])``.

    Each node carries a custom resource ``node_<name>`` (1 unit) so tests can tell the nodes
    apart in ``ray.nodes()``; ``node_ids`` maps names to Ray node ids.
    """

    def __init__(self, root: Path, dashboard: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # A short path: Ray's unix sockets live under the temp dir (108-byte limit).
        self.temp_dir = Path(f"/tmp/rc-{os.getpid()}-{free_ports(1)[0]}")
        self.dashboard = dashboard
        self.env = cluster_env()
        self.nodes: dict[str, Node] = {}
        self.port = self.dashboard_port = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _node_ports(self) -> list[str]:
        p = free_ports(6)
        workers = worker_port_range()
        return ["--node-manager-port", str(p[0]), "--object-manager-port", str(p[1]),
                "--dashboard-agent-listen-port", str(p[2]), "--dashboard-agent-grpc-port", str(p[3]),
                "--runtime-env-agent-port", str(p[4]), "--metrics-export-port", str(p[5]),
                # Worker ports: a small range of our own, away from other nodes' ranges.
                "--min-worker-port", str(workers), "--max-worker-port", str(workers + 99)]

    def _spawn(self, name: str, args: list[str], num_cpus: int, num_gpus: int, resources: dict, env: dict) -> Node:
        resources = {**resources, f"node_{name}": 1}
        cmd = [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.temp_dir),
               "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus), "--resources", json.dumps(resources),
               "--object-store-memory", str(200 * 2**20), "--disable-usage-stats",
               "--include-log-monitor", "false", *args, *self._node_ports()]
        log = self.root / f"{name}.log"
        out = open(log, "w")  # noqa: SIM115 - the node's log, written for the node's lifetime
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
                                cwd=self.root)
        node = Node(name, proc, num_cpus, num_gpus, resources, log)
        self.nodes[name] = node
        return node

    def start(self, head_cpus: int = 1, workers: dict | None = None, timeout: float = 180) -> LocalCluster:
        """Start the head, then the workers ({name: dict(num_cpus=, num_gpus=, resources=)})."""
        try:
            for attempt in range(3):
                self.port, self.dashboard_port, client_port = free_ports(3)
                dash = (
                    [
                        "--include-dashboard",
                        "true",
                        "--dashboard-host",
                        "127.0.0.1",
                        "--dashboard-port",
                        str(self.dashboard_port),
                    ]
                    if self.dashboard
                    else ["--include-dashboard", "false"]
                )
                head = self._spawn(
                    "head",
                    ["--head", "--port", str(self.port), "--ray-client-server-port", str(client_port), *dash],
                    head_cpus,
                    0,
                    {},
                    {**self.env, **HEAD_ENV},
                )
                try:
                    self._wait_port(self.port, timeout)
                    self.wait_nodes(timeout)
                    break
                except RuntimeError:  # `ray start`'s own 30 s registration window, on a loaded machine
                    if attempt == 2 or "timed out during startup" not in head.log.read_text():
                        raise
                    self._kill_node(head)
            # One at a time: on a loaded machine a raylet can miss `ray start`'s fixed 30 s
            # registration window when several start together.
            for name, spec in (workers or {}).items():
                self.add_node(name, timeout=timeout, **spec)
            if self.dashboard:
                self._wait_port(self.dashboard_port, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, name: str, num_cpus: int = 1, num_gpus: int = 0, resources: dict | None = None,
                 wait: bool = True, timeout: float = 180) -> Node:
        for attempt in range(3):
            node = self._spawn(name, ["--address", self.address], num_cpus, num_gpus, resources or {}, self.env)
            if not wait:
                return node
            try:
                self.wait_nodes(timeout)
                return node
            except RuntimeError:
                if attempt == 2 or "timed out during startup" not in node.log.read_text():
                    raise
                self._kill_node(node)
        return node

    def _check(self, node: Node) -> None:
        if node.proc.poll() is not None:
            raise RuntimeError(f"ray node {node.name} exited ({node.proc.returncode}): "
                               + node.log.read_text()[-2000:])

    def _wait_port(self, port: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self._check(self.nodes["head"])
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"port {port} of the head did not open in {timeout:.0f} s")

    def alive_nodes(self) -> dict[str, str]:
        """{node name: Ray node id} of the nodes the GCS sees alive."""
        import ray._raylet

        infos = ray._raylet.GcsClient(address=self.address).get_all_node_info(timeout=10).values()
        out = {}
        for info in infos:
            if info.state != 0:  # ALIVE
                continue
            for key in info.resources_total:
                if key.startswith("node_") and key[5:] in self.nodes:
                    out[key[5:]] = info.node_id.hex()
        return out

    def wait_nodes(self, timeout: float = 180) -> dict[str, str]:
        end = time.monotonic() + timeout
        want = {n for n, node in self.nodes.items() if node.proc.poll() is None}
        while True:
            for node in self.nodes.values():
                if node.name in want:
                    self._check(node)
            try:
                alive = self.alive_nodes()
            except Exception:  # the GCS is still starting
                alive = {}
            if want <= set(alive):
                for name, node_id in alive.items():
                    self.nodes[name].node_id = node_id
                return alive
            if time.monotonic() > end:
                raise TimeoutError(f"nodes {sorted(want - set(alive))} did not join in {timeout:.0f} s")
            time.sleep(0.5)

    @property
    def node_ids(self) -> dict[str, str]:
        return {n: node.node_id for n, node in self.nodes.items()}

    def kill_raylet(self, name: str) -> int:
        """SIGKILL one node's raylet (its workers die with it), as when a machine is lost."""
        node = self.nodes[name]
        node.remember()
        pid = node.raylet_pid()
        if pid is None:
            raise RuntimeError(f"no raylet under node {name}")
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        """Kill every process of this cluster's nodes (workers first, head last)."""
        for node in sorted(self.nodes.values(), key=lambda n: n.name == "head"):
            self._kill_node(node)
        import shutil

        shutil.rmtree(self.temp_dir, ignore_errors=True)

    @staticmethod
    def _kill_node(node: Node) -> None:
        node.remember()
        try:  # the group outlives its leader while any member lives (its id is not reused)
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _kill(node.pids)
        try:
            node.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
