"""Start or continue a sweep: check everything, then run its workers here or as Slurm jobs; and --dry-run."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.config.load import LoadedConfig, load_config
from lorakit.errors import ConfigError, LaunchError
from lorakit.launch.executor import Executor
from lorakit.sweep.space import SweepSpace, grid_size
from lorakit.sweep.study import Sweep, load_sweep, trial_config
from lorakit.sweep.worker import work

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepRequest:
    config_file: str
    space_file: str
    overlays: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    trials: int | None = None
    executor: str = Executor.LOCAL
    workers: int = 1
    name: str | None = None
    sweeps_dir: Path = Path("sweeps")


def prepare(request: SweepRequest) -> tuple[Sweep, LoadedConfig, SweepSpace]:
    """The sweep, its base config and space, all checked; nothing is written.

    Raises:
        ConfigError: a bad config, space or trial count (one line each); an existing sweep of the same name
            asked to search something else.
    """
    if not Path(request.space_file).is_file():
        raise ConfigError(f"--space: file not found: {request.space_file}")
    base = load_config(request.config_file, request.overlays, request.overrides)
    from lorakit.sweep.space import load_space

    space = load_space(Path(request.space_file), base.config)
    size = grid_size(space) if space.sampler == "grid" else None
    trials = request.trials or size or 10
    if size is not None and size > trials:
        raise ConfigError(f"{request.space_file}: the grid has {size} trials, more than --trials {trials}; raise "
                          "--trials or search fewer values")
    if request.executor == Executor.SLURM and shutil.which("sbatch") is None:
        raise LaunchError("--executor slurm: sbatch is not on PATH (no Slurm here); use --executor local")
    if request.executor == Executor.RAY:
        from lorakit.launch.ray import import_ray

        import_ray()  # one line now when Ray is missing, before anything is written
    name = request.name or f"{base.run_name}-{Path(request.space_file).stem}"
    folder = (request.sweeps_dir / name).resolve()
    sweep = Sweep(name, str(folder), str(Path(request.config_file).resolve()),
                  tuple(str(Path(o).resolve()) for o in request.overlays), tuple(request.overrides),
                  str(Path(request.space_file).resolve()), trials, request.executor, request.workers,
                  os.getcwd())
    if (folder / "sweep.json").is_file():
        existing = load_sweep(str(folder))
        if existing.space_file != sweep.space_file or existing.config_file != sweep.config_file:
            raise ConfigError(f"sweep {name} exists in {folder} for other files; give --name to start a new one")
    for params in space.grid()[:1] if space.sampler == "grid" else []:
        trial_config(sweep, base, params, space.metric)  # a combination the schema refuses fails now
    return sweep, base, space


def dry_run(sweep: Sweep, base: LoadedConfig, space: SweepSpace, count: int) -> list[str]:
    """The trials a grid would run, or the first ``count`` a sampler proposes, each with its memory estimate."""
    import optuna

    from lorakit.sweep.study import _sampler, suggest

    if space.sampler == "grid":
        proposals = space.grid()
    else:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=_sampler(space), direction=space.direction)
        proposals = [suggest(study.ask(), space) for _ in range(count)]
    lines = []
    for i, params in enumerate(proposals):
        cfg = trial_config(sweep, base, params, space.metric)
        lines.append(f"{i:3d}  {cfg.run_name}  {_estimate(cfg.config)}")
    return lines


def _estimate(config: Any) -> str:
    from lorakit.errors import LorakitError
    from lorakit.plan.estimate import GiB
    from lorakit.plan.report import PlanInputs, build_plan

    try:
        return f"~{build_plan(PlanInputs.of(config)).estimate.total / GiB:.2f} GiB"
    except LorakitError as e:
        return f"(no estimate: {e})"


def start(sweep: Sweep, base: LoadedConfig) -> None:
    """Save the sweep and run its workers until it has its count of trials."""
    sweep.save()
    os.environ.update(sweep.secret_environment())  # workers (processes, Slurm jobs) inherit this environment
    if sweep.executor == Executor.SLURM:
        from lorakit.sweep.slurm import run_slurm_workers

        run_slurm_workers(sweep, base.config.launch.slurm)
    elif sweep.executor == Executor.RAY:
        from lorakit.sweep.on_ray import run_ray_sweep

        run_ray_sweep(sweep, base.config.launch.ray)
    elif sweep.workers == 1:
        work(sweep)
    else:
        _local_workers(sweep)


def _local_workers(sweep: Sweep) -> None:
    """``--workers N`` processes on this machine, each taking its share of the cores (LOCAL_WORLD_SIZE, as
    torchrun sets it; never LOCAL_RANK, which makes accelerate take each worker for one of a distributed run)."""
    env = {**os.environ, "LOCAL_WORLD_SIZE": str(sweep.workers)}
    procs = [subprocess.Popen([sys.executable, "-m", "lorakit", "sweep", "work", sweep.folder], env=env)
             for _ in range(sweep.workers)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise LaunchError(f"sweep {sweep.name}: worker exit codes {codes}; run the same command to continue")


def worker_main(folder: str, run: str | None, argv: Sequence[str]) -> int:
    """One worker process (``lorakit sweep work``): a Slurm job's worker marks its own folder."""
    sweep = load_sweep(folder)
    if run is None:
        return work(sweep)
    from lorakit.outcome import Kind, Outcome
    from lorakit.runs.folder import RunFolder

    record = RunFolder.open(Path(run))
    record.start()
    try:
        done = work(sweep)
    except BaseException as e:
        record.fail(f"{type(e).__name__}: {e}")
        raise
    record.end(Outcome(Kind.COMPLETED, f"finished {done} trial(s)", {"trials": done}), card=False)
    return done
