"""Chunking never cuts inside math or an environment, and loses nothing (property test)."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from lorakit.infer.chunking import protected_spans, split_text

words = st.text(alphabet="abcdefgh ,.", min_size=1, max_size=12)
math_atoms = st.sampled_from(["x", "y^2", "\\frac{a}{b}", "+", "=", "\\alpha", "_1", "\n", " ", "\\\\"])
math_body = st.lists(math_atoms, min_size=1, max_size=8).map("".join)


def no_blank_line(math: str) -> str:
    """Math as TeX takes it: never a blank line inside (TeX stops there)."""
    while (blank := re.search(r"\n[ \t]*\n", math)) is not None:
        math = math[: blank.start()] + "\n" + math[blank.end() :]
    return math


@st.composite
def block(draw):
    """(text, is it protected) for one piece of a line."""
    kind = draw(st.sampled_from(["plain", "inline", "paren", "display", "dollars", "env", "nested"]))
    body = draw(math_body)
    if kind == "plain":
        return draw(words), False
    if kind == "inline":  # no line-break command inside $...$, and never empty ("$$" opens display math)
        return no_blank_line(f"${body.replace(chr(92) * 2, '') or 'x'}$"), True
    if kind == "paren":
        return no_blank_line(f"\\({body}\\)"), True
    if kind == "display":
        return no_blank_line(f"\\[\n{body}\n\\]"), True
    if kind == "dollars":
        return no_blank_line(f"$${body}$$"), True
    if kind == "env":
        return f"\\begin{{align}}\n{body}\n\\end{{align}}", True
    inner = draw(math_body)
    return f"\\begin{{equation}}\n\\begin{{cases}}\n{inner}\n\\end{{cases}}\n{body}\n\\end{{equation}}", True


@st.composite
def document(draw):
    """A LaTeX-ish document and the [start, end) spans no piece may be cut inside."""
    text, spans = "", []
    for _ in range(draw(st.integers(1, 12))):
        for i, (piece, protected) in enumerate(draw(st.lists(block(), min_size=1, max_size=4))):
            if i:
                text += " "
            if protected:
                spans.append((len(text), len(text) + len(piece)))
            text += piece
        text += draw(st.sampled_from(["\n", "\n\n", "\n\n\n"]))
    return text, spans


@settings(max_examples=200, deadline=None)
@given(document(), st.integers(min_value=1, max_value=120))
def test_pieces_rejoin_exactly_and_never_cut_inside_math(doc, limit):
    text, spans = doc
    pieces = split_text(text, limit)
    assert "".join(pieces) == text
    cut = 0
    for piece in pieces[:-1]:
        cut += len(piece)
        assert not any(start < cut < end for start, end in spans), (cut, text)
        assert text[cut - 1] == "\n"  # pieces end at line ends
    for piece in pieces:
        # over the limit only when no safe cut exists inside it
        if len(piece) > limit:
            inner = [i + 1 for i, ch in enumerate(piece[:-1]) if ch == "\n"]
            offset = text.index(piece) if text.count(piece) == 1 else None
            if offset is not None:
                assert all(any(s < offset + i < e for s, e in spans) or i > limit for i in inner)


def test_paragraph_breaks_are_preferred_to_line_breaks():
    text = "aa\nbb\n\ncc\ndd\n"
    assert split_text(text, 9) == ["aa\nbb\n\n", "cc\ndd\n"]


def test_short_text_is_one_piece():
    assert split_text("x = $y$\n", 100) == ["x = $y$\n"]


def test_a_stray_dollar_is_not_math_to_the_end_of_the_text():
    text = "It costs $5 a month.\n\nThen $x$ holds.\n" + "More prose here.\n" * 20
    assert protected_spans(text) == [(text.index("$x$"), text.index("$x$") + 3)]
    pieces = split_text(text, 60)
    assert "".join(pieces) == text and max(map(len, pieces)) <= 60  # cut as prose, not kept whole as math


def test_math_over_lines_stays_one_span_and_an_environment_may_hold_a_blank_line():
    text = "a $x +\ny$ b\n\\begin{itemize}\n\\item one\n\n\\item $z$\n\\end{itemize}\n"
    assert protected_spans(text) == [(2, 9), (text.index("\\begin"), text.index("\\end") + len("\\end{itemize}"))]
