"""Every check before a run starts, in one place, reporting every problem at once (as config errors do).

The checks themselves belong to the packages that know the subject (a data file, a model reference, a tracker,
a quantization) and take only their section of the config; this module decides which run when, and gathers
their answers. ``before_start`` runs before a run folder exists (nothing is left behind by a typo);
``before_loading`` runs again in the training process, which may be on another machine (a Slurm job), before
minutes of model conversion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lorakit.config.load import apply_oom_overlay
from lorakit.config.problems import problem_list
from lorakit.config.schema import RunConfig
from lorakit.errors import ConfigError, DataError, LorakitError
from lorakit.textfile import check_text


class Problems:
    """Runs checks and keeps what each one found, so all are reported together."""

    def __init__(self) -> None:
        self.found: list[LorakitError] = []

    def check(self, check: Callable[..., Any], *args: Any) -> Any:
        try:
            return check(*args)
        except LorakitError as e:
            self.found.append(e)
            return None

    def raise_any(self) -> None:
        """One problem: raised as it was; several: one error of the first one's kind listing them all."""
        if len(self.found) == 1:
            raise self.found[0]
        if self.found:
            lines = [line for e in self.found for line in str(e).splitlines()]
            raise type(self.found[0])(problem_list(f"{len(self.found)} problems before the run could start",
                                                   lines))


def before_start(cfg: RunConfig, trains_here: bool = True) -> None:
    """The checks that need no weights: a typo in a path or a bad row fails here, before a run folder exists.

    ``trains_here`` adds what only this machine can answer (CUDA for NF4, trackers installed); a Slurm
    submission leaves those to the job.

    Raises:
        ConfigError, DataError, ModelError, WriteError: every problem found (one per line when there are several).
    """
    from lorakit.model.resolve import check_model_reference
    from lorakit.runs.naming import check_runs_root

    problems = Problems()
    problems.check(check_runs_root, Path(cfg.output.dir))
    problems.check(check_files_exist, "tracking.copy_files", cfg.tracking.copy_files)
    problems.check(check_files_exist, "train.sample_prompts",
                   [cfg.train.sample_prompts] if cfg.train.sample_prompts else [])
    before_data = len(problems.found)
    problems.check(check_data_files, "data.train", cfg.data.train)
    problems.check(check_data_files, "data.eval", cfg.data.eval)
    data_present = len(problems.found) == before_data
    problems.check(check_model_reference, cfg.model.name_or_path)
    problems.check(apply_oom_overlay, cfg)
    if trains_here:
        _machine_checks(problems, cfg)
    if cfg.lora.init_from:
        from lorakit.model.adapters import check_init_from_shape

        problems.check(check_init_from_shape, cfg.lora)
    if data_present and not problems.found:  # rows are read only once every file is known to be there
        problems.check(check_rows, cfg)
    problems.raise_any()


def before_loading(cfg: RunConfig) -> tuple[RunConfig, str] | None:
    """In the training process, before the model is loaded: what this machine must have, the data files still
    there, the out-of-memory overlay valid. The config with the overlay applied, and what it changed.

    Raises:
        ConfigError, DataError, ModelError: every problem found.
    """
    problems = Problems()
    _machine_checks(problems, cfg)
    problems.check(check_data_files, "data.train", cfg.data.train)
    problems.check(check_data_files, "data.eval", cfg.data.eval)
    overlaid = problems.check(apply_oom_overlay, cfg)  # a broken overlay fails now, not at the first OOM
    problems.raise_any()
    return overlaid


def _machine_checks(problems: Problems, cfg: RunConfig) -> None:
    from lorakit.model.load import check_quantization
    from lorakit.train.distributed import check_strategy
    from lorakit.train.trackers import check_trackers

    problems.check(check_quantization, cfg.model)
    problems.check(check_trackers, cfg.tracking)
    problems.check(check_eval_metrics, cfg.train.eval_metrics)
    problems.check(check_strategy, cfg.launch.strategy, cfg.launch.nproc)


def check_files_exist(key: str, paths: Sequence[str]) -> None:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"{key}: file not found: {', '.join(missing)}")


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


def check_rows(cfg: RunConfig) -> None:
    """Every row read and converted once (no tokenizer needed): a bad row is reported before a run folder exists
    and before minutes of model conversion, not after."""
    from lorakit.data.dataset import load_conversations, split_validation

    pairs = cfg.train.method == "dpo"
    rows = load_conversations(cfg.data.train, cfg.data, per_file_cap=cfg.data.max_samples_per_file, pairs=pairs)
    if cfg.data.eval:
        load_conversations(cfg.data.eval, cfg.data, pairs=pairs)
    else:
        split_validation(rows, cfg.data.val_size, cfg.data.seed)


def check_eval_metrics(metrics: Sequence[str], key: str = "train.eval_metrics") -> None:
    """Raises ConfigError naming the install when a metric's package is missing."""
    from lorakit.infer.metrics import METRIC_PACKAGES, missing_packages

    missing = missing_packages(metrics)
    if missing:
        raise ConfigError(f"{key}: {missing[0]} needs the {METRIC_PACKAGES[missing[0]]} package: "
                          "pip install 'lorakit[eval]'")
