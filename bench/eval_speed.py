"""How long ``lorakit eval`` takes on a held-out file, per engine, against the transformers path as it was.

Each row scores the same run on the same cases, greedy, in this process, one after the other:

- baseline: transformers' ``generate`` on fixed batches of ``--baseline-batch`` (the adapter merged), the path
  before the lane decoder: every row of a batch runs until the longest answer of the batch ends;
- transformers with the lane decoder (continuous batching, ``--lanes`` answers at once), without and with
  drafts from the text (``infer.lookup``: the tail's few lanes check several tokens a step);
- llama.cpp on the run's GGUF exports (``--quants``), ``--llama-batch`` sequences per decode step.

It prints seconds, formulas/s, generated tokens/s, exact match and the speed-up over the baseline, then how
many of the lane decoder's answers differ from the baseline's and why (an answer cut by its length budget:
the baseline gives a whole batch the budget of its longest prompt, the lanes each their own).

    python bench/eval_speed.py typst-v001 --data ../shared/data/typst/real_math_dev.jsonl --runs-dir runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from lorakit.infer import metrics
from lorakit.infer.evaluate import LENGTH_RATIO, case_turns, load_cases
from lorakit.infer.generate import generate_turns


def timed_run(adapter: Any, cases: list, batch_size: int, max_new_tokens: int, padded: bool = False) -> dict:
    start = time.perf_counter()
    predictions = generate_turns(adapter, [case_turns(adapter, c) for c in cases], max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, length_ratio=LENGTH_RATIO, padded=padded)
    seconds = time.perf_counter() - start
    tokens = sum(len(adapter.tokenizer(p, add_special_tokens=False)["input_ids"]) + 1 for p in predictions)
    exact = metrics.exact_match(predictions, [c.reference for c in cases])
    return {"seconds": seconds, "per_s": len(cases) / seconds, "tokens_per_s": tokens / seconds, "exact": exact,
            "predictions": predictions}


def differences(adapter: Any, cases: list, baseline: list[str], lanes: list[str], max_new_tokens: int) -> str:
    """How many answers differ, and how many of those ran into a length budget on either side."""
    differ = [i for i, (a, b) in enumerate(zip(baseline, lanes, strict=True)) if a != b]
    budget_cut = 0
    for i in differ:
        prompt = len(adapter.encoder.prompt_ids(case_turns(adapter, cases[i]), None))
        own = min(max_new_tokens, int(LENGTH_RATIO * prompt) + 16)
        longest = max(len(adapter.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (baseline[i], lanes[i]))
        budget_cut += longest + 2 >= own  # one side stopped at (about) its budget, not at an end of turn
    return (f"{len(differ)} of {len(cases)} answers differ from the baseline's; {budget_cut} of them ran into a "
            f"length budget, {len(differ) - budget_cut} are float rounding flipping a token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--baseline-batch", type=int, default=32)
    parser.add_argument("--lanes", type=int, default=96)
    parser.add_argument("--llama-batch", type=int, default=32)
    parser.add_argument("--quants", default="f16", help="Comma-separated GGUF types for llama.cpp rows; '' for none.")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()

    from lorakit.infer.export.gguf_export import export_gguf
    from lorakit.infer.llamacpp import load_llamacpp
    from lorakit.infer.load import load_adapter

    cases = load_cases(args.data, limit=args.limit)
    rows: dict[str, dict] = {}
    adapter = load_adapter(args.run, args.runs_dir, device="cpu")
    baseline = f"transformers generate, batches of {args.baseline_batch} (before)"
    rows[baseline] = timed_run(adapter, cases, args.baseline_batch, args.max_new_tokens, padded=True)
    import lorakit.infer.lanes as lane_decoder

    drafting, lane_decoder.DRAFT_ROWS = lane_decoder.DRAFT_ROWS, 0
    undrafted = f"transformers, {args.lanes} lanes, no drafts"
    rows[undrafted] = timed_run(adapter, cases, args.lanes, args.max_new_tokens)
    lane_decoder.DRAFT_ROWS = drafting
    lanes = f"transformers, {args.lanes} lanes, drafts from the text (the default)"
    rows[lanes] = timed_run(adapter, cases, args.lanes, args.max_new_tokens)
    compared = differences(adapter, cases, rows[baseline]["predictions"], rows[lanes]["predictions"],
                           args.max_new_tokens)
    drafts_changed = sum(a != b for a, b in zip(rows[undrafted]["predictions"], rows[lanes]["predictions"],
                                                strict=True))
    del adapter
    with tempfile.TemporaryDirectory() as folder:
        for quant in [q for q in args.quants.split(",") if q]:
            path = export_gguf(args.run, Path(folder) / f"{quant}.gguf", quant, runs_dir=args.runs_dir).model
            engine = load_llamacpp(str(path), args.runs_dir)
            rows[f"llama.cpp {quant}, {args.llama_batch} per step"] = timed_run(engine, cases, args.llama_batch,
                                                                                args.max_new_tokens)
            del engine
    base = rows[baseline]["seconds"]
    print(f"\n{len(cases)} cases from {args.data}\n")
    print("| engine | seconds | formulas/s | generated tokens/s | exact | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, row in rows.items():
        print(f"| {label} | {row['seconds']:.0f} | {row['per_s']:.2f} | {row['tokens_per_s']:.0f} | "
              f"{row['exact']:.1%} | {base / row['seconds']:.2f}x |")
    print(f"\n{compared}")
    print(f"{drafts_changed} of {len(cases)} answers differ between the lanes with and without drafts")


if __name__ == "__main__":
    main()
