"""The files a finished (or stopped) run leaves for people: results JSON and the loss plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorakit.runs.manifest import write_json_atomic


def write_results(run_dir: Path, train_metrics: dict[str, Any], eval_metrics: dict[str, Any]) -> dict[str, Any]:
    """train_results.json, eval_results.json and all_results.json (the Trainer's names)."""
    write_json_atomic(run_dir / "train_results.json", train_metrics)
    write_json_atomic(run_dir / "eval_results.json", eval_metrics)
    combined = {**train_metrics, **eval_metrics}
    write_json_atomic(run_dir / "all_results.json", combined)
    return combined


def plot_loss(path: Path, history: list[dict[str, Any]], eval_history: list[dict[str, Any]],
              method: str = "sft") -> None:
    """training_loss.png: training loss per step, and validation loss where it was measured; the task metrics
    (eval_exact, eval_chrf, eval_typst...; a DPO run's preference accuracy and margin) in a second panel when
    the run measured any."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and no GUI toolkit imported
    import matplotlib.pyplot as plt

    # a DPO run's log-probabilities and per-side rewards are on other scales: the card's table has them
    tasks = sorted({k for m in eval_history for k in m if k.startswith("eval_") and k != "eval_loss"
                    and isinstance(m[k], (int, float)) and not k.startswith(("eval_logps/", "eval_rewards/c",
                                                                             "eval_rewards/r"))})
    fig, axes = plt.subplots(1, 2 if tasks else 1, figsize=(12 if tasks else 7, 4), dpi=100, squeeze=False)
    ax = axes[0][0]
    if history:
        ax.plot([m["step"] for m in history], [m["loss"] for m in history], label="train loss", linewidth=1)
    with_loss = [m for m in eval_history if "eval_loss" in m]
    if with_loss:
        ax.plot([m["step"] for m in with_loss], [m["eval_loss"] for m in with_loss], "o-", label="eval loss",
                linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("DPO loss" if method == "dpo" else "loss")
    ax.set_title(f"{path.parent.name} (DPO)" if method == "dpo" else path.parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    if tasks:
        right = axes[0][1]
        for name in tasks:
            points = [m for m in eval_history if name in m]
            right.plot([m["step"] for m in points], [m[name] for m in points], "o-", label=name.removeprefix("eval_"))
        right.set_xlabel("step")
        right.set_title("validation metrics")
        right.grid(alpha=0.3)
        right.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def copy_tracked_files(paths: list[str], run_dir: Path) -> dict[str, Path]:
    """Copy ``tracking.copy_files`` (checked to exist by the caller) into ``run_dir/files/``.

    Returns:
        {source path: the copy}.
    """
    import shutil

    copied = {}
    for source in paths:
        target = run_dir / "files" / Path(source).name
        if target.exists():  # two sources with one name: keep both, the later one numbered
            target = target.with_name(f"{target.stem}-{len(copied)}{target.suffix}")
        target.parent.mkdir(exist_ok=True)
        shutil.copy2(source, target)
        copied[source] = target
    return copied
