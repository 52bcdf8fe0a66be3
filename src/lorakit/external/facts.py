"""What an external run used, as the trainer sees it: its interpreter and that interpreter's packages (not
lorakit's). Its dataset folder is fingerprinted by ``lorakit.runs.fingerprint``.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Always asked for; a trainer file's `packages` adds more.
PACKAGES = ("torch", "transformers", "peft", "diffusers", "accelerate", "bitsandbytes", "xformers", "safetensors",
            "datasets", "trl", "llamafactory", "axolotl", "unsloth", "lycoris-lora", "open-clip-torch")
# Run by the trainer's interpreter: its packages, its prefix, and whether that is a virtualenv or conda env.
PROBE = """
import importlib.metadata as m, json, os, sys
versions = {}
for name in sys.argv[1:]:
    try:
        versions[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
conda = os.path.isdir(os.path.join(sys.prefix, "conda-meta"))
print(json.dumps({"executable": sys.executable, "version": sys.version.split()[0], "prefix": sys.prefix,
                  "virtualenv": sys.prefix != sys.base_prefix,
                  "conda_env": (os.environ.get("CONDA_DEFAULT_ENV") or os.path.basename(sys.prefix)) if conda else None,
                  "packages": versions}))
"""


def find_python(cmd: list[str], configured: str | None) -> str | None:
    """The trainer's interpreter: the configured one; the command's program when it is a python; else the
    interpreter on the ``#!`` line of a console script (``accelerate``, ``llamafactory-cli``)."""
    if configured:
        return shutil.which(configured) or configured
    program = Path(cmd[0]) if cmd else None
    if program is None:
        return None
    if program.name.startswith("python"):
        return str(program)
    try:
        with program.open("rb") as f:
            first = f.readline(200).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!") or "python" not in first:
        return None
    words = first[2:].split()
    if Path(words[0]).name == "env" and len(words) > 1:  # #!/usr/bin/env python3
        return shutil.which(words[-1])
    return words[0]


def interpreter_facts(python: str | None, extra: list[str]) -> dict[str, Any]:
    """The trainer interpreter's path, version, environment and package versions; an ``error`` when unknown."""
    if python is None:
        return {"error": "not a Python command; set trainer.python to record its packages"}
    try:
        done = subprocess.run([python, "-c", PROBE, *dict.fromkeys([*PACKAGES, *extra])], capture_output=True,
                              text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"executable": python, "error": f"could not ask it ({e})"}
    if done.returncode != 0:
        return {"executable": python, "error": (done.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])
