"""What the training loop reports to: log lines and a progress bar (``runs.trainer_log`` writes trainer_log.jsonl).

Each callback receives the same metrics dict after each optimizer step and after each
validation; only the main process is given callbacks at all.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from lorakit.atomic import save_shared
from lorakit.config.schema import PAIR_STATS
from lorakit.schedule import due

log = logging.getLogger(__name__)

AVERAGED = ("loss", *PAIR_STATS)  # grad_norm, lr and tokens/s are the logged step's own, as in the Trainer


class Callback(Protocol):
    def on_train_begin(self, total_steps: int) -> None: ...
    def on_step_end(self, metrics: dict[str, Any]) -> None: ...
    def on_evaluate(self, metrics: dict[str, Any]) -> None: ...  # eval_loss and any eval_* metric
    def on_samples(self, step: int, samples: list[dict[str, str]]) -> None: ...  # {"prompt", "output"}
    def on_train_end(self, status: str) -> None: ...


class LoggedMeans:
    """The loss (and a preference step's pair statistics) of a logged step as the Hugging Face trainer logs it:
    the mean over the steps since the last logged one, not that one step's, so a curve logged every 10 steps is
    LLaMA-Factory's curve for the same losses. Every step goes through ``add``; ``due`` steps come out averaged."""

    def __init__(self, log_every: int) -> None:
        self.log_every = log_every
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, metrics: dict[str, Any]) -> dict[str, Any] | None:
        """``metrics`` with its means since the last logged step when this step is logged, else None."""
        for name in (n for n in AVERAGED if isinstance(metrics.get(n), (int, float))):
            self.sums[name] = self.sums.get(name, 0.0) + metrics[name]
        self.count += 1
        if not due(metrics["step"], self.log_every) and metrics["step"] != metrics["total_steps"]:
            return None
        logged = {**metrics, **{name: total / self.count for name, total in self.sums.items()}}
        self.sums, self.count = {}, 0
        return logged


def eval_values(metrics: dict[str, Any]) -> dict[str, float]:
    """The evaluation metrics of a record (eval_loss, eval_exact, ...), without its step and time fields."""
    return {k: v for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, (int, float))}


def _hms(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


class LogLines:
    """``step 120/800 | loss 1.234 | lr 2.0e-04 | 3.1k tok/s | mem 7.2 GiB | eta 12m``."""

    def __init__(self, log_every: int) -> None:
        self.means = LoggedMeans(log_every)

    def on_train_begin(self, total_steps: int) -> None:
        log.info("training for %d optimizer steps", total_steps)

    def on_step_end(self, metrics: dict[str, Any]) -> None:
        m = self.means.add(metrics)
        if m is None:
            return
        pairs = (f" | acc {m['rewards/accuracies']:.2f} | margin {m['rewards/margins']:.3f}"  # a DPO step
                 if "rewards/accuracies" in m else "")
        log.info("step %d/%d | loss %.4f%s | lr %.1e | %s tok/s | mem %.1f GiB | eta %s", m["step"], m["total_steps"],
                 m["loss"], pairs, m["lr"], _si(m["tokens_per_second"]), m["memory_gib"], _hms(m["remaining_s"]))

    def on_evaluate(self, m: dict[str, Any]) -> None:
        shown = " | ".join(f"{k} {v:.4f}" for k, v in eval_values(m).items())
        log.info("step %d/%d | %s", m["step"], m["total_steps"], shown)

    def on_samples(self, step: int, samples: list[dict[str, str]]) -> None:
        if samples:
            log.info("step %d | sample: %s -> %s", step, samples[0]["prompt"][:60], samples[0]["output"][:80])

    def on_train_end(self, status: str) -> None:
        pass


def _si(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


class ProgressBar:
    """A rich progress bar with loss, tokens/s and ETA; drawn only on a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(), console=console, disable=not console.is_terminal, transient=True,
        )
        self._task = None

    def on_train_begin(self, total_steps: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("train", total=total_steps, info="")

    def on_step_end(self, m: dict[str, Any]) -> None:
        info = f"loss {m['loss']:.4f} | {_si(m['tokens_per_second'])} tok/s"
        self._progress.update(self._task, completed=m["step"], info=info)

    def on_evaluate(self, metrics: dict[str, Any]) -> None:
        pass

    def on_samples(self, step: int, samples: list[dict[str, str]]) -> None:
        pass

    def on_train_end(self, status: str) -> None:
        self._progress.stop()


class Checkpoints:
    """Save the adapter every ``save_every`` steps under ``checkpoints/checkpoint-N``.

    Only when asked (save_every > 0): the final adapter lands in the run folder anyway, and
    intermediate copies cost disk and time. At most ``keep`` are kept, oldest removed first.
    """

    def __init__(self, run_dir: Path, model: Any, save_every: int, keep: int | None) -> None:
        self.root = run_dir / "checkpoints"
        self.model = model
        self.save_every = save_every
        self.keep = keep

    def on_train_begin(self, total_steps: int) -> None:
        pass

    def on_step_end(self, metrics: dict[str, Any]) -> None:
        step = metrics["step"]
        if not due(step, self.save_every) or step == metrics["total_steps"]:
            return
        save_shared(self.model, self.root / f"checkpoint-{step}")
        log.info("saved checkpoint-%d", step)
        if self.keep:
            import shutil

            saved = sorted(self.root.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
            for old in saved[: -self.keep]:
                shutil.rmtree(old)

    def on_evaluate(self, metrics: dict[str, Any]) -> None:
        pass

    def on_samples(self, step: int, samples: list[dict[str, str]]) -> None:
        pass

    def on_train_end(self, status: str) -> None:
        pass
