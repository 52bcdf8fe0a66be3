"""Chunking never cuts inside math or an environment, and loses nothing (property test)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from lorakit.infer.chunking import split_text

words = st.text(alphabet="abcdefgh ,.", min_size=1, max_size=12)
math_atoms = st.sampled_from(["x", "y^2", "\\frac{a}{b}", "+", "=", "\\alpha", "_1", "\n", " ", "\\\\"])
math_body = st.lists(math_atoms, min_size=1, max_size=8).map("".join)


@st.composite
def block(draw):
    """(text, is it protected) for one piece of a line."""
    kind = draw(st.sampled_from(["plain", "inline", "paren", "display", "dollars", "env", "nested"]))
    body = draw(math_body)
    if kind == "plain":
        return draw(words), False
    if kind == "inline":  # no line-break command inside $...$, and never empty ("$$" opens display math)
        return f"${body.replace(chr(92) * 2, '') or 'x'}$", True
    if kind == "paren":
        return f"\\({body}\\)", True
    if kind == "display":
        return f"\\[\n{body}\n\\]", True
    if kind == "dollars":
        return f"$${body}$$", True
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
