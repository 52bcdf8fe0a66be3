"""How long ``lorakit eval`` takes on a held-out file, per engine, against the transformers path as it was.

Each row scores the same run on the same cases, greedy, in this process, one after the other:

- baseline: transformers as before this benchmark's issue (batches of 8, the LoRA layers computed on the side);
- transformers now (the adapter merged into the weights while generating, batches of ``--batch-size``);
- llama.cpp on the run's f16 and q8_0 GGUF exports, ``--batch-size`` sequences per decode step.

It prints seconds, formulas/s, generated tokens/s, exact match, and the speed-up over the baseline.

    python bench/eval_speed.py typst-v001 --data ../shared/data/typst/real_math_dev.jsonl --runs-dir runs
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from lorakit.infer import generate as generate_module
from lorakit.infer import metrics
from lorakit.infer.evaluate import LENGTH_RATIO, _turns, load_cases
from lorakit.infer.generate import generate_turns


def timed_run(adapter: Any, cases: list, batch_size: int, max_new_tokens: int) -> dict[str, float]:
    start = time.perf_counter()
    predictions = generate_turns(adapter, [_turns(adapter, c) for c in cases], max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, length_ratio=LENGTH_RATIO)
    seconds = time.perf_counter() - start
    tokens = sum(len(adapter.tokenizer(p, add_special_tokens=False)["input_ids"]) + 1 for p in predictions)
    exact = metrics.exact_match(predictions, [c.reference for c in cases])
    return {"seconds": seconds, "per_s": len(cases) / seconds, "tokens_per_s": tokens / seconds, "exact": exact}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--skip-baseline", action="store_true", help="The slow row: about 20 minutes on 660.")
    args = parser.parse_args()

    from lorakit.infer.export.gguf_export import export_gguf
    from lorakit.infer.llamacpp import load_llamacpp
    from lorakit.infer.load import load_adapter

    cases = load_cases(args.data, limit=args.limit)
    rows: dict[str, dict[str, float]] = {}
    adapter = load_adapter(args.run, args.runs_dir, device="cpu")
    if not args.skip_baseline:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_unmerged())
            rows["transformers, before (batch 8, unmerged)"] = timed_run(adapter, cases, 8, args.max_new_tokens)
    rows[f"transformers, now (batch {args.batch_size}, merged)"] = timed_run(adapter, cases, args.batch_size,
                                                                            args.max_new_tokens)
    del adapter
    with tempfile.TemporaryDirectory() as folder:
        for quant in ("f16", "q8_0"):
            path = export_gguf(args.run, Path(folder) / f"{quant}.gguf", quant, runs_dir=args.runs_dir).model
            engine = load_llamacpp(str(path), args.runs_dir)
            rows[f"llama.cpp {quant} (batch {args.batch_size})"] = timed_run(engine, cases, args.batch_size,
                                                                            args.max_new_tokens)
            del engine
    base = next(iter(rows.values()))["seconds"]
    print(f"\n{len(cases)} cases from {args.data}\n")
    print("| engine | seconds | formulas/s | generated tokens/s | exact | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, row in rows.items():
        print(f"| {label} | {row['seconds']:.0f} | {row['per_s']:.2f} | {row['tokens_per_s']:.0f} | "
              f"{row['exact']:.1%} | {base / row['seconds']:.1f}x |")


@contextlib.contextmanager
def _unmerged():
    """The generation path as it was: the LoRA layers computed beside the frozen weights at every step."""
    original = generate_module.merged
    generate_module.merged = lambda adapter: contextlib.nullcontext()
    try:
        yield
    finally:
        generate_module.merged = original


if __name__ == "__main__":
    main()
