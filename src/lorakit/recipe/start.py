"""Before training: the checks that need no weights, then the run folder with its config files and first manifest.

Everything that can be checked without loading a model is checked here, before the run folder
exists, so a typo in a path or a bad data row leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorakit.config.load import LoadedConfig, apply_oom_overlay
from lorakit.config.schema import RunConfig
from lorakit.errors import ConfigError, DataError
from lorakit.model.resolve import check_model_reference, sha256_file
from lorakit.redaction import redact_text
from lorakit.runs.artifacts import copy_tracked_files
from lorakit.runs.folder import RunFolder
from lorakit.runs.provenance import code_state, environment, hardware, package_versions
from lorakit.textfile import check_text


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


def check_before_start(cfg: RunConfig, trains_here: bool = True) -> None:
    """The checks that need no weights: a typo in a path or a bad row fails here, before a run folder exists.

    ``trains_here`` adds what only this machine can answer (CUDA for NF4, trackers installed); a Slurm
    submission leaves those to the job.

    Raises:
        ConfigError, DataError, ModelError: the first problem found, in one line.
    """
    missing = [p for p in cfg.tracking.copy_files if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"tracking.copy_files: file not found: {', '.join(missing)}")
    for key, refs in (("data.train", cfg.data.train), ("data.eval", cfg.data.eval)):
        check_data_files(key, refs)
    check_model_reference(cfg.model.name_or_path)
    apply_oom_overlay(cfg)
    if trains_here:
        from lorakit.model.load import check_quantization
        from lorakit.train.trackers import check_trackers

        check_quantization(cfg.model)
        check_trackers(cfg.tracking)
        check_eval_metrics(cfg.train.eval_metrics)
    if cfg.train.sample_prompts is not None and not Path(cfg.train.sample_prompts).is_file():
        raise ConfigError(f"train.sample_prompts: file not found: {cfg.train.sample_prompts}")
    if cfg.lora.init_from:
        from lorakit.model.adapters import check_init_from_shape

        check_init_from_shape(cfg.lora)
    from lorakit.data.dataset import load_conversations, split_validation

    # Every row is read and converted once here (no tokenizer needed): a bad row is reported before a
    # run folder exists and before minutes of model conversion, not after.
    rows = load_conversations(cfg.data.train, cfg.data, per_file_cap=cfg.data.max_samples_per_file)
    if cfg.data.eval:
        load_conversations(cfg.data.eval, cfg.data)
    else:
        split_validation(rows, cfg.data.val_size, cfg.data.seed)


def check_data_files(key: str, refs: Sequence[str]) -> None:
    """Every file behind ``refs`` exists and is text (parquet aside).

    Raises:
        DataError: naming the config key and the file.
    """
    from lorakit.data.registry import data_files

    for ref in refs:
        try:
            files = data_files([ref])
        except DataError as e:
            raise DataError(f"{key}: {e}") from None
        for path in files:
            if not Path(path).is_file():
                raise DataError(f"{key}: data file not found: {path}")
            if not path.lower().endswith(".parquet"):
                check_text(Path(path), DataError)


# What each generated metric needs beyond lorakit's own dependencies.
METRIC_PACKAGES = {"chrf": "sacrebleu", "typst": "typst"}


def check_eval_metrics(metrics: Sequence[str], key: str = "train.eval_metrics") -> None:
    """Raises ConfigError naming the install when a metric's package is missing."""
    for metric in metrics:
        if metric in METRIC_PACKAGES and importlib.util.find_spec(METRIC_PACKAGES[metric]) is None:
            raise ConfigError(f"{key}: {metric} needs the {METRIC_PACKAGES[metric]} package: "
                              "pip install 'lorakit[eval]'")


def start_run(loaded: LoadedConfig, command_line: Sequence[str], trains_here: bool = True,
              record: dict[str, Any] | None = None) -> RunFolder:
    """Create the run folder with its config files and a first manifest (after ``check_before_start``).

    ``record``: more fields for the first manifest (a sweep's trial, the queue's dataset fingerprint).
    """
    cfg = loaded.config
    check_before_start(cfg, trains_here)
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
