"""Task metrics on (prediction, reference) pairs: exact match, chrF, and whether Typst math compiles."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence

# What each generated metric needs beyond lorakit's own dependencies (the `eval` extra has both).
METRIC_PACKAGES = {"chrf": "sacrebleu", "typst": "typst"}


def missing_packages(metrics: Sequence[str]) -> list[str]:
    """The metrics among ``metrics`` whose package is not installed."""
    return [m for m in metrics if m in METRIC_PACKAGES and importlib.util.find_spec(METRIC_PACKAGES[m]) is None]


def normalise(text: str) -> str:
    """Whitespace-insensitive form: runs of spaces and newlines become one space, ends trimmed."""
    return " ".join(text.split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference once whitespace is normalised."""
    pairs = list(zip(predictions, references, strict=True))
    return sum(normalise(p) == normalise(r) for p, r in pairs) / max(1, len(pairs))


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu, 0-100)."""
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score)


def typst_math_compiles(source: str) -> bool:
    """True when ``source`` compiles as a Typst math block (``$ ... $``) with the typst package."""
    import typst

    if not source.strip():
        return False
    try:
        typst.compile(f"$ {source} $".encode(), format="svg")
    except Exception:  # typst raises TypstError for any compile error; all of them mean "does not compile"
        return False
    return True


def typst_compile_rate(predictions: Sequence[str]) -> float:
    return sum(typst_math_compiles(p) for p in predictions) / max(1, len(predictions))


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else math.inf
