"""Training throughput: lorakit against a plain TRL SFTTrainer + PEFT script, measured in one run.

    python bench/train_throughput.py --model gemma-3-270m --data ../shared/data/instructions/seed_tasks_alpaca.jsonl

Both sides train the same base weights (lorakit's cached conversion of the GGUF) on the same
rows (the first ``--examples`` of the file, one epoch, so the same real tokens) rendered with the
same chat template, with LoRA r=16 on all linear layers, float32, max length 512, 8 examples per
optimizer step, AdamW at a constant 2e-4. Each side runs in its own process, one after the
other. TRL keeps its defaults (padding to the longest row, gradient checkpointing, its fused LM
head) except ``bf16=False``: its default of bf16 autocast runs at about 1 GFLOP/s on CPUs
without native bf16. lorakit runs twice: with its defaults (its default micro-batch of 4,
accumulated twice to the same 8 examples a step), and with gradient checkpointing on (the memory
regime TRL's defaults choose). Beside each lorakit peak it prints what ``lorakit plan`` estimates
for that run from the data's real lengths. Needs `pip install -e ".[bench]"`.

Loss after the same tokens: a third process (the judge) loads each trained adapter and computes
the mean next-token loss over the completions of the ``--eval-rows`` rows that follow the
training rows, with the same plain transformers forward for both.

Model FLOPs: 4·N per token for a LoRA step (forward 2·N, backward through frozen weights 2·N).
N is the decoder's parameters for every real token, plus the output head's for each token that
reaches the head: every token for TRL, only the supervised ones for lorakit. TRL's gradient
checkpointing recomputes the forward (another 2·N) but that is not useful work and not counted.
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
from collections.abc import Sequence
from pathlib import Path

T0 = time.perf_counter()
STEP_EXAMPLES = 8  # per optimizer step, both sides


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


def load_rows(path: str, start: int, count: int) -> list[dict]:
    """Alpaca rows as conversational prompt/completion, which lorakit and TRL both read."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()][start : start + count]
    return [{"prompt": [{"role": "user", "content": f"{r['instruction']}\n\n{r['input']}" if r.get("input")
                         else r["instruction"]}],
             "completion": [{"role": "assistant", "content": r["output"]}]} for r in rows]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def head_and_body(model_path: str) -> tuple[int, int]:
    """(decoder parameters, output-head parameters) of a causal LM, counted from its config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    head = model.get_output_embeddings().weight.numel()
    embed = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())  # a tied head is counted once, as the embedding
    return total - embed, head


def packing_efficiency(args: argparse.Namespace, model_path: str) -> float:
    """Real / computed tokens of the whole file packed into rows of 512, 8 rows per micro-batch."""
    from lorakit.config.schema import DataSection
    from lorakit.data.dataset import build_datasets
    from lorakit.data.packing import collate, plan_micro_batches
    from lorakit.model.load import load_tokenizer
    from lorakit.model.resolve import resolve_model

    tokenizer = load_tokenizer(resolve_model(model_path))
    data = write_jsonl(Path("all.jsonl"), load_rows(args.data, 0, 10**9))
    examples = build_datasets(DataSection(train=[str(data)], max_length=512, val_size=0), tokenizer).train
    batches = [collate(rows, 0) for rows in plan_micro_batches(examples, 8, True, 512, 0)]
    return sum(b.num_tokens for b in batches) / sum(b.num_computed for b in batches)


def worker_lorakit(args: argparse.Namespace, workdir: Path) -> dict:
    import yaml

    from lorakit.config import load_config
    from lorakit.config.schema import TrainSection
    from lorakit.recipe.run import run_training

    data = write_jsonl(workdir / "train.jsonl", load_rows(args.data, 0, args.examples))
    # lorakit's default micro-batch, accumulated to the same 8 examples per optimizer step as TRL's.
    micro = TrainSection.model_fields["micro_batch_size"].default
    config = {"model": {"name_or_path": args.model, "dtype": "float32"},
              "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
              "data": {"train": str(data), "max_length": 512, "val_size": 0, "packing": False},
              "train": {"epochs": 1, "micro_batch_size": micro, "grad_accum": STEP_EXAMPLES // micro, "lr": 2e-4,
                        "warmup_ratio": 0.0,
                        "scheduler": "constant", "log_every": 1, "compile": args.compile,
                        "gradient_checkpointing": args.checkpointing},
              "output": {"dir": str(workdir / "runs"), "name": "bench"}}
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(config))

    class Clock:
        first: float | None = None
        begin: float | None = None
        losses: list[float] = []  # noqa: RUF012

        def on_train_begin(self, total_steps: int) -> None:
            Clock.begin = time.perf_counter() - T0
        def on_evaluate(self, metrics: dict) -> None: ...
        def on_train_end(self, status: str) -> None: ...

        def on_step_end(self, metrics: dict) -> None:
            Clock.first = Clock.first or time.perf_counter() - T0
            Clock.losses.append(metrics["loss"])

    outcome = run_training(load_config(path), ["bench"], callbacks=[Clock()])
    peak = peak_rss_gib()
    m = outcome.metrics
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    return {"tokens": m["train_tokens"], "seconds": m["train_runtime"], "first_step_s": Clock.first,
            "begin_s": Clock.begin, "planned_gib": planned_peak_gib(load_config(path).config),
            "train_loss": sum(Clock.losses) / len(Clock.losses), "peak_rss_gib": peak,
            "model_path": manifest["base_model_path"], "adapter": str(outcome.run_dir),
            "supervised": m["train_supervised_tokens"], "computed": m["train_computed_tokens"],
            "packing_efficiency": packing_efficiency(args, manifest["base_model_path"])}


def planned_peak_gib(cfg) -> float:
    """What `lorakit plan` estimates for this run's peak, from the data's real lengths."""
    from lorakit.plan.lengths import read_lengths
    from lorakit.plan.report import PlanInputs, build_plan

    return build_plan(PlanInputs.of(cfg, read_lengths(cfg)), "cpu").estimate.total / 2**30


def trl_tokenizer(model_path: str):
    """The model's tokenizer for TRL, with the chat template lorakit uses and a pad token."""
    from transformers import AutoTokenizer

    from lorakit.data.templates import resolve_template

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.chat_template = resolve_template("auto", tokenizer)[1]  # the template lorakit uses too
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def worker_trl(args: argparse.Namespace, workdir: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tokenizer = trl_tokenizer(args.model_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32)

    class Clock(TrainerCallback):
        first: float | None = None
        losses: list[float] = []  # noqa: RUF012

        def on_step_end(self, targs, state, control, **kw):
            Clock.first = Clock.first or time.perf_counter() - T0

        def on_log(self, targs, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                Clock.losses.append(float(logs["loss"]))
                print(f"trl step {state.global_step}: loss {logs['loss']}", file=sys.stderr, flush=True)

    config = SFTConfig(output_dir=str(workdir / "trl"), num_train_epochs=1, per_device_train_batch_size=STEP_EXAMPLES,
                       gradient_accumulation_steps=1, learning_rate=2e-4, lr_scheduler_type="constant",
                       max_length=512, gradient_checkpointing=True, bf16=False, fp16=False, logging_steps=1,
                       save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                       include_num_input_tokens_seen="non_padding", dataloader_num_workers=0, seed=42)
    trainer = SFTTrainer(model=model, args=config, processing_class=tokenizer, callbacks=[Clock()],
                         train_dataset=Dataset.from_list(load_rows(args.data, 0, args.examples)),
                         peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.save_pretrained(workdir / "trl-adapter")
    return {"tokens": int(trainer.state.num_input_tokens_seen), "seconds": seconds, "first_step_s": Clock.first,
            "train_loss": sum(Clock.losses) / len(Clock.losses), "peak_rss_gib": peak_rss_gib(),
            "adapter": str(workdir / "trl-adapter")}


def worker_judge(args: argparse.Namespace, workdir: Path) -> dict:
    """Held-out loss of each adapter: full-logit transformers forward, one example at a time."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lorakit.config.schema import DataSection
    from lorakit.data.dataset import build_datasets
    from lorakit.model.load import load_tokenizer
    from lorakit.model.resolve import resolve_model

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = load_tokenizer(resolve_model(args.model_path))
    data = write_jsonl(workdir / "heldout.jsonl", load_rows(args.data, args.examples, args.eval_rows))
    examples = build_datasets(DataSection(train=[str(data)], max_length=512, val_size=0), tokenizer).train
    losses = {}
    for name, adapter in json.loads(args.adapters).items():
        base = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32, attn_implementation="sdpa")
        model = PeftModel.from_pretrained(base, adapter).eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for e in examples:
                logits = model(input_ids=torch.tensor([e.input_ids])).logits[0, :-1].float()
                labels = torch.tensor(e.labels[1:])
                total += torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum").item()
                count += int((labels != -100).sum())
        losses[name] = total / count
    return losses


def run_worker(kind: str, args: argparse.Namespace, workdir: Path, extra: Sequence[str] = ()) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--model", args.model, "--data", args.data,
           "--examples", str(args.examples), "--eval-rows", str(args.eval_rows), "--workdir", str(workdir),
           *(["--compile"] if args.compile else []), *extra]
    print(f"running {kind} ...", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # progress streams to stderr
    if out.returncode != 0:
        sys.exit(f"{kind} worker failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                                              "instructions" / "seed_tasks_alpaca.jsonl"))
    parser.add_argument("--examples", type=int, default=64, help="training rows, 8 per step, both sides")
    parser.add_argument("--eval-rows", type=int, default=32, help="held-out rows after them, for the judge")
    parser.add_argument("--compile", action="store_true", help="lorakit with train.compile")
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["lorakit", "trl", "judge"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--adapters", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data = str(Path(args.data).resolve())

    if args.worker:
        Path(args.workdir).mkdir(exist_ok=True)
        os.chdir(args.workdir)
        worker = {"lorakit": worker_lorakit, "trl": worker_trl, "judge": worker_judge}[args.worker]
        print(json.dumps(worker(args, Path(args.workdir))))
        return

    gflops = matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        ours = run_worker("lorakit", args, workdir)
        lean = run_worker("lorakit", args, workdir / "lean", ["--checkpointing"])
        path = ["--model-path", ours["model_path"]]
        trl = run_worker("trl", args, workdir, path)
        adapters = {"lorakit": ours["adapter"], "lean": lean["adapter"], "trl": trl["adapter"]}
        heldout = run_worker("judge", args, workdir, [*path, "--adapters", json.dumps(adapters)])
    body, head = head_and_body(ours["model_path"])
    runs = {"lorakit": ours, "lean": lean, "trl": trl}
    flops = {k: 4 * body * r["tokens"] + 4 * head * r.get("supervised", r["tokens"]) for k, r in runs.items()}
    figures = [  # TRL's head runs on every token, so its "supervised" count is all of them
        ("trained tokens/s", lambda k: runs[k]["tokens"] / runs[k]["seconds"]),
        ("peak RSS (GiB)", lambda k: runs[k]["peak_rss_gib"]),
        ("time to first step (s)", lambda k: runs[k]["first_step_s"]),
        ("held-out loss after training", lambda k: heldout[k]),
        ("training loss, mean of steps", lambda k: runs[k]["train_loss"]),
        ("real tokens trained", lambda k: runs[k]["tokens"]),
        ("training time (s)", lambda k: runs[k]["seconds"]),
        ("model GFLOP/s", lambda k: flops[k] / runs[k]["seconds"] / 1e9),
        ("MFU (of measured matmul)", lambda k: flops[k] / runs[k]["seconds"] / 1e9 / gflops),
    ]
    print(f"\nmodel {args.model}: {args.examples} rows, 8 per step, max length 512, float32; "
          f"matmul {gflops:.0f} GFLOP/s; lorakit compile {'on' if args.compile else 'off'}")
    print("| | lorakit | lorakit + checkpointing | TRL | lorakit/TRL | lorakit + ckpt/TRL |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, get in figures:
        a, b, t = get("lorakit"), get("lean"), get("trl")
        print(f"| {name} | {a:.3f} | {b:.3f} | {t:.3f} | {a / t:.2f} | {b / t:.2f} |")
    for key, name in (("lorakit", "lorakit"), ("lean", "lorakit + checkpointing")):
        r = runs[key]
        print(f"\n{name}: `lorakit plan` estimate {r['planned_gib']:.2f} GiB, measured peak RSS "
              f"{r['peak_rss_gib']:.2f} GiB (estimate/measured {r['planned_gib'] / r['peak_rss_gib']:.2f}); "
              f"training began {r['begin_s']:.1f} s after start, first step done at {r['first_step_s']:.1f} s")
    print(f"\nlorakit packing efficiency on the whole file (real / computed tokens, rows of 512, 8 rows "
          f"per micro-batch): {ours['packing_efficiency']:.1%}")


if __name__ == "__main__":
    main()
