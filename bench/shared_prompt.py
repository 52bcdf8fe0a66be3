"""A prompt the examples share, computed once: a LoRA step's forward and backward with and without, in one run.

    python bench/shared_prompt.py --model gemma-3-270m --data examples/typst/train.jsonl --micro-batch 8
    python bench/shared_prompt.py --model smollm2-135m --data ../shared/data/instructions/seed_tasks_alpaca.jsonl

The first ``--batches`` micro-batches of the file (in file order, one row each, as lorakit lays them without
packing) run through the model with lorakit's segmented attention, LoRA r=16 on all linear layers, float32:
laid whole, then with the prompt they share laid once (``collate(share_prompts=True)``), alternately
``--repeats`` times, so a slower minute of the machine weighs on both. Prints the tokens computed, the seconds
of each pass and their ratio, and the loss of both (the same up to float rounding).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def alpaca_as_conversations(path: Path, folder: Path) -> Path:
    """Alpaca rows (instruction/input/output) as prompt/completion conversations, which lorakit reads."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows or "instruction" not in rows[0]:
        return path
    out = folder / "conversations.jsonl"
    out.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": f"{r['instruction']}\n\n{r['input']}" if r.get("input")
                    else r["instruction"]}],
        "completion": [{"role": "assistant", "content": r["output"]}]}) + "\n" for r in rows))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m", choices=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--data", default="examples/typst/train.jsonl")
    parser.add_argument("--micro-batch", type=int, default=4, help="examples per row")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorakit.config.schema import DataSection
    from lorakit.data.dataset import build_datasets
    from lorakit.data.packing import collate, shared_prompt
    from lorakit.model.attention import pick_attention
    from lorakit.model.load import load_tokenizer
    from lorakit.model.resolve import resolve_model
    from lorakit.train.loss import batch_loss

    resolved = resolve_model(args.model)
    tokenizer = load_tokenizer(resolved)
    with tempfile.TemporaryDirectory() as tmp:
        data = alpaca_as_conversations(Path(args.data).resolve(), Path(tmp))
        examples = build_datasets(DataSection(train=[str(data)], max_length=512, val_size=0), tokenizer).train
    rows = [examples[i : i + args.micro_batch] for i in range(0, args.micro_batch * args.batches, args.micro_batch)]
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32)
    model.set_attn_implementation(pick_attention(model.config, "cpu", torch.float32))
    model.requires_grad_(False)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))

    def step(share: bool) -> tuple[float, float, int]:
        start, total, computed = time.perf_counter(), 0.0, 0
        for row in rows:
            batch = collate([row], tokenizer.pad_token_id, share)
            loss = batch_loss(model, batch.to_tensors(), 256)
            loss.backward()
            total, computed = total + loss.item(), computed + batch.num_computed
        model.zero_grad()
        return time.perf_counter() - start, total, computed

    step(False)
    step(True)  # warm: the allocator and the kernels' first calls
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for share in (False, True):
            seconds[share].append(step(share)[0])
    _, whole_loss, whole_tokens = step(False)
    _, shared_loss, shared_tokens = step(True)
    whole, shared = (statistics.median(seconds[s]) for s in (False, True))
    print(f"\n{args.model}, {args.batches} rows of {args.micro_batch} examples from {args.data}; shared prompt per "
          f"row: {[shared_prompt(r) for r in rows]} tokens")
    print("| | laid whole | shared prompt once | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| tokens computed | {whole_tokens} | {shared_tokens} | {shared_tokens / whole_tokens:.2f} |")
    print(f"| forward + backward, median of {args.repeats} (s) | {whole:.2f} | {shared:.2f} | {shared / whole:.2f} |")
    print(f"| summed loss of the rows | {whole_loss:.6f} | {shared_loss:.6f} | |")


if __name__ == "__main__":
    main()
