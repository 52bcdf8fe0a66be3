"""The output head's product on the CPU: ``hidden @ weight.T`` against ``model.head.head_logits``, in one run.

    python bench/head_product.py                       # Gemma-3 270M's head: 262,144 x 640
    python bench/head_product.py --vocab 49152 --hidden 576   # SmolLM2-135M's
    python bench/head_product.py --adapter runs/typst-v001 --cases examples/typst/val.jsonl   # and an evaluation

For each token count (a decode step's lanes, a loss chunk's supervised tokens) both products run alternately
``--repeats`` times on the same random float32 matrix of the head's shape (the time does not depend on the
values); then a training chunk's loss and gradient (``train.loss.chunked_head_loss``, Gemma's soft-cap) with
either product. Prints the median milliseconds of each and their ratio, and the largest difference between
the two products' logits. With ``--adapter``, then an in-training evaluation of that run's adapter (unmerged,
as a training run evaluates it) on ``--cases``: its loss pass and its generated answers, with either product
alternately, and with ``--untrained`` the same adapter with its B matrices zeroed (a run's step 0).
"""

from __future__ import annotations

import argparse
import statistics
import time

TOKENS = (1, 2, 4, 8, 12, 16, 32, 60, 64, 96, 137, 256)


def median_ms(runs: dict[str, object], repeats: int) -> dict[str, float]:
    """Each callable's median time, the callables alternated so a slower second weighs on all of them."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()  # warm
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def product_row(weight: object, tokens: int, repeats: int) -> str:
    import torch

    from lorakit.model.head import head_logits

    hidden = torch.randn(tokens, weight.shape[1])
    t = median_ms({"old": lambda: hidden @ weight.T, "new": lambda: head_logits(hidden, weight)}, repeats)
    diff = float((head_logits(hidden, weight)[:tokens] - hidden @ weight.T).abs().max())
    return f"| {tokens} | {t['old']:.1f} | {t['new']:.1f} | {t['new'] / t['old']:.2f} | {diff:.1e} |"


def chunk_row(head: object, tokens: int, repeats: int) -> str:
    """A training chunk's loss and gradient with Gemma's soft-cap, with either product."""
    import torch

    import lorakit.train.loss as loss
    from lorakit.model.head import head_logits

    vocab, size = head.weight.shape
    hidden = torch.randn(tokens, size, requires_grad=True)
    targets = torch.randint(0, vocab, (tokens,))

    def chunk(product: object) -> None:
        use_product(product)
        loss.chunked_head_loss(hidden, head, targets, 256, softcap=30.0).backward()

    t = median_ms({"old": lambda: chunk(lambda h, w: h @ w.T), "new": lambda: chunk(head_logits)}, repeats)
    use_product(head_logits)
    return f"| {tokens} | {t['old']:.0f} | {t['new']:.0f} | {t['new'] / t['old']:.2f} |"


def use_product(product: object) -> None:
    """Every caller of the head's product on the given one."""
    import lorakit.infer.lanes as lanes
    import lorakit.model.head as head
    import lorakit.train.loss as loss

    head.head_logits = lanes.head_logits = loss.head_logits = product


def evaluation_rows(adapter_path: str, cases_path: str, untrained: bool, repeats: int) -> None:
    import dataclasses
    from pathlib import Path

    from lorakit.infer.evaluate import eval_loss, load_cases, score
    from lorakit.infer.load import load_adapter
    from lorakit.model.head import head_logits

    adapter = dataclasses.replace(load_adapter(adapter_path, device="cpu"), base=None)  # unmerged, as in training
    if untrained:
        for name, parameter in adapter.model.named_parameters():
            if "lora_B" in name:
                parameter.data.zero_()
    cases = load_cases(Path(cases_path))
    times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    outcomes = {}
    for _ in range(repeats):
        for name, product in (("old", lambda h, w: h @ w.T), ("new", head_logits)):
            use_product(product)
            start = time.perf_counter()
            loss, starts = eval_loss(adapter, cases, with_starts=True)
            middle = time.perf_counter()
            results, answers = score(adapter, cases, ["exact", "typst"], cap_at_reference=True, starts=starts)
            times[name].append((middle - start, time.perf_counter() - middle))
            outcomes[name] = (round(loss, 6), results, answers)
    use_product(head_logits)
    print(f"\n| evaluation of {adapter_path}{' untrained' if untrained else ''}, {len(cases)} cases | before (s) "
          "| now (s) | ratio |")
    print("|---|---:|---:|---:|")
    for part, label in ((0, "loss pass"), (1, "generated answers")):
        old, new = (statistics.median(t[part] for t in times[k]) for k in ("old", "new"))
        print(f"| {label} | {old:.2f} | {new:.2f} | {new / old:.2f} |")
    print(f"loss {outcomes['old'][0]} / {outcomes['new'][0]}, metrics {outcomes['old'][1]} / {outcomes['new'][1]}, "
          f"the same answers: {outcomes['old'][2] == outcomes['new'][2]}")


def main() -> None:
    import torch

    from lorakit.train.host import tune_host

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=262144)
    parser.add_argument("--hidden", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--adapter", help="a run folder: its in-training evaluation, timed with either product")
    parser.add_argument("--cases", help="with --adapter: the evaluation's JSONL")
    parser.add_argument("--untrained", action="store_true", help="with --adapter: its B matrices zeroed (step 0)")
    args = parser.parse_args()
    tune_host()
    head = torch.nn.Linear(args.hidden, args.vocab, bias=False).requires_grad_(False)
    torch.nn.init.normal_(head.weight, std=0.05)
    print(f"head {args.vocab} x {args.hidden}, float32, {torch.get_num_threads()} threads")
    print("| tokens | hidden @ weight.T (ms) | head_logits (ms) | ratio | largest difference |")
    print("|---:|---:|---:|---:|---:|")
    for tokens in TOKENS:
        print(product_row(head.weight, tokens, args.repeats), flush=True)
    print("\n| a training chunk's loss and gradient, tokens | before (ms) | now (ms) | ratio |")
    print("|---:|---:|---:|---:|")
    for tokens in (137, 256):
        print(chunk_row(head, tokens, args.repeats), flush=True)
    if args.adapter:
        del head
        evaluation_rows(args.adapter, args.cases, args.untrained, max(1, args.repeats // 2))


if __name__ == "__main__":
    main()
