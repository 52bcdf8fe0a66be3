"""DPO throughput: lorakit's train.method dpo against TRL's DPOTrainer + PEFT, measured in one run.

    python bench/dpo_throughput.py --model smollm2-135m

Both sides train the same pairs of LLaMA-Factory's ``dpo_en_demo.json`` (the first ``--pairs`` whose longer
side fits ``--max-length`` tokens, so neither truncates) in the same order, 8 pairs per optimizer step, from
the same initial LoRA (r=16, alpha=32, all linear layers, saved once and loaded by both), beta 0.1, sigmoid
loss, AdamW at a constant ``--lr``, float32 on the CPU. TRL keeps its defaults (padding, gradient
checkpointing, the reference computed at every step with the adapter switched off) except ``bf16=False`` (bf16
autocast runs at about 1 GFLOP/s on CPUs without native bf16) and ``train_sampling_strategy: sequential`` with
its rows written in lorakit's step order. lorakit runs with its defaults (4 pairs a micro-batch, accumulated
twice; the reference measured once before the first step, whose time is counted as training time here). Each
side runs in its own process; a third, lorakit's SFT on the same sequences (each pair's two sides as two rows,
8 a micro-batch: the same rows and lengths), gives the memory DPO is compared with.

Held-out: a judge process loads each trained adapter and scores ``--eval-pairs`` further pairs with a plain
transformers forward (full logits, the adapter on and off): the mean DPO loss and the preference accuracy
(chosen reward above rejected), the same code for both adapters.

Trained tokens: the real tokens of both sides of every pair trained, counted once with lorakit's tokenization
and used for both sides' rates (the same pairs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_throughput import peak_rss_gib, trl_tokenizer, write_jsonl  # this script's folder: shared helpers

PEERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "peers" / "llamafactory"
STEP_PAIRS = 8
BETA = 0.1


def trl_rows(path: Path) -> list[dict]:
    """LLaMA-Factory's sharegpt ranking rows as TRL's conversational explicit-prompt pairs (both read them)."""
    role = {"human": "user", "gpt": "assistant", "system": "system"}
    rows = []
    for row in json.loads(path.read_text()):
        prompt = [{"role": role[m["from"]], "content": m["value"]} for m in row["conversations"]]
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": row["chosen"]["value"]}],
                     "rejected": [{"role": "assistant", "content": row["rejected"]["value"]}]})
    return rows


def lorakit_pairs(model_path: str, rows_file: Path, max_length: int) -> list:
    from lorakit.config.schema import DataSection
    from lorakit.data.dataset import build_datasets
    from lorakit.model.load import load_tokenizer
    from lorakit.model.resolve import resolve_model

    tokenizer = load_tokenizer(resolve_model(model_path))
    data = DataSection(train=[str(rows_file)], max_length=max_length, val_size=0, on_overflow="drop")
    return build_datasets(data, tokenizer, "dpo").train


def worker_prepare(args: argparse.Namespace, workdir: Path) -> dict:
    """The pairs that fit, the train and held-out files, the initial adapter, TRL's rows in lorakit's order."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorakit.config.schema import DataSection, TrainSection
    from lorakit.model.resolve import resolve_model
    from lorakit.train.plan import plan_steps

    model_path = resolve_model(args.model).path
    rows = trl_rows(PEERS / "dpo_en_demo.json")
    every = write_jsonl(workdir / "all.jsonl", rows)
    fitting = [int(p.where.rsplit(":", 1)[1]) - 1 for p in lorakit_pairs(model_path, every, args.max_length)]
    train = [rows[i] for i in fitting[: args.pairs]]
    heldout = [rows[i] for i in fitting[args.pairs : args.pairs + args.eval_pairs]]
    write_jsonl(workdir / "train.jsonl", train)
    write_jsonl(workdir / "heldout.jsonl", heldout)
    pairs = lorakit_pairs(model_path, workdir / "train.jsonl", args.max_length)
    steps = plan_steps(pairs, TrainSection(micro_batch_size=4, grad_accum=2, epochs=1),
                       DataSection(train=["x"], max_length=args.max_length, packing=False))
    order = [int(p.where.rsplit(":", 1)[1]) - 1 for s in steps for mb in s.micro_batches for row in mb for p in row]
    write_jsonl(workdir / "train-trl-order.jsonl", [train[i] for i in order])
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                    task_type="CAUSAL_LM")).save_pretrained(workdir / "init")
    return {"model_path": model_path, "tokens": sum(len(p) for p in pairs), "pairs": len(pairs),
            "heldout": len(heldout)}


