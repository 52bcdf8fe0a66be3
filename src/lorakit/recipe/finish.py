"""The end of a run: the adapter (the best one on top when asked), results, the loss plot, the manifest, the card."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.atomic import save_shared
from lorakit.model.tokenizer_files import save_tokenizer
from lorakit.outcome import Outcome
from lorakit.recipe.evaluation import BEST_DIR, BestAdapter, swapped
from lorakit.recipe.session import Session
from lorakit.runs.artifacts import plot_loss, write_results
from lorakit.train.callbacks import eval_values
from lorakit.train.plan import LoopResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOutcome:
    run_dir: Path
    outcome: Outcome  # completed, early-stopped, pruned or stopped (a failure raises)
    metrics: dict[str, Any]

    @property
    def status(self) -> str:
        return self.outcome.status

    @property
    def reason(self) -> str:
        return self.outcome.reason


def run_metrics(session: Session, result: LoopResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """train_results.json and eval_results.json, by the Trainer's names and meanings (train_loss: the mean over
    the run, as LLaMA-Factory's files hold it; train_loss_last: the last step's), plus the best step and metric."""
    steps = session.steps
    train = {"epoch": steps[result.steps_done - 1].epoch if result.steps_done else 0.0,
             "train_loss": result.mean_loss, "train_loss_last": result.final_loss,
             "train_runtime": round(result.seconds, 2),
             "train_steps": result.steps_done, "train_tokens": result.trained_tokens,
             "train_supervised_tokens": result.supervised_tokens, "train_computed_tokens": result.computed_tokens,
             "train_tokens_per_second": round(result.tokens_per_second(result.seconds), 1),
             "eval_runtime": round(result.eval_seconds, 2)}
    evaluation: dict[str, Any] = {}
    if result.eval_history:
        evaluation = eval_values(result.eval_history[-1])
        evaluation.update({f"{k}_before_training": v for k, v in eval_values(result.eval_history[0]).items()})
    selection = result.selection
    if selection is not None and selection.best_step is not None:
        evaluation.update(best_step=selection.best_step, best_metric=selection.metric, best_value=selection.best_value)
    return train, evaluation


def finish_run(session: Session, result: LoopResult, best: BestAdapter) -> TrainOutcome:
    """Save the adapter(s) and write the results; only the main process writes."""
    from lorakit.train.distributed import adapter_state_dict
    from lorakit.train.resume import STATE_FILE

    train_metrics, eval_metrics = run_metrics(session, result)
    gathered = adapter_state_dict(session.accelerator, session.trainable)  # every process takes part under FSDP
    if session.accelerator.is_main_process:
        run_dir = session.run_dir
        # PEFT edits an existing README.md (a resumed run's card) and warns about its metadata; ours replaces it.
        (run_dir / "README.md").unlink(missing_ok=True)
        kept = _save_adapters(session, result, best, gathered)
        save_tokenizer(session.tokenizer, run_dir)
        metrics = write_results(run_dir, train_metrics, eval_metrics)
        plot_loss(run_dir / "training_loss.png", result.history, result.eval_history, session.cfg.train.method)
        if result.status == "completed":
            (run_dir / STATE_FILE).unlink(missing_ok=True)  # the final adapter supersedes it
        session.run.end(result.outcome, metrics=metrics, adapter=kept)
    return TrainOutcome(session.run_dir, result.outcome, {**train_metrics, **eval_metrics})


def _save_adapters(session: Session, result: LoopResult, best: BestAdapter, gathered: Any) -> dict[str, Any]:
    """The top-level adapter (the best one with train.keep best or both, once the run completed), the last one in
    last/ with keep both; best/ goes once its adapter is on top. What was kept, for the manifest."""
    model, run_dir, keeps = session.model, session.run_dir, session.cfg.train.keeps
    if keeps == "last" or best.weights is None or result.status != "completed":
        save_shared(model, run_dir, state_dict=gathered)
        note = result.selection.no_best_note if keeps != "last" and result.selection is not None else None
        if note and result.status == "completed":
            log.warning("%s", note)
        return {"top": "last", "step": result.steps_done, **({"note": note} if note else {})}
    if keeps == "both":
        save_shared(model, run_dir / "last")
    with swapped(model, best.weights):
        save_shared(model, run_dir)
    shutil.rmtree(run_dir / BEST_DIR, ignore_errors=True)
    note = result.selection.start_kept_note if result.selection is not None else None
    if note:
        log.warning("%s", note)
    return {"top": "best", "step": best.step, **({"last": "last/", "last_step": result.steps_done}
                                                   if keeps == "both" else {}), **({"note": note} if note else {})}
