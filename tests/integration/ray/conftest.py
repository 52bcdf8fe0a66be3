"""A real local Ray cluster: a head (no CPUs, so it runs no task) and two worker nodes, each a `ray start` process
with its own custom resource (lorakit_node_a, lorakit_node_b) and one slot of lorakit_job, which every test task
asks for. A test tells where a task ran by the node's resource, and kills a node with SIGKILL.

Ray binds its servers to every interface of a machine and has no option to keep them on loopback, so the cluster,
the rclone server and every driver run in a network namespace of their own that has nothing but 127.0.0.1 (the
tests read and write the served folder directly, never through the network).
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.queue.conftest import PASSWORD, fill_training, free_port

NODES = ("a", "b")
JOB_RESOURCE = "lorakit_job"
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "PYTHONUNBUFFERED": "1"}


def _skip_reason() -> str | None:
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed (pip install 'lorakit[ray]'; the dev extra includes it)"
    if shutil.which("ray") is None or shutil.which("rclone") is None:
        return "the ray and rclone commands are needed"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        return "Ray's tests need a network namespace (unshare --net) to keep the cluster on loopback"
    return None


SKIP_REASON = _skip_reason()
needs_ray = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


@dataclass
class RayCluster:
    holder: subprocess.Popen  # holds the network namespace
    port: int
    temp: Path
    nodes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def inside(self, cmd: list[str]) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", *cmd]

    def run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.inside(cmd), env=ENV, capture_output=True, text=True, **kw)

    def popen(self, cmd: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.inside(cmd), env=ENV, **kw)

    def start_node(self, name: str) -> None:
        resources = json.dumps({f"lorakit_node_{name}": 1, JOB_RESOURCE: 1})
        self.nodes[name] = self.popen(["ray", "start", "--address", self.address, "--num-cpus", "1",
                                       "--resources", resources, "--temp-dir", str(self.temp), "--block"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.wait_for(lambda alive: f"lorakit_node_{name}" in alive, f"node {name} to join")

    def alive_resources(self) -> set[str]:
        code = (f"import json, ray; ray.init(address='{self.address}', logging_level='ERROR'); "
                "print(json.dumps([r for n in ray.nodes() if n['Alive'] for r in n['Resources']]))")
        done = self.run([sys.executable, "-c", code], timeout=60)
        return set(json.loads(done.stdout.strip().splitlines()[-1])) if done.returncode == 0 else set()

    def node_id(self, name: str) -> str:
        code = (f"import ray; ray.init(address='{self.address}', logging_level='ERROR'); print([n['NodeID'] "
                f"for n in ray.nodes() if n['Alive'] and 'lorakit_node_{name}' in n['Resources']][0])")
        return self.run([sys.executable, "-c", code], timeout=60, check=True).stdout.strip().splitlines()[-1]

    def wait_for(self, condition, what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not condition(self.alive_resources()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.5)  # polling the cluster's node table

    def kill(self, name: str) -> None:
        """SIGKILL the node as a lost machine dies: its raylet and every process under it at once (Ray's workers
        run in sessions of their own, so they are found by ancestry before anything is killed)."""
        for pid in [self.nodes[name].pid, *_descendants(self.nodes[name].pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.nodes[name].wait()

    def stop(self) -> None:
        for proc in self.nodes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        self.run(["ray", "stop", "--force"], timeout=60)
        self.holder.kill()
        shutil.rmtree(self.temp, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while listed
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture(scope="session")
def ray_cluster():
    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    holder = subprocess.Popen(["unshare", "--net", "sleep", "100000"])
    time.sleep(0.2)  # unshare has created the namespace once it execs sleep
    temp = Path(tempfile.mkdtemp(prefix="lkray", dir="/tmp"))  # Ray's socket paths must stay short
    cluster = RayCluster(holder, free_port(), temp)
    subprocess.run(cluster.inside(["ip", "link", "set", "lo", "up"]), check=True)
    head = cluster.popen(["ray", "start", "--head", "--port", str(cluster.port), "--num-cpus", "0",
                          "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(temp), "--block"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cluster.nodes["head"] = head
    try:
        cluster.wait_for(lambda alive: "node:__internal_head__" in alive, "the head")
        for name in NODES:
            cluster.start_node(name)
        yield cluster
    finally:
        cluster.stop()


@dataclass
class NsServer:
    root: Path
    port: int
    process: subprocess.Popen


@pytest.fixture
def ns_server(tmp_path, ray_cluster):
    """rclone serve webdav on 127.0.0.1 inside the cluster's namespace, training/ filled with three datasets."""
    root = tmp_path / "server"
    root.mkdir()
    port = free_port()
    proc = ray_cluster.popen(["rclone", "serve", "webdav", str(root), "--addr", f"127.0.0.1:{port}", "--user", "u",
                              "--pass", PASSWORD, "--dir-cache-time", "1s"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    probe = [sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"]
    while ray_cluster.run(probe).returncode != 0:
        assert proc.poll() is None and time.monotonic() < deadline, "rclone serve webdav did not start"
        time.sleep(0.2)  # polling the server's port
    fill_training(root)
    yield NsServer(root, port, proc)
    proc.terminate()
    proc.wait(timeout=10)
