"""The memory planner's estimate against the measured peak RSS of real training runs (CPU).

For each model and setting, ``lorakit plan``'s estimate is computed in this process, then
``lorakit train`` runs the same config for a few optimizer steps in a subprocess and its peak
resident memory (``ru_maxrss``, recorded in manifest.json) is read back. Rows are packed
(``data.packing: true``), so every micro-batch is close to ``micro_batch_size x max_length``
tokens, the case the planner prices.

The first four settings per model calibrated the CPU allocator-retention constants in
``lorakit.plan.estimate``; the last (``held out``) was not used to choose them.

    python bench/memory_plan.py --data ../shared/data/instructions/seed_tasks_alpaca.jsonl
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from lorakit.config.load import load_config
from lorakit.plan.estimate import GiB
from lorakit.plan.report import PlanInputs, build_plan

SETTINGS = [  # (label, --set overrides)
    ("micro-batch 2", ["train.micro_batch_size=2"]),
    ("micro-batch 8", ["train.micro_batch_size=8"]),
    ("micro-batch 2, checkpointing", ["train.micro_batch_size=2", "train.gradient_checkpointing=true"]),
    ("micro-batch 8, checkpointing", ["train.micro_batch_size=8", "train.gradient_checkpointing=true"]),
    ("held out: micro-batch 3 x 1024, r=64", ["train.micro_batch_size=3", "data.max_length=1024", "lora.r=64"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="training data (alpaca JSONL)")
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per measured run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lorakit-memory-plan-"))
    rows = []
    for model in args.models:
        base = work / "base.yaml"
        base.write_text(yaml.safe_dump({
            "model": {"name_or_path": model},
            "data": {"train": str(Path(args.data).resolve()), "max_length": 512, "packing": True},
            "train": {"max_steps": args.steps, "grad_accum": 1, "log_every": 1},
            "output": {"dir": str(work / "runs")},
        }))
        for label, overrides in SETTINGS:
            loaded = load_config(base, (), overrides)
            estimate = build_plan(PlanInputs.of(loaded.config), "cpu").estimate.total / GiB
            measured = _measure(base, overrides, work)
            rows.append((model, label, estimate, measured))
            print(f"{model:>14} | {label:<38} | estimate {estimate:5.2f} GiB | measured {measured:5.2f} GiB | "
                  f"{(estimate / measured - 1) * 100:+4.0f}%", file=sys.stderr, flush=True)
    print("\n| model | setting | estimate (GiB) | measured peak RSS (GiB) | error |")
    print("|---|---|---:|---:|---:|")
    for model, label, estimate, measured in rows:
        print(f"| {model} | {label} | {estimate:.2f} | {measured:.2f} | {(estimate / measured - 1) * 100:+.0f}% |")


def _measure(base: Path, overrides: list[str], work: Path) -> float:
    """Peak RSS of a real ``lorakit train`` of this config, in GiB."""
    name = f"m{len(list((work / 'runs').glob('*'))) if (work / 'runs').exists() else 0}"
    command = ["lorakit", "train", str(base), "--name", name, *[a for o in overrides for a in ("--set", o)]]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = json.loads(next((work / "runs").glob(f"{name}*/manifest.json")).read_text())
    return max(a["peak_memory_gib"] for a in manifest["attempts"])


if __name__ == "__main__":
    main()
