"""A LaTeX document in, a Typst document out: formulas by the adapter one by one, prose by rules, nothing lost."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lorakit.infer.document import convert_document, split_document

NOTES = Path(__file__).parents[3] / "examples" / "typst" / "notes.tex"


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9]+", text)


def prose_words(span_text: str) -> list[str]:
    """The words a reader sees in LaTeX prose: command and list-environment names are markup."""
    return words(re.sub(r"\\(begin|end)\{(itemize|enumerate)\}|\\(section|emph|textbf|textit|item)\b", " ",
                        span_text))


def is_subsequence(needles: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


def test_the_example_document_keeps_every_prose_word_and_every_formula():
    text = NOTES.read_text()
    spans = split_document(text)
    formulas = [s.text for s in spans if s.math]
    assert formulas == ["z = a + bi", "a", "b", "(3+5i) + (2-3i) = 5 + 2i", "|z| = \\sqrt{a^2 + b^2}", "\\bar{z}"]
    assert [s.display for s in spans if s.math] == [False, False, False, True, True, False]
    seen = []
    result = convert_document(text, lambda fs: seen.extend(fs) or [f"F{i}" for i in range(len(fs))])
    assert seen == formulas  # each formula once, alone, in order
    out = result.typst
    assert [m for m in re.findall(r"F\d+", out)] == [f"F{i}" for i in range(len(formulas))]
    prose = [w for s in spans if not s.math for w in prose_words(s.text)]
    assert is_subsequence(prose, words(out)), out
    assert "= Complex numbers" in out and "_real part_" in out and "*never negative*" in out
    assert "$ F3 $ <eq:sum>" in out and "- $F5$" in out and "100%" in out
    assert result.kept == ["\\cite{ahlfors}"] and "`\\cite{ahlfors}`" in out
    assert "1 LaTeX command(s) kept verbatim" in result.summary()


def test_the_example_document_compiles_as_typst():
    typst = pytest.importorskip("typst")
    result = convert_document(NOTES.read_text(), lambda fs: ["x + 1"] * len(fs))  # any formula that compiles
    typst.compile(result.typst.encode(), format="svg")  # raises on any markup error


@pytest.mark.parametrize(("latex", "formula", "display"), [
    ("cost \\$5, then $x$", "x", False),  # an escaped dollar is prose
    ("$$ y = 2 $$", "y = 2", True),
    ("\\begin{align*} a &= b \\\\ c &= d \\end{align*}", "a &= b \\\\ c &= d", True),
    ("\\begin{gather} g \\end{gather}", "g", True),
    ("% a comment with $ in it\n$z$", "z", False),
    ("a price of $5.\n\nThen $z$ holds.", "z", False),  # math never holds a blank line: that $ was a stray one
    ("$$ 5\n  \n then $$z$$", "z", True),
])
def test_math_spans_of_every_kind(latex, formula, display):
    math = [s for s in split_document(latex) if s.math]
    assert [(s.text, s.display) for s in math] == [(formula, display)]


def test_an_unclosed_formula_stays_prose_and_compiles():
    typst = pytest.importorskip("typst")
    result = convert_document("a price of $5 and 10\\% off, a_b * c % a note\n% a whole line", lambda fs: [])
    assert result.formulas == 0
    assert result.typst == "a price of \\$5 and 10% off, a\\_b \\* c // a note\n// a whole line"
    typst.compile(result.typst.encode(), format="svg")
