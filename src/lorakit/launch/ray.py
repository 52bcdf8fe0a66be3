"""Ray, for the queue and sweeps: connect to a cluster (one line when it cannot be reached), the options each task
is submitted with, and which node a task runs on.

Ray is the engine (scheduling by resources, retrying a task whose node died); lorakit only says what each task
reserves and keeps its own records of what ran where.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from lorakit.config.schema import RaySection, parse_memory_size
from lorakit.errors import LaunchError

INSTALL_HINT = "pip install 'lorakit[ray]'"
# What Ray gives every node, so not a name for one: the rest of a node's resources tell nodes apart.
STANDARD_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory", "accelerator_type")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise LaunchError(f"the ray executor needs Ray: {INSTALL_HINT}") from None
    return ray


def _probe(address: str) -> None:
    """A host:port that does not answer is one line now, rather than Ray's minute of retries."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # auto, ray://..., or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise LaunchError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start it (ray start "
                          "--head) or set the address of its head") from None


def connect(section: RaySection) -> Any:
    """The ``ray`` module, connected to the cluster ``section.address`` names.

    Raises:
        LaunchError: Ray is not installed, or the cluster cannot be reached (one line).
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    _probe(section.address)
    try:
        ray.init(address=section.address, logging_level="WARNING", configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LaunchError(f"cannot reach the Ray cluster at {section.address}: {first}") from None
    return ray


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def task_options(section: RaySection) -> dict[str, Any]:
    """What ``ray.remote(...).options`` gets for one task: its resources, and Ray's retries when a node dies
    (never on an exception of ours: a failed training is a result, not a lost node)."""
    options: dict[str, Any] = {"num_cpus": section.num_cpus, "num_gpus": section.num_gpus,
                               "max_retries": section.max_retries, "retry_exceptions": False}
    if section.memory:
        options["memory"] = parse_memory_size(section.memory)
    if section.resources:
        options["resources"] = dict(section.resources)
    return options


@dataclass(frozen=True)
class Node:
    """The node a task runs on, as lorakit reports it."""

    node_id: str
    ip: str
    hostname: str
    resources: tuple[str, ...]  # its custom resources, by name

    def describe(self) -> str:
        extra = f" [{', '.join(self.resources)}]" if self.resources else ""
        return f"node {self.node_id[:8]} ({self.hostname}, {self.ip}){extra}"


def keep_to_reserved_cpus() -> None:
    """Inside a task: its training (here or in a child process) uses the CPUs Ray reserved for it, no more (Ray
    would let every task on a node take every core, and two trainings on two cores then ran 5x slower)."""
    import os

    import ray

    from lorakit.train.host import THREADS_ENV

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus and cpus >= 1:
        os.environ[THREADS_ENV] = str(int(cpus))


def this_node() -> Node:
    """Inside a task: the node it runs on."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    info = next((n for n in ray.nodes() if n.get("NodeID") == node_id), {})
    custom = sorted(k for k in info.get("Resources", {}) if k not in STANDARD_RESOURCES and not k.startswith("node:"))
    return Node(node_id, str(info.get("NodeManagerAddress", "")), socket.gethostname(), tuple(custom))
