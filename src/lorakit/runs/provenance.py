"""Facts about the code, software, machine and environment a run used, for the manifest."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from lorakit.redaction import REDACTED, is_secret, redact_text

TRACKED_PACKAGES = ("lorakit", "torch", "transformers", "peft", "accelerate", "safetensors", "bitsandbytes",
                    "datasets", "trl")
# Variables that change what training does or where it runs; anything else is left out.
ENV_PREFIXES = ("LORAKIT_", "CUDA_", "PYTORCH_", "TORCH", "HF_", "TRANSFORMERS_", "ACCELERATE_", "NCCL_", "OMP_",
                "MKL_", "MALLOC_", "TOKENIZERS_", "SLURM_", "RCLONE_", "MLFLOW_", "WORLD_SIZE", "RANK",
                "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_state(path: str | Path) -> dict[str, Any]:
    """The commit, branch and dirty flag of the git repository holding ``path``."""
    where = Path(path).expanduser()
    if not where.exists():
        return {"path": str(path), "error": "no such folder"}
    if shutil.which("git") is None:
        return {"path": str(path), "error": "git is not installed"}

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(where if where.is_dir() else where.parent), *args],
                              capture_output=True, text=True, timeout=30)
        if done.returncode:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "git failed")
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changes = git("status", "--porcelain", "--untracked-files=no")
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
        root = git("rev-parse", "--show-toplevel")
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return {"path": str(path), "error": f"not a git repository ({e})"}
    return {"path": str(path), "root": root, "commit": commit, "branch": branch, "dirty": bool(changes),
            "changed_files": len(changes.splitlines())}


def code_state(named_repos: dict[str, str]) -> dict[str, dict[str, Any]]:
    """lorakit's own code, the working folder, and each repository named in ``tracking.repos``."""
    import lorakit

    state = {"lorakit": git_state(Path(lorakit.__file__).parent), "workdir": git_state(Path.cwd())}
    for name, path in named_repos.items():
        state[name] = git_state(path)
    return state


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """Training-relevant environment variables; secrets (by name or inside the value) are redacted."""
    env = dict(os.environ) if env is None else env
    return {name: REDACTED if is_secret(name) else redact_text(value) for name, value in sorted(env.items())
            if name.upper().startswith(ENV_PREFIXES)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "ram_gib": _ram_gib()}
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info |= {"gpu": props.name, "gpu_count": torch.cuda.device_count(),
                     "gpu_memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
                     "gpu_driver": _nvidia_driver()}
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def _nvidia_driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None
