"""Process-wide settings for a training process on the host."""

from __future__ import annotations

import os
from pathlib import Path


def _count_cpu_list(text: str) -> int:
    """Entries in a kernel CPU list such as ``0-3,8``."""
    total = 0
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        total += int(last) - int(first) + 1 if last else 1
    return total


def physical_cores() -> int:
    """Cores this process may use, each physical core once: a second hyper-thread slows matmuls."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        per_core = _count_cpu_list(Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text())
    except (OSError, ValueError):
        per_core = 1
    return max(1, usable // max(1, per_core))


# Threads a training may use, set by whoever reserved CPUs for it (lorakit.launch.ray in a Ray task): tasks that
# share a node each keep to their own share instead of every one taking every core.
THREADS_ENV = "LORAKIT_THREADS"


def tune_host() -> None:
    """One intra-op thread per physical core, the cores shared out among this node's training processes.

    The C allocator is left alone on purpose: a fixed glibc mmap threshold (1 MiB) lowered the
    peak RSS of a Gemma-3 270M run by 0.9 GiB but cost 20-35% of its speed in page faults, and a
    single malloc arena or a malloc_trim after each step gained nothing (docs/benchmarks.md).
    """
    import torch

    if os.environ.get(THREADS_ENV, "").isdigit():  # the CPUs a scheduler reserved for this task (Ray)
        torch.set_num_threads(max(1, int(os.environ[THREADS_ENV])))
        return
    torch.set_num_threads(max(1, physical_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