def worker_lorakit(args: argparse.Namespace, workdir: Path) -> dict:
    import yaml

    import lorakit.recipe.reference as reference
    from lorakit.config import load_config
    from lorakit.recipe.run import run_training

    sft = args.worker == "lorakit-sft"
    measured = {"seconds": 0.0}
    measure = reference.with_reference

    def timed(*a, **k):  # the reference's one pass is part of DPO's training time
        start = time.perf_counter()
        out = measure(*a, **k)
        measured["seconds"] += time.perf_counter() - start
        return out

    reference.with_reference = timed
    data = workdir / "train.jsonl"
    if sft:  # the same sequences as SFT rows: each pair's prompt with its chosen, and with its rejected answer
        pairs = [json.loads(x) for x in data.read_text().splitlines()]
        data = write_jsonl(workdir / "sft.jsonl", [{"prompt": r["prompt"], "completion": r[side]}
                                                   for r in pairs for side in ("chosen", "rejected")])
    config = {"model": {"name_or_path": args.model, "dtype": "float32"},
              "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear", "init_from": str(workdir / "init")},
              "data": {"train": str(data), "max_length": args.max_length, "val_size": 0, "packing": False},
              "train": {"method": "sft" if sft else "dpo", "epochs": 1, "micro_batch_size": 8 if sft else 4,
                        "grad_accum": 2, "lr": args.lr, "warmup_ratio": 0.0, "scheduler": "constant",
                        "log_every": 1},
              "dpo": {"beta": BETA},
              "output": {"dir": str(workdir / "runs"), "name": "sft" if sft else "dpo"}}
    path = workdir / f"{config['output']['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    outcome = run_training(load_config(path))
    return {"seconds": outcome.metrics["train_runtime"] + measured["seconds"], "reference_s": measured["seconds"],
            "peak_rss_gib": peak_rss_gib(), "adapter": str(outcome.run_dir)}


def worker_trl(args: argparse.Namespace, workdir: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    tokenizer = trl_tokenizer(args.model_path)
    base = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(workdir / "init"), is_trainable=True)
    rows = [json.loads(x) for x in (workdir / "train-trl-order.jsonl").read_text().splitlines()]
    config = DPOConfig(output_dir=str(workdir / "trl"), num_train_epochs=1, per_device_train_batch_size=STEP_PAIRS,
                       gradient_accumulation_steps=1, learning_rate=args.lr, lr_scheduler_type="constant",
                       beta=BETA, max_length=None, bf16=False, fp16=False, logging_steps=1, save_strategy="no",
                       report_to="none", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=42,
                       train_sampling_strategy="sequential")
    trainer = DPOTrainer(model=model, args=config, processing_class=tokenizer, train_dataset=Dataset.from_list(rows))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.save_pretrained(workdir / "trl-adapter", selected_adapters=["default"])
    return {"seconds": seconds, "peak_rss_gib": peak_rss_gib(), "adapter": str(workdir / "trl-adapter")}


