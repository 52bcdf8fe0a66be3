"""Train through the out-of-memory ladder: a step that runs out of memory is dropped, the remaining steps are
re-cut with the next lower-memory settings, and training resumes after the last completed step."""

from __future__ import annotations

import logging
from typing import Any

from lorakit.config.memory import MemorySettings
from lorakit.errors import OutOfMemoryError
from lorakit.recipe.session import Session
from lorakit.train.loop import LoopSetup, peak_memory_gib, run_loop
from lorakit.train.oom import StepOutOfMemory
from lorakit.train.plan import Ladder, LoopResult, give_up_message

log = logging.getLogger(__name__)


def train_with_retries(session: Session, setup: LoopSetup, resumed: LoopResult | None,
                       attempts: list[dict[str, Any]]) -> LoopResult:
    """``run_loop``, stepping down the ladder; every attempt recorded in the manifest.

    Raises:
        OutOfMemoryError: the ladder has nothing left to try.
    """
    cfg, steps = session.cfg, session.steps
    settings = MemorySettings.of(cfg)
    # a DPO pair's reference log-probabilities were measured on whole answers: its rows are never cut shorter
    shorter = cfg.train.oom.allow_shorter and cfg.train.method != "dpo"
    ladder = Ladder(list(cfg.train.oom.ladder), shorter, packing=cfg.data.packing)
    if session.overlaid is not None:
        ladder.overlay = (MemorySettings.of(session.overlaid[0]), session.overlaid[1])
    if resumed is not None and attempts:
        attempts[-1].setdefault("step_reached", resumed.steps_done)  # it stopped there
    change = session.first_change if resumed is None else f"resumed after step {resumed.steps_done}"
    attempts.append({"attempt": len(attempts) + 1, "change": change, "settings": settings.describe()})
    result = resumed
    device = session.accelerator.device
    while True:
        try:
            result = run_loop(setup, steps, result)
        except StepOutOfMemory as oom:
            result = oom.result
            attempts[-1].update(step_reached=result.steps_done, peak_memory_gib=peak_memory_gib(device),
                                error=str(oom))
            change_to = ladder.step_down(steps[result.steps_done :], settings)
            if change_to is None:
                session.run.update(attempts=attempts)
                raise OutOfMemoryError(give_up_message(oom.step, ladder.tried, ladder.allow_shorter)) from None
            remaining, settings, what = change_to
            steps = [*steps[: result.steps_done], *remaining]
            _apply(session, setup, settings)
            attempts.append({"attempt": len(attempts) + 1, "change": what, "settings": settings.describe(),
                             "resumed_after_step": result.steps_done})
            log.warning("%s; attempt %d: %s, resuming after step %d", oom, len(attempts), what, result.steps_done)
            session.run.update(attempts=attempts)
            continue
        attempts[-1].update(step_reached=result.steps_done, peak_memory_gib=peak_memory_gib(device))
        session.run.update(attempts=attempts)
        session.steps = steps
        return result


def _apply(session: Session, setup: LoopSetup, settings: MemorySettings) -> None:
    """The new settings in force: checkpointing switched on if a rung asked for it, the config updated."""
    from lorakit.model.load import enable_checkpointing

    if settings.gradient_checkpointing and not session.cfg.train.gradient_checkpointing:
        enable_checkpointing(session.model)
    session.cfg = settings.applied_to(session.cfg)
    setup.train = session.cfg.train
