"""Training throughput: lorakit against a plain TRL SFTTrainer + PEFT script, measured in one run.

    python bench/train_throughput.py --model smollm2-135m --data ../shared/data/instructions/seed_tasks_alpaca.jsonl

Both sides train the same base weights (lorakit's cached conversion of the GGUF), on the same
rows rendered with the same chat template, with LoRA r=16 on all linear layers, float32, max
length 512, effective batch 8 and the same number of optimizer steps; each runs in its own
process, one after the other. TRL keeps its defaults (padding, gradient checkpointing, full
logits): that is the twenty-line script users start from. Needs `pip install trl`.

Model FLOPs: 4·N per token for a LoRA step (forward 2·N, backward through frozen weights 2·N).
N is the decoder's parameters for every real token, plus the output head's for each token that
reaches the head: every token for TRL, only the supervised ones for lorakit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

T0 = time.perf_counter()


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load_rows(path: str) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [{"prompt": [{"role": "user", "content": f"{r['instruction']}\n\n{r['input']}" if r.get("input")
                         else r["instruction"]}],
             "completion": [{"role": "assistant", "content": r["output"]}]} for r in rows]


def head_and_body(model_path: str) -> tuple[int, int]:
    """(decoder parameters, output-head parameters) of a causal LM, counted from its config."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    head = model.get_output_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())  # tied head counted once, as the embedding
    embed = model.get_input_embeddings().weight.numel()
    return total - embed, head


def worker_lorakit(args: argparse.Namespace, workdir: Path) -> dict:
    import yaml

    from lorakit.config import load_config
    from lorakit.train.runner import run_training

    data = workdir / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in load_rows(args.data)))
    config = {"model": {"name_or_path": args.model, "dtype": "float32"},
              "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
              "data": {"train": str(data), "max_length": 512, "packing": args.packing},
              "train": {"max_steps": args.steps, "micro_batch_size": 8, "grad_accum": 1, "lr": 2e-4,
                        "warmup_ratio": 0.0, "log_every": 1, "scheduler": "constant"},
              "output": {"dir": str(workdir / "runs"), "name": "bench"}}
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(config))

    class FirstStep:
        first: float | None = None
        losses: ClassVar[list[float]] = []

        def on_train_begin(self, total_steps): pass
        def on_evaluate(self, metrics): pass
        def on_train_end(self, status): pass
        def on_step_end(self, metrics):
            FirstStep.first = FirstStep.first or time.perf_counter() - T0
            FirstStep.losses.append(metrics["loss"])

    outcome = run_training(load_config(path), ["bench"], callbacks=[FirstStep()])
    m = outcome.metrics
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    return {"tokens": m["train_tokens"], "seconds": m["train_runtime"], "first_step_s": FirstStep.first,
            "loss_last": sum(FirstStep.losses[-3:]) / len(FirstStep.losses[-3:]),
            "peak_rss_gib": peak_rss_gib(), "model_path": manifest["base_model_path"],
            "supervised": m["train_supervised_tokens"], "computed": m["train_computed_tokens"]}


def worker_trl(args: argparse.Namespace, model_path: str) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from lorakit.data.templates import resolve_template

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.chat_template = resolve_template("auto", tokenizer)[1]  # the template lorakit uses too
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)

    class Clock(TrainerCallback):
        first: float | None = None
        losses: ClassVar[list[float]] = []

        def on_step_end(self, targs, state, control, **kw):
            Clock.first = Clock.first or time.perf_counter() - T0

        def on_log(self, targs, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                Clock.losses.append(logs["loss"])

    config = SFTConfig(output_dir=tempfile.mkdtemp(), max_steps=args.steps, per_device_train_batch_size=8,
                       gradient_accumulation_steps=1, learning_rate=2e-4, lr_scheduler_type="constant",
                       max_length=512, gradient_checkpointing=True, logging_steps=1, save_strategy="no",
                       report_to="none", use_cpu=True, include_num_input_tokens_seen="non_padding",
                       dataloader_num_workers=0, seed=42)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(load_rows(args.data)),
                         processing_class=tokenizer, callbacks=[Clock()],
                         peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = int(trainer.state.num_input_tokens_seen)
    return {"tokens": tokens, "seconds": seconds, "first_step_s": Clock.first,
            "loss_last": sum(Clock.losses[-3:]) / len(Clock.losses[-3:]), "peak_rss_gib": peak_rss_gib()}


def run_worker(kind: str, args: argparse.Namespace, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--model", args.model, "--data", args.data,
           "--steps", str(args.steps), *(["--packing"] if args.packing else []), *extra]
    print(f"running {kind} ...", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                                              "instructions" / "seed_tasks_alpaca.jsonl"))
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps of 8 examples, both sides")
    parser.add_argument("--packing", action="store_true", help="lorakit packs rows of up to 512 tokens")
    parser.add_argument("--worker", choices=["lorakit", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data = str(Path(args.data).resolve())  # workers run in a temporary folder

    if args.worker:
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)
            result = (worker_lorakit(args, Path(tmp)) if args.worker == "lorakit"
                      else worker_trl(args, args.model_path))
        print(json.dumps(result))
        return

    gflops = matmul_gflops()
    ours = run_worker("lorakit", args, [])
    trl = run_worker("trl", args, ["--model-path", ours["model_path"]])
    body, head = head_and_body(ours["model_path"])
    ours_flops = 4 * body * ours["tokens"] + 4 * head * ours["supervised"]
    trl_flops = 4 * (body + head) * trl["tokens"]  # TRL computes the head on every (real) token
    rows = [
        ("trained tokens/s", ours["tokens"] / ours["seconds"], trl["tokens"] / trl["seconds"]),
        ("peak RSS (GiB)", ours["peak_rss_gib"], trl["peak_rss_gib"]),
        ("time to first step (s)", ours["first_step_s"], trl["first_step_s"]),
        ("loss, mean of last 3 steps", ours["loss_last"], trl["loss_last"]),
        ("real tokens trained", ours["tokens"], trl["tokens"]),
        ("model GFLOP/s", ours_flops / ours["seconds"] / 1e9, trl_flops / trl["seconds"] / 1e9),
        ("MFU (of measured matmul)", ours_flops / ours["seconds"] / 1e9 / gflops,
         trl_flops / trl["seconds"] / 1e9 / gflops),
    ]
    print(f"\nmodel {args.model}, {args.steps} steps of 8 examples, max length 512, float32, "
          f"matmul {gflops:.0f} GFLOP/s, packing {'on' if args.packing else 'off'}")
    print(f"{'':30} {'lorakit':>12} {'TRL':>12} {'lorakit/TRL':>12}")
    for name, a, b in rows:
        print(f"{name:30} {a:12.3f} {b:12.3f} {a / b if b else float('nan'):12.2f}")
    print(f"lorakit packing efficiency (real / computed tokens): {ours['tokens'] / ours['computed']:.1%}")


if __name__ == "__main__":
    main()
