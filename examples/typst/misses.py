"""Which LaTeX constructs the adapter misses, from a scored evaluation.

    lorakit eval typst-v001 --data ../shared/data/typst/real_math_dev.jsonl --metrics exact,typst
    python examples/typst/misses.py typst-v001 --data ../shared/data/typst/real_math_dev.jsonl

For each construct (every LaTeX command the inputs use, and sub/superscripts, primes, alignment and line
breaks), it prints the share of cases that contain it, how many of those the adapter missed (its answer is
not the label exactly), the miss rate, and how many of those misses remain once spaces are ignored (the
rest are tex2typst's spacing conventions, not structure). The construct with most misses comes first.
The answers are the ones ``lorakit eval`` saved in the run's ``eval/<data stem>.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

SYMBOLS = {"^": "superscript ^", "_": "subscript _", "'": "prime '", "&": "alignment &", "\\\\": "line break \\\\"}
_CONSTRUCT = re.compile(r"\\begin\{[a-zA-Z*]+\}|\\[a-zA-Z]+|\\\\|\\[,;:! ]|[\^_'&]")


def constructs(tex: str) -> set[str]:
    """The constructs of one LaTeX formula: its commands (``\\frac``, spacing ``\\,``) and SYMBOLS."""
    return {SYMBOLS.get(token, token) for token in _CONSTRUCT.findall(tex) if token != "\\end"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def miss_table(inputs: list[str], references: list[str], answers: list[str], top: int) -> str:
    cases, misses, structural = Counter(), Counter(), Counter()
    for tex, reference, answer in zip(inputs, references, answers, strict=True):
        found = constructs(tex)
        cases.update(found)
        if answer != reference:
            misses.update(found)
            if answer.replace(" ", "") != reference.replace(" ", ""):
                structural.update(found)
    total = len(inputs)
    missed = sum(a != r for a, r in zip(answers, references, strict=True))
    spaced = sum(a != r and a.replace(" ", "") == r.replace(" ", "") for a, r in zip(answers, references,
                                                                                    strict=True))
    lines = [f"{total} cases, {missed} missed ({missed / total:.1%}); {spaced} of the misses differ only in spaces",
             "", "| construct | cases | share of cases | misses | miss rate | misses beyond spaces |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, count in sorted(misses.items(), key=lambda item: (-item[1], item[0]))[:top]:
        lines.append(f"| `{name}` | {cases[name]} | {cases[name] / total:.1%} | {count} | "
                     f"{count / cases[name]:.0%} | {structural[name]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="A run folder, or a run name under --runs-dir.")
    parser.add_argument("--data", type=Path, required=True, help="The file the run was evaluated on.")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--input-field", default="tex")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    folder = Path(args.run) if Path(args.run).is_dir() else args.runs_dir / args.run
    scored = folder / "eval" / f"{args.data.stem}.jsonl"
    if not scored.is_file():
        sys.exit(f"{scored}: no saved answers; run `lorakit eval {args.run} --data {args.data}` first")
    answers = read_jsonl(scored)
    rows = read_jsonl(args.data)
    if len(rows) != len(answers):
        sys.exit(f"{scored}: {len(answers)} answers for the {len(rows)} rows of {args.data} (evaluated with "
                 "--limit?); evaluate the whole file")
    print(miss_table([r[args.input_field] for r in rows], [a["reference"] for a in answers],
                     [a["adapter"] for a in answers], args.top))


if __name__ == "__main__":
    main()
