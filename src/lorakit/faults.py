"""Fault injection for tests: one environment variable, one format, nothing on the hot path when it is unset.

``LORAKIT_FAULTS=point[:n]`` (several comma-separated) arms named points in the code:

- ``reached(point)`` kills the process with SIGKILL (as ``kill -9`` or a lost machine would: no clean-up, no
  ``finally``) the ``n``-th time ``point`` is reached (the first time without ``:n``). The queue's stages
  (``transition`` counts state changes, ``before-upload``, ``before-delete:remote-data``, ``delete:local-data``
  once per file, ...) and the sweep's (``trial<N>:step<S>``, ``trial<N>:trained``, ``trial<N>:told``) use it.
- ``number(point)`` is the ``n`` of a point that is a quantity, not a place: ``oom-tokens:N`` makes a micro-batch
  of more than N tokens run out of memory. The training loop reads it once, before its first step.
  ``free-bytes:N`` is the free space the check before a run's first step sees (a Slurm job's disk, made full).

A fault point only ever stops the process or raises: it never deletes, writes or uploads anything itself, so
what a test sees after a kill is what the real code left behind.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "LORAKIT_FAULTS"
_hits: Counter[str] = Counter()


def armed() -> dict[str, int]:
    """The armed points and their ``n`` (1 when not given)."""
    points: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in os.environ.get(ENV, "").split(","))):
        point, _, n = item.rpartition(":") if item.rpartition(":")[2].isdigit() else (item, "", "1")
        points[point] = int(n)
    return points


def reached(point: str) -> None:
    """Die here, as ``kill -9`` would, the ``n``-th time this point is reached when it is armed."""
    if ENV not in os.environ:
        return
    n = armed().get(point)
    if n is None:
        return
    _hits[point] += 1  # counted per process; ``reset`` for a test that runs the code again in-process
    if _hits[point] >= n:
        os.kill(os.getpid(), signal.SIGKILL)


def number(point: str) -> int | None:
    """The ``n`` of an armed quantity point (``oom-tokens:60`` -> 60); None when it is not armed."""
    if ENV not in os.environ:
        return None
    return armed().get(point)


def arm(*points: str) -> dict[str, str]:
    """The environment entry that arms ``points`` (``"transition:2"``, ``"before-upload"``), for tests."""
    return {ENV: ",".join(points)}


def reset() -> None:
    """Forget the hits counted so far (a test running the armed code again in the same process)."""
    _hits.clear()
