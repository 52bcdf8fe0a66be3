"""Generate the LaTeX -> Typst math data set of the quickstart.

The formulas are invented by ``grammar.py`` (none comes from ../shared/data/typst, which is
kept for evaluation only) and labelled by tex2typst itself, the converter and version that
labelled the real evaluation sets, so the adapter learns that converter's conventions
(``\\frac{a}{b+c}`` -> ``a/(b + c)``, ``\\epsilon`` -> ``epsilon.alt``, ``\\dfrac`` -> ``frac``,
``array`` -> ``mat(delim: #none, ...)``). A formula is kept only if tex2typst converts it and
its label compiles as Typst math.

    npm ci --prefix examples/typst       # tex2typst, pinned in package.json (Node 18+)
    python examples/typst/make_data.py   # writes train.jsonl and val.jsonl beside this file
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from grammar import formula  # noqa: E402  (a sibling file, not a package)

PROMPT = "Convert this LaTeX math to Typst:\n"
MAX_TEX = 160  # characters; the real dev formulas are at most 191, median 26


def kept_share(length: int) -> float:
    """How many formulas of this length to keep: textbook formulas are mostly short (a grammar's are not)."""
    return 1.0 if length <= 40 else 0.5 if length <= 80 else 0.2


class LabelError(RuntimeError):
    """tex2typst cannot be run (Node or the pinned package missing)."""


def tex2typst(formulas: Sequence[str]) -> list[str | None]:
    """tex2typst's Typst for each formula (None where it refuses one), through tex2typst.mjs."""
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "tex2typst").is_dir():
        raise LabelError("tex2typst is not installed: run `npm ci --prefix examples/typst` (needs Node 18+)")
    payload = "".join(json.dumps({"tex": tex}) + "\n" for tex in formulas)
    done = subprocess.run([node, str(HERE / "tex2typst.mjs")], input=payload, capture_output=True, text=True,
                          cwd=HERE, check=False)
    if done.returncode != 0:
        raise LabelError(f"tex2typst.mjs failed: {done.stderr.strip().splitlines()[-1:]}")
    return [json.loads(line)["typst"] for line in done.stdout.splitlines()]


def compiles(typst: str) -> bool:
    from lorakit.infer.metrics import typst_math_compiles

    return typst_math_compiles(typst)


def invent(count: int, rng: random.Random, seen: set[str]) -> list[str]:
    """``count`` new distinct formulas, none in ``seen`` (which grows)."""
    out: list[str] = []
    while len(out) < count:
        tex = formula(rng)
        if tex.strip() not in seen and len(tex) <= MAX_TEX and rng.random() < kept_share(len(tex)):
            seen.add(tex)
            out.append(tex)
    return out


def generate(count: int, seed: int, exclude: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``count`` (LaTeX, Typst) pairs whose labels tex2typst made and Typst compiles."""
    rng = random.Random(seed)
    seen, pairs = set(exclude), []
    while len(pairs) < count:
        batch = invent(2 * (count - len(pairs)), rng, seen)
        pairs += [(tex, typst) for tex, typst in zip(batch, tex2typst(batch), strict=True)
                  if typst and compiles(typst)]
    return pairs[:count]


def example(tex: str, typst: str) -> dict:
    return {"prompt": [{"role": "user", "content": PROMPT + tex}],
            "completion": [{"role": "assistant", "content": typst}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=1000, help="training pairs")
    parser.add_argument("--val", type=int, default=60, help="validation pairs")
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--exclude", type=Path, action="append", default=[],
                        help="a JSONL file with a `tex` field whose formulas must never be generated "
                             "(for example ../shared/data/typst/real_math_dev.jsonl)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    held_out = {json.loads(line)["tex"].strip() for path in args.exclude for line in path.open() if line.strip()}
    try:
        train = generate(args.train, args.seed, held_out)
        val = generate(args.val, args.seed + 1, held_out | {tex for tex, _ in train})
    except LabelError as e:
        sys.exit(f"error: {e}")
    for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
        with (args.out / name).open("w", encoding="utf-8") as f:
            for tex, typst in rows:
                f.write(json.dumps(example(tex, typst), ensure_ascii=False) + "\n")
        print(f"wrote {len(rows)} pairs to {args.out / name}")


if __name__ == "__main__":
    main()
