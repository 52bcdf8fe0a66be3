"""Before training: the run folder with its config files and first manifest, made only once every check that
needs no weights passed (``recipe.checks``), so a typo in a path or a bad data row leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorakit.config.load import LoadedConfig
from lorakit.errors import DataError
from lorakit.model.resolve import sha256_file
from lorakit.recipe.checks import before_start
from lorakit.redaction import redact_text
from lorakit.runs.artifacts import copy_tracked_files
from lorakit.runs.folder import RunFolder
from lorakit.runs.provenance import code_state, environment, hardware, package_versions


def data_hashes(refs: Sequence[str]) -> dict[str, str]:
    """sha256 of every file the data entries read (a LLaMA-Factory registry and its datasets included)."""
    from lorakit.data.registry import data_files

    hashes = {}
    for ref in refs:
        try:
            files = data_files([ref])
        except DataError:  # a registry that is gone or broken: its files count as missing
            files = []
        hashes.update({f: sha256_file(Path(f)) for f in files if Path(f).is_file()})
    return hashes


def start_run(loaded: LoadedConfig, command_line: Sequence[str], trains_here: bool = True,
              record: dict[str, Any] | None = None, checked: bool = False) -> RunFolder:
    """Create the run folder with its config files and a first manifest, once ``recipe.checks.before_start`` passed.

    ``record``: more fields for the first manifest (a sweep's trial, the queue's dataset fingerprint).
    ``checked``: the caller ran ``before_start`` itself (and more), so it is not run twice.
    """
    cfg = loaded.config
    if not checked:
        before_start(cfg, trains_here)
    copies = [*cfg.tracking.copy_files, *([cfg.train.sample_prompts] if cfg.train.sample_prompts else [])]
    run = RunFolder.create(
        Path(cfg.output.dir), loaded.run_name,
        command_line=list(command_line),
        working_directory=os.getcwd(),  # relative paths in the config are relative to it
        config=cfg.model_dump(mode="json"),
        config_sha256=loaded.sha256,
        config_files={str(f): sha256_file(Path(f)) for f in [*loaded.files, cfg.train.oom.overlay]
                      if f is not None and Path(f).is_file()},
        overrides=list(loaded.overrides),
        data_files=data_hashes([*cfg.data.train, *cfg.data.eval]),
        versions=package_versions(),
        hardware=hardware(),
        code=code_state(cfg.tracking.repos),
        environment=environment(),
        parent=None,
        **(record or {}),
    )
    run_dir = run.path
    run.update(copied_files={source: {"copy": str(copy.relative_to(run_dir)), "sha256": sha256_file(copy)}
                             for source, copy in copy_tracked_files(copies, run_dir).items()})
    (run_dir / "config.resolved.yaml").write_text(redact_text(loaded.to_yaml()), encoding="utf-8")
    (run_dir / "config.sources.txt").write_text(redact_text("\n".join(loaded.sources) + "\n"), encoding="utf-8")
    return run
