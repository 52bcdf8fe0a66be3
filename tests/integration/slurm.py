"""Whether a local Slurm is up (scripts/local-slurm.sh start; .ci/run starts it)."""

import os
import shutil
import subprocess

import pytest


def slurm_is_up() -> bool:
    if not os.environ.get("SLURM_CONF") or shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


needs_slurm = pytest.mark.skipif(not slurm_is_up(), reason="no local Slurm: eval \"$(scripts/local-slurm.sh start)\"")
