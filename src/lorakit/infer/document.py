"""A LaTeX document converted to Typst: each math span by the adapter alone, the prose by simple rules.

The quickstart's adapter is trained on single formulas, so a whole document handed to it comes back with
the prose gone. Here a ``.tex`` text is cut into math spans (inline ``$...$`` and ``\\(...\\)``, display
``\\[...\\]``, ``$$...$$`` and the ``equation``/``align``/``gather``/``multline`` environments, starred or
not) and the prose between them. Every formula goes to the adapter on its own (all of them in one batch);
the prose is rewritten only where the rule is simple and certain (sections, emphasis, bold, lists, LaTeX's
escapes and quotes, comments); any other command is kept verbatim as raw text (so the output still compiles)
and counted, so nothing is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lorakit.infer.chunking import PARAGRAPH

DISPLAY_ENVIRONMENTS = ("equation", "align", "gather", "multline", "eqnarray", "displaymath")
_MATH_OPENER = re.compile(r"\\\$|%[^\n]*|\$\$|\$|\\\(|\\\[|\\begin\{(" + "|".join(DISPLAY_ENVIRONMENTS) + r")(\*?)\}")
_LABEL = re.compile(r"\\label\{([^}]*)\}")


@dataclass
class Span:
    text: str  # prose as written, or a formula without its delimiters
    math: bool = False
    display: bool = False
    label: str | None = None  # an equation's \label, carried over as a Typst label


def split_document(text: str) -> list[Span]:
    """The document as prose and math spans, in order; an unclosed formula stays prose."""
    spans: list[Span] = []
    prose_start = at = 0
    while (m := _MATH_OPENER.search(text, at)) is not None:
        token = m.group(0)
        if token == "\\$" or token.startswith("%"):  # an escaped dollar, a comment: prose
            at = m.end()
            continue
        closer = f"\\end{{{m.group(1)}{m.group(2)}}}" if m.group(1) else {"$": "$", "$$": "$$", "\\(": "\\)",
                                                                            "\\[": "\\]"}[token]
        end = _find_closer(text, closer, m.end(), in_paragraph=not m.group(1))
        if end < 0:  # never closed (a price's $): prose, and the text after it is read on
            at = m.end()
            continue
        if m.start() > prose_start:
            spans.append(Span(text[prose_start : m.start()]))
        body = text[m.end() : end]
        label = _LABEL.search(body)
        spans.append(Span(_LABEL.sub("", body).strip(), math=True, display=token not in ("$", "\\("),
                          label=label.group(1) if label else None))
        prose_start = at = end + len(closer)
    if prose_start < len(text):
        spans.append(Span(text[prose_start:]))
    return spans


def _find_closer(text: str, closer: str, start: int, in_paragraph: bool = False) -> int:
    """Where ``closer`` first appears after ``start``, an escaped dollar not counting; -1 if nowhere (or, with
    ``in_paragraph``, not before the next blank line: math never holds one, TeX stops there)."""
    at = start
    blank = PARAGRAPH.search(text, start) if in_paragraph else None
    while (found := text.find(closer, at)) >= 0:
        if blank is not None and found >= blank.start():
            return -1
        if closer.startswith("$") and found > 0 and text[found - 1] == "\\":
            at = found + 1
            continue
        return found
    return -1


HEADINGS = {"section": "=", "subsection": "==", "subsubsection": "===", "paragraph": "===="}
ESCAPES = {"\\%": "%", "\\&": "&", "\\#": "\\#", "\\_": "\\_", "\\$": "\\$", "\\{": "{", "\\}": "}",
           "``": "\u201c", "''": "\u201d", "\\ldots": "...", "\\dots": "...", "\\\\": "\\"}


@dataclass
class ProseRules:
    """LaTeX prose to Typst markup; ``kept`` counts the commands left verbatim (as raw text)."""

    kept: list[str] = field(default_factory=list)

    def convert(self, prose: str) -> str:
        lines = [self._line(line) for line in prose.split("\n")]
        return "\n".join(line for line in lines if line is not None)

    def _line(self, line: str) -> str | None:
        stripped = line.strip()
        if re.fullmatch(r"\\(begin|end)\{(itemize|enumerate)\}", stripped):
            return None  # the list's items carry it
        comment = re.search(r"(?<!\\)%", line)
        if comment:  # a LaTeX comment (to the line's end) stays a comment
            before = line[: comment.start()]
            return (self._line(before) or "" if before.strip() else before) + "//" + line[comment.end() :]
        heading = re.fullmatch(r"\\(section|subsection|subsubsection|paragraph)\*?\{(.*)\}", stripped)
        if heading:
            return f"{HEADINGS[heading.group(1)]} {self._inline(heading.group(2))}"
        item = re.fullmatch(r"(\s*)\\item\s*(.*)", line)
        if item:
            return f"{item.group(1)}- {self._inline(item.group(2))}"
        return self._inline(line)

    def _inline(self, text: str) -> str:
        out, at = [], 0
        for m in re.finditer(r"\\(emph|textit|textbf)\{([^{}]*)\}|\\[a-zA-Z]+\*?(\[[^\]]*\])?(\{[^{}]*\})*|"
                             r"\\[%&#_${}\\]|``|''|[*_#@<`$]", text):
            out.append(text[at : m.start()])
            out.append(self._token(m))
            at = m.end()
        out.append(text[at:])
        return "".join(out)

    def _token(self, m: re.Match[str]) -> str:
        token = m.group(0)
        if m.group(1) in ("emph", "textit"):
            return f"_{self._inline(m.group(2))}_"
        if m.group(1) == "textbf":
            return f"*{self._inline(m.group(2))}*"
        if token in ESCAPES:
            return ESCAPES[token]
        if token in "*_#@<`$":
            return "\\" + token  # markup characters in Typst, plain ones in LaTeX prose (a stray $ too)
        self.kept.append(token)
        return "`" + token.replace("`", "'") + "`"


@dataclass
class DocumentResult:
    typst: str
    formulas: int
    kept: list[str]  # LaTeX commands of the prose left verbatim

    def summary(self) -> str:
        kept = f"; {len(self.kept)} LaTeX command(s) kept verbatim ({', '.join(sorted(set(self.kept))[:5])})" \
            if self.kept else ""
        return f"{self.formulas} formula(s) converted by the adapter, the prose by rules{kept}"


def convert_document(text: str, convert_formulas: Callable[[Sequence[str]], list[str]]) -> DocumentResult:
    """``text`` in Typst: its formulas through ``convert_formulas`` (all at once), its prose by rules."""
    spans = split_document(text)
    formulas = [s.text for s in spans if s.math and s.text]
    answers = iter(convert_formulas(formulas) if formulas else [])
    rules = ProseRules()
    out = []
    for span in spans:
        if not span.math:
            out.append(rules.convert(span.text))
            continue
        answer = next(answers) if span.text else ""
        label = ""
        if span.label and re.fullmatch(r"[\w:.-]+", span.label):
            label = f" <{span.label}>"
        elif span.label:  # not a name Typst takes as a label
            rules.kept.append(f"\\label{{{span.label}}}")
        out.append(f"$ {answer} ${label}" if span.display else f"${answer}$")
    return DocumentResult("".join(out), len(formulas), rules.kept)
