"""A sweep on disk and its Optuna study: ``sweeps/<name>/`` holds what was asked (sweep.json) and the study's
journal (journal.log), which every worker, here or in a Slurm job, reads and appends to under a file lock.

Optuna is the engine (samplers, pruners, storage); lorakit adds the config layering, memory
checks and tracked runs around each trial.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lorakit.config.load import LoadedConfig, load_config
from lorakit.config.schema import RunConfig, parse_memory_size
from lorakit.errors import ConfigError, MemoryBudgetError
from lorakit.redaction import redact
from lorakit.sweep.space import SweepSpace, load_space, trial_tag

SPEC_FILE = "sweep.json"
JOURNAL_FILE = "journal.log"
LOCK_FILE = ".lock"
# The --set values as given, for the sweep's own workers (processes here, Slurm jobs through sbatch's exported
# environment) when sweep.json holds them redacted: a password travels in the environment, never in a file.
OVERRIDES_ENV = "LORAKIT_SWEEP_OVERRIDES"


@dataclass(frozen=True)
class Sweep:
    """What ``lorakit sweep`` was asked to do; the same command again continues it."""

    name: str
    folder: str  # absolute
    config_file: str  # absolute
    overlays: tuple[str, ...]
    overrides: tuple[str, ...]
    space_file: str  # absolute
    trials: int
    executor: str  # an Executor value
    workers: int
    working_directory: str  # where relative paths in the config were resolved, and trials run

    @property
    def path(self) -> Path:
        return Path(self.folder)

    def base_config(self) -> LoadedConfig:
        return load_config(self.config_file, self.overlays, self.overrides)

    def space(self, base: RunConfig) -> SweepSpace:
        return load_space(Path(self.space_file), base)

    def save(self) -> None:
        """sweep.json, with every secret in the --set values redacted (``secret_environment`` carries them)."""
        self.path.mkdir(parents=True, exist_ok=True)
        spec = {**asdict(self), "overrides": redact(list(self.overrides))}
        (self.path / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")

    def secret_environment(self) -> dict[str, str]:
        """What the workers need in their environment to see the --set values sweep.json holds redacted."""
        if redact(list(self.overrides)) == list(self.overrides):
            return {}
        return {OVERRIDES_ENV: json.dumps(list(self.overrides))}


def load_sweep(ref: str, sweeps_dir: Path = Path("sweeps")) -> Sweep:
    """A sweep by its folder or its name under ``sweeps_dir``.

    Raises:
        ConfigError: no such sweep.
    """
    for folder in (Path(ref), sweeps_dir / ref):
        spec = folder / SPEC_FILE
        if spec.is_file():
            data = json.loads(spec.read_text(encoding="utf-8"))
            given = json.loads(os.environ.get(OVERRIDES_ENV) or "null")
            if isinstance(given, list) and redact(given) == data["overrides"]:  # this sweep's own, unredacted
                data["overrides"] = given
            return Sweep(**{**data, "overlays": tuple(data["overlays"]), "overrides": tuple(data["overrides"])})
    raise ConfigError(f"no sweep {ref!r}: not a sweep folder, and no {sweeps_dir}/{ref}/{SPEC_FILE}")


def open_study(sweep: Sweep, space: SweepSpace) -> Any:
    """The sweep's Optuna study (created on first use), in its journal file."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(sweep.path / JOURNAL_FILE)))
    return optuna.create_study(study_name=sweep.name, storage=storage, sampler=_sampler(space),
                               pruner=_pruner(space), direction=space.direction, load_if_exists=True)


def _sampler(space: SweepSpace) -> Any:
    import optuna

    class Grid(optuna.samplers.GridSampler):
        def after_trial(self, *args: Any) -> None:
            pass  # Optuna's grid stops study.optimize when the grid is done; the workers count trials themselves

    if space.sampler == "grid":
        return Grid({p.key: list(p.values) for p in space.params}, seed=space.seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=space.seed)
    return optuna.samplers.TPESampler(seed=space.seed, n_startup_trials=4)


def _pruner(space: SweepSpace) -> Any:
    import optuna

    if space.pruner == "median":  # judged once two trials have finished, from the second evaluation on
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def suggest(trial: Any, space: SweepSpace) -> dict[str, Any]:
    """This trial's value of every swept key."""
    params = {}
    for p in space.params:
        if not p.is_range:
            params[p.key] = trial.suggest_categorical(p.key, list(p.values))
        elif p.is_int:
            params[p.key] = trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log)  # type: ignore[arg-type]
        else:
            params[p.key] = trial.suggest_float(p.key, float(p.low), float(p.high), log=p.log)  # type: ignore[arg-type]
    return params


def trial_config(sweep: Sweep, base: LoadedConfig, params: dict[str, Any], metric: str) -> LoadedConfig:
    """The config of one trial: the sweep's layers, the trial's values, resumable, judged and kept by the metric.

    Raises:
        ConfigError: a value the schema refuses (a combination the space allows but the config does not).
    """
    sets: Sequence[str] = (*sweep.overrides, *(f"{k}={json.dumps(v)}" for k, v in params.items()),
                           "train.resumable=true", f"train.best_metric={metric}", "train.keep=best")
    loaded = load_config(sweep.config_file, sweep.overlays, sets)
    return replace(loaded, run_name=f"{base.run_name}-{trial_tag(params)}")  # the overlays are in base's name


def memory_verdict(config: RunConfig) -> str | None:
    """Why a trial cannot fit train.memory_budget even after the ladder's cheapest steps, or None."""
    if config.train.memory_budget is None:
        return None
    from lorakit.plan.report import PlanInputs, build_plan, starting_point

    budget = parse_memory_size(config.train.memory_budget)
    try:
        starting_point(build_plan(PlanInputs.of(config), None, budget))
    except MemoryBudgetError as e:
        return f"does not fit the memory budget: {e}"
    return None
