"""The resume state: everything needed to continue a run exactly where it stopped.

One file, ``resume_state.pt`` in the run folder, rewritten atomically: the adapter weights, the
optimizer and scheduler states, the RNG states at the end of the last completed step, the step
reached (the data order is planned from the seed, so the step is the data position), the loss
history so far and the memory settings in force (an out-of-memory retry may have changed them).
It is written when a run stops on Ctrl+C or SIGTERM, and every ``train.resume_every`` steps with
``train.resumable: true``; a completed run removes it.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from lorakit.config.memory import MemorySettings
from lorakit.errors import RunError
from lorakit.train.plan import LoopResult
from lorakit.train.select import Selection

STATE_FILE = "resume_state.pt"
_COUNTERS = ("trained_tokens", "supervised_tokens", "computed_tokens", "seconds", "eval_seconds")


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def save_resume_state(run_dir: Path, model: Any, optimizer: Any, scheduler: Any, result: LoopResult,
                      settings: MemorySettings, attempts: list[dict[str, Any]],
                      best_adapter: dict[str, torch.Tensor] | None = None, best_step: int | None = None) -> Path:
    """Write the state after ``result.steps_done`` steps (``model`` unwrapped), atomically; with the best
    adapter so far and the early-stopping state, so a resumed run keeps and stops as an uninterrupted one."""
    state = {
        "steps_done": result.steps_done,
        "adapter": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": result.rng_state or capture_rng(),
        "history": result.history,
        "eval_history": result.eval_history,
        "counters": {name: getattr(result, name) for name in _COUNTERS},
        "settings": asdict(settings),
        "attempts": attempts,
        "selection": result.selection.state() if result.selection is not None else None,
        "best_adapter": best_adapter,
        "best_step": best_step,
    }
    path = run_dir / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_resume_state(run_dir: Path) -> dict[str, Any]:
    """Read a run's resume state (tensors, numbers and strings only: no pickled code runs).

    Raises:
        RunError: there is none, or it cannot be read.
    """
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise RunError(f"{run_dir.name}: nothing to resume from ({STATE_FILE} is missing); runs keep it when "
                       "stopped with Ctrl+C or SIGTERM, or all along with train.resumable: true")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RunError(f"{path}: cannot read the resume state ({type(e).__name__}: {e})") from None


def restore(state: dict[str, Any], model: Any, optimizer: Any, scheduler: Any) -> None:
    """Put the adapter weights, optimizer and scheduler back as they were (``model`` unwrapped)."""
    params = dict(model.named_parameters())
    missing = [name for name in state["adapter"] if name not in params]
    if missing:
        raise RunError(f"the resume state does not fit this adapter (no parameter {missing[0]})")
    with torch.no_grad():
        for name, value in state["adapter"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])


def restored_result(state: dict[str, Any]) -> LoopResult:
    """The LoopResult of the steps done before the stop, with the RNG as it was then."""
    selection = Selection.from_state(state["selection"]) if state.get("selection") else None
    result = LoopResult(state["steps_done"], list(state["history"]), list(state["eval_history"]),
                        rng_state=state["rng"], selection=selection)
    for name, value in state["counters"].items():
        setattr(result, name, value)
    return result


