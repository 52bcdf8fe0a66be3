"""Did an external trainer run out of memory? Its output, or how it died, says so.

CUDA and ROCm/HIP, Apple's MPS, PyTorch's CPU allocator, Python's MemoryError, and the kernel's OOM
killer, which leaves no message at all: the trainer (or the launcher's worker) is killed by SIGKILL,
seen as a negative return code or as 137 from a shell or launcher in between.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

from lorakit.proc import Finished

MARKERS = (
    "CUDA out of memory", "torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError", "OutOfMemoryError",
    "CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "HIP out of memory", "hipErrorOutOfMemory",
    "MPS backend out of memory", "DefaultCPUAllocator: can't allocate memory", "MemoryError",
)
KILLED = (-signal.SIGKILL, 128 + signal.SIGKILL)  # killed by SIGKILL directly, or as reported by a shell


def out_of_memory(done: Finished, extra: Sequence[str] = ()) -> str | None:
    """What shows the trainer ran out of memory (the marker, or the kill), or None."""
    if done.returncode == 0:
        return None
    for line in reversed(done.tail):
        for marker in (*MARKERS, *extra):
            if marker in line:
                return marker
    if done.returncode in KILLED:
        return "killed by SIGKILL: the kernel's out-of-memory killer, most likely"
    return None
