"""run_training, resume_training, train_prepared: config in, tracked run folder out.

Like a torchtune recipe, ``_train`` reads top to bottom: open the session, wire the loop to the
evaluations, samples, best adapter and resume state, train through the out-of-memory ladder, finish.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lorakit.config.load import LoadedConfig
from lorakit.config.memory import MemorySettings
from lorakit.disk import free_bytes, is_disk_full, size_text
from lorakit.errors import DiskFullError, LorakitError, OutOfMemoryError, RunError
from lorakit.outcome import Kind, Outcome
from lorakit.recipe.checks import before_start
from lorakit.recipe.evaluation import BestAdapter, Sampler, TrainingEvaluator
from lorakit.recipe.finish import TrainOutcome, finish_run
from lorakit.recipe.retries import train_with_retries
from lorakit.recipe.session import Session, TokenizedData, open_session, prepare_data
from lorakit.recipe.start import data_hashes, start_run
from lorakit.runs.folder import RunFolder
from lorakit.train.distributed import process_rank

log = logging.getLogger(__name__)

Judge = Callable[[int, dict[str, Any]], "Outcome | None"]

__all__ = ["TrainOutcome", "recorded_config", "resume_training", "run_training", "train_prepared"]


def run_training(loaded: LoadedConfig, command_line: Sequence[str] | None = None,
                 callbacks: Sequence[Any] = (), judge: Judge | None = None,
                 record: dict[str, Any] | None = None) -> TrainOutcome:
    """Train the adapter a config describes and write its run folder.

    Args:
        loaded: the validated, layered config.
        command_line: recorded in the manifest; defaults to this process's argv.
        callbacks: extra ``lorakit.train.callbacks.Callback`` objects (main process only).
        judge: told each evaluation (step, metrics); a reason it returns ends the run at the next step
            boundary, completed with that reason (a sweep's pruner).
        record: more fields for the manifest (a sweep's name, trial and parameters).

    Returns:
        The run folder, how training ended, and the final metrics.

    Raises:
        LorakitError: a data, model or training problem. One found before training (a path, a row, the model,
            a row its chat template cannot render) leaves no run folder; one after marks the run failed with
            the reason.
    """
    before_start(loaded.config)
    data = prepare_data(loaded.config)  # a module-name typo or a row the template refuses: no run folder
    run = start_run(loaded, command_line if command_line is not None else sys.argv, record=record, checked=True)
    log.info("run folder: %s (config sha256 %s)", run.path, loaded.sha256[:12])
    return _marking_failures(run, lambda: _train(loaded, run, callbacks, judge=judge, data=data))


def resume_training(run_dir: Path, command_line: Sequence[str] | None = None,
                    callbacks: Sequence[Any] = (), judge: Judge | None = None) -> TrainOutcome:
    """Continue an interrupted or failed run from its resume state, in its own folder.

    The config is the run's own (manifest.json), so the result is the one an uninterrupted
    run would have reached.

    Raises:
        RunError: the run completed already, is still training, has no resume state, or its data files changed.
    """
    from lorakit.runs.control import check_not_training
    from lorakit.train.resume import load_resume_state

    if process_rank() == 0:  # the other processes of a --nproc resume find rank 0 training it already
        check_not_training(run_dir)
    run = RunFolder.open(run_dir, writable=process_rank() == 0)
    if run.status == "completed":
        raise RunError(f"{run_dir.name} completed already; to train it further start a new run with "
                       f"lora.init_from: {run_dir}")
    state = load_resume_state(run_dir)
    loaded = recorded_config(run)
    cfg = loaded.config
    now = data_hashes([*cfg.data.train, *cfg.data.eval])
    for path, digest in run.manifest.data.get("data_files", {}).items():
        if now.get(path) != digest:
            change = "is missing" if path not in now else f"changed (sha256 {digest[:12]} -> {now[path][:12]})"
            raise RunError(f"{run_dir.name}: data file {path} {change} since the run started; "
                           "resuming would not reproduce it")
    resumes = [*run.manifest.data.get("resumes", []),
               {"from_step": state["steps_done"], "command_line": list(command_line or sys.argv)}]
    run.update(resumes=resumes)
    log.info("resuming %s after step %d", run_dir, state["steps_done"])
    return _marking_failures(run, lambda: _train(loaded, run, callbacks, state, judge))


def train_prepared(run_dir: Path, callbacks: Sequence[Any] = ()) -> TrainOutcome:
    """Train a run folder created earlier (by ``lorakit train --nproc`` or ``lorakit submit``) with
    its recorded config; in every process torchrun or srun started, only the main one writing.

    A run that already started continues from its resume state (``resume_training``).
    """
    run = RunFolder.open(run_dir, writable=process_rank() == 0)
    if run.status not in ("created", "submitted"):
        return resume_training(run_dir, callbacks=callbacks)
    loaded = recorded_config(run)
    return _marking_failures(run, lambda: _train(loaded, run, callbacks))


def recorded_config(run: RunFolder) -> LoadedConfig:
    """A run's own config from its manifest, relative paths taken from where it was started."""
    from lorakit.config.load import load_recorded_config

    data = run.manifest.data
    return load_recorded_config(data["config"], Path(data.get("working_directory", ".")), run.path.name,
                                data.get("config_files", {}))


def _marking_failures(run: RunFolder, train: Callable[[], TrainOutcome]) -> TrainOutcome:
    try:
        return train()
    except KeyboardInterrupt:
        run.end(Outcome(Kind.STOPPED, "stopped before training began"), card=False)
        raise
    except OutOfMemoryError as e:
        run.end(Outcome(Kind.OUT_OF_MEMORY, str(e)), card=False)
        raise
    except DiskFullError as e:
        _record_failure(run, Outcome(Kind.DISK_FULL, str(e)))
        raise
    except LorakitError as e:
        _record_failure(run, Outcome(Kind.FAILED, str(e)))
        raise
    except Exception as e:
        if not is_disk_full(e, run.path):
            _record_failure(run, Outcome(Kind.FAILED, f"{type(e).__name__}: {e}"))
            raise
        full = _disk_full(run, e)
        _record_failure(run, Outcome(Kind.DISK_FULL, str(full)))
        raise full from e


def _disk_full(run: RunFolder, error: Exception) -> DiskFullError:
    """A write of the run that found its disk full, in one line: which disk, and how to go on."""
    from lorakit.train.resume import STATE_FILE

    then = (f"continue it: lorakit train --resume {run.path}" if (run.path / STATE_FILE).is_file() else
            "train again (or set output.dir to a disk with room)")
    return DiskFullError(f"no space left on the disk of {run.path.absolute()} ({type(error).__name__}: {error}; "
                         f"{size_text(free_bytes(run.path))} free now); free space there, then {then}")


def _record_failure(run: RunFolder, outcome: Outcome) -> None:
    """Mark the run failed; when even that cannot be written (the disk is full), say so, and let the error that
    stopped the run be the one reported."""
    try:
        run.end(outcome, card=False)
    except OSError as e:
        log.warning("could not record the failure in %s (%s)", run.manifest.path, e)


def _train(loaded: LoadedConfig, run: RunFolder, extra_callbacks: Sequence[Any],
           state: dict[str, Any] | None = None, judge: Judge | None = None,
           data: TokenizedData | None = None) -> TrainOutcome:
    from lorakit.train.loop import LoopSetup
    from lorakit.train.select import Selection
    from lorakit.train.stop import StopRequest

    session = open_session(loaded, run, list(extra_callbacks), state, data)
    best = BestAdapter(session)
    evaluate = TrainingEvaluator.of(session)
    setup = LoopSetup(session.trainable, session.optimizer, session.scheduler, session.accelerator,
                      session.cfg.train, session.tokenizer.pad_token_id, session.callbacks, evaluate,
                      sample=Sampler.of(session), save_best=best if session.cfg.train.keeps != "last" else None,
                      selection=Selection.of(session.cfg.train, session.cfg.lora.init_from is not None)
                      if evaluate is not None else None, judge=judge)
    resumed, attempts = _resumed(session, setup, best, state)
    with StopRequest() as stop:
        setup.stop = stop
        setup.save_state = _state_saver(session, best, attempts)
        result = train_with_retries(session, setup, resumed, attempts)
    return finish_run(session, result, best)


def _resumed(session: Session, setup: Any, best: BestAdapter,
             state: dict[str, Any] | None) -> tuple[Any, list[dict[str, Any]]]:
    """The steps done before a stop, restored with the optimizer, the best adapter and the early-stopping state;
    or a fresh start."""
    if state is None:
        session.run.start()
        return None, []
    from lorakit.train.resume import restore, restored_result

    restore(state, session.model, session.optimizer, session.scheduler)
    resumed = restored_result(state)
    best.restore(state.get("best_adapter"), state.get("best_step"))
    if session.run.manifest.writable:
        session.run.trainer_log.trim_after(resumed.steps_done)
    for cb in session.callbacks:
        cb.on_train_begin(len(session.steps))
    session.run.start(f"resumed after step {resumed.steps_done}")
    return resumed, list(state["attempts"])


def _state_saver(session: Session, best: BestAdapter, attempts: list[dict[str, Any]]) -> Callable[[Any], None]:
    from lorakit.train.distributed import is_sharded
    from lorakit.train.resume import save_resume_state

    def save(result: Any) -> None:
        if session.accelerator.is_main_process and not is_sharded(session.accelerator):  # FSDP: none (see schema)
            save_resume_state(session.run_dir, session.model, session.optimizer, session.scheduler, result,
                              MemorySettings.of(session.cfg), attempts, best.weights, best.step)

    return save
