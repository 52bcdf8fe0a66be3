"""Split a long LaTeX text into pieces that fit the context, never inside math or an environment.

A piece may only end at a line end that lies outside every protected span: ``$...$``,
``$$...$$``, ``\\(...\\)``, ``\\[...\\]`` and ``\\begin{env}...\\end{env}`` (nested environments
count as one span). Paragraph breaks are preferred over line breaks. A protected span longer than
the budget stays whole: splitting it would hand the model half a formula. Math never holds a blank line
(TeX stops there with "Missing $ inserted"), so a math opener still open at one is a stray character (a price's
``$``), not the start of a span to the end of the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_TOKEN = re.compile(r"\\\\|\\\$|\$\$|\$|\\\(|\\\)|\\\[|\\\]|\\begin\{([^}]*)\}|\\end\{([^}]*)\}|%[^\n]*"
                    r"|\n[ \t]*\n")
PARAGRAPH = re.compile(r"\n[ \t]*\n")


CLOSERS = {"$": "$", "$$": "$$", "\\(": "\\)", "\\[": "\\]"}  # math opener -> its closer


class _SpanScanner:
    """Reads the tokens of ``_TOKEN`` in order and records each top-level protected span."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, int]] = []
        self.opener: str | None = None  # the math delimiter we are inside, if any
        self.envs: list[str] = []  # open environments, innermost last
        self.start = 0

    def feed(self, m: re.Match[str]) -> None:
        tok = m.group(0)
        if PARAGRAPH.fullmatch(tok):  # math cannot hold a blank line: an opener still open was a stray one
            self.opener = None
        elif self.opener is not None:  # inside math only its closer matters
            if tok == CLOSERS[self.opener]:
                self.opener = None
                self._close(m.end())
        elif m.group(1) is not None:
            if not self.envs:
                self.start = m.start()
            self.envs.append(m.group(1))
        elif m.group(2) is not None:
            if self.envs and self.envs[-1] == m.group(2):
                self.envs.pop()
                self._close(m.end())
        elif tok in CLOSERS and not self.envs:  # math inside an environment is part of its span already
            self.start = m.start()
            self.opener = tok

    def _close(self, end: int) -> None:
        if not self.envs:
            self.spans.append((self.start, end))

    def finish(self, length: int) -> list[tuple[int, int]]:
        if self.opener is not None or self.envs:
            self.spans.append((self.start, length))
        return self.spans


def protected_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of every math region and top-level environment (an unclosed one runs to the end)."""
    scanner = _SpanScanner()
    for m in _TOKEN.finditer(text):
        tok = m.group(0)
        if tok in ("\\\\", "\\$") or tok.startswith("%"):
            continue  # a line break command, an escaped dollar, a comment
        scanner.feed(m)
    return scanner.finish(len(text))


def break_points(text: str) -> list[tuple[int, bool]]:
    """(position after a newline, is it a paragraph break) for every newline outside protected spans."""
    spans = protected_spans(text)
    points = []
    span = 0
    for m in re.finditer(r"\n", text):
        pos = m.end()
        while span < len(spans) and spans[span][1] <= m.start():
            span += 1
        if span < len(spans) and spans[span][0] <= m.start() < spans[span][1]:
            continue
        paragraph = text[pos:pos + 1] == "\n" or text[max(0, m.start() - 1):m.start()] == "\n"
        points.append((pos, paragraph))
    return points


def split_text(text: str, limit: int, size: Callable[[str], int] = len) -> list[str]:
    """Consecutive pieces of ``text`` (joined they give it back exactly), each within ``limit`` by ``size``
    when a safe break allows it."""
    if size(text) <= limit:
        return [text]
    pieces = []
    begin = 0
    points = break_points(text)
    while size(text[begin:]) > limit:
        candidates = [(pos, para) for pos, para in points if begin < pos < len(text)]
        fitting = []
        for pos, para in candidates:  # pieces only grow along the text: stop at the first that is too long
            if size(text[begin:pos]) > limit:
                break
            fitting.append((pos, para))
        if fitting:
            paragraphs = [pos for pos, para in fitting if para]
            cut = paragraphs[-1] if paragraphs else fitting[-1][0]
        elif candidates:
            cut = candidates[0][0]  # one protected span or line is over the limit on its own: keep it whole
        else:
            break
        pieces.append(text[begin:cut])
        begin = cut
    pieces.append(text[begin:])
    return [p for p in pieces if p]
