"""Facts about the software and machine a run used, for the manifest."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

TRACKED_PACKAGES = ("lorakit", "torch", "transformers", "peft", "accelerate", "safetensors", "bitsandbytes",
                    "datasets")


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "cpu_count": os.cpu_count()}
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info |= {"gpu": props.name, "gpu_count": torch.cuda.device_count(),
                     "gpu_memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info