def worker_judge(args: argparse.Namespace, workdir: Path) -> dict:
    """Each adapter's held-out mean DPO loss and preference accuracy: full logits, adapter on and off."""
    import torch
    import torch.nn.functional as F
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(os.cpu_count() or 1)
    pairs = lorakit_pairs(args.model_path, workdir / "heldout.jsonl", args.max_length)

    def logp(model, example) -> float:
        logits = model(input_ids=torch.tensor([example.input_ids])).logits[0, :-1].float()
        labels = torch.tensor(example.labels[1:])
        return -F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum").item()

    scores = {}
    for name, adapter in json.loads(args.adapters).items():
        base = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, adapter).eval()
        losses, right = [], 0
        with torch.no_grad():
            for pair in pairs:
                policy = [logp(model, pair.chosen), logp(model, pair.rejected)]
                with model.disable_adapter():
                    ref = [logp(model, pair.chosen), logp(model, pair.rejected)]
                margin = BETA * ((policy[0] - ref[0]) - (policy[1] - ref[1]))
                losses.append(-F.logsigmoid(torch.tensor(margin)).item())
                right += margin > 0
        scores[name] = {"loss": sum(losses) / len(losses), "accuracy": right / len(pairs)}
    return scores


def run_worker(kind: str, args: argparse.Namespace, workdir: Path, extra: tuple[str, ...] = ()) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--model", args.model, "--pairs", str(args.pairs),
           "--eval-pairs", str(args.eval_pairs), "--max-length", str(args.max_length), "--lr", str(args.lr),
           "--workdir", str(workdir), *extra]
    print(f"running {kind} ...", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # progress streams to stderr
    if out.returncode != 0:
        sys.exit(f"{kind} worker failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--pairs", type=int, default=32, help="training pairs, 8 per step, both sides")
    parser.add_argument("--eval-pairs", type=int, default=50, help="held-out pairs after them, for the judge")
    parser.add_argument("--max-length", type=int, default=512, help="pairs whose longer side is longer are skipped")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--worker", choices=["prepare", "lorakit", "lorakit-sft", "trl", "judge"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--adapters", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        os.chdir(args.workdir)
        worker = {"prepare": worker_prepare, "lorakit": worker_lorakit, "lorakit-sft": worker_lorakit,
                  "trl": worker_trl, "judge": worker_judge}[args.worker]
        print(json.dumps(worker(args, Path(args.workdir))))
        return

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        facts = run_worker("prepare", args, workdir)
        path = ("--model-path", facts["model_path"])
        ours = run_worker("lorakit", args, workdir)
        sft = run_worker("lorakit-sft", args, workdir)
        trl = run_worker("trl", args, workdir, path)
        adapters = json.dumps({"lorakit": ours["adapter"], "trl": trl["adapter"]})
        heldout = run_worker("judge", args, workdir, (*path, "--adapters", adapters))
    rate = {k: facts["tokens"] / r["seconds"] for k, r in (("lorakit", ours), ("trl", trl))}
    print(f"\nmodel {args.model}: {facts['pairs']} pairs of dpo_en_demo.json ({facts['tokens']} real tokens, both "
          f"sides), 8 per step, beta {BETA}, lr {args.lr}, float32; held-out: {facts['heldout']} pairs")
    print("| | lorakit | TRL DPOTrainer | lorakit/TRL |")
    print("|---|---:|---:|---:|")
    rows = [("trained tokens/s", rate["lorakit"], rate["trl"]),
            ("training time (s)", ours["seconds"], trl["seconds"]),
            ("peak RSS (GiB)", ours["peak_rss_gib"], trl["peak_rss_gib"]),
            ("held-out preference accuracy", heldout["lorakit"]["accuracy"], heldout["trl"]["accuracy"]),
            ("held-out DPO loss", heldout["lorakit"]["loss"], heldout["trl"]["loss"])]
    for name, a, t in rows:
        print(f"| {name} | {a:.4f} | {t:.4f} | {a / t if t else float('nan'):.2f} |")
    print(f"\nlorakit's reference pass: {ours['reference_s']:.1f} s of its {ours['seconds']:.1f} s")
    print(f"memory: lorakit DPO peak RSS {ours['peak_rss_gib']:.2f} GiB, lorakit SFT on the same sequences "
          f"{sft['peak_rss_gib']:.2f} GiB: {ours['peak_rss_gib'] / sft['peak_rss_gib']:.2f}x")


if __name__ == "__main__":
    main()
