"""Drafts from the text itself (prompt lookup): the tokens that followed the last place the answer's last few
tokens occurred, in its prompt or earlier in the answer.

A conversion copies much of its input (names, numbers, operators), and an answer that loops repeats itself; in
both, what followed the same tokens before is a good guess of what comes next. In an evaluation the reference
is looked up too (put between the prompt and the answer: an answer that left it a token ago often goes on as it
does). The lane decoder checks such a
guess in the step it decodes anyway (``lanes``): the guess only decides how many tokens a step can keep, never
which.
"""

from __future__ import annotations

from collections.abc import Sequence

LONGEST_MATCH = 3  # tokens of the answer's end looked up, tried longest first


def lookup_draft(context: Sequence[int], most: int) -> list[int]:
    """Up to ``most`` tokens that followed the latest earlier occurrence of ``context``'s last tokens (3, else 2,
    else 1 of them); empty when they occur nowhere before."""
    if most <= 0:
        return []
    for size in range(min(LONGEST_MATCH, len(context) - 1), 0, -1):
        tail = list(context[-size:])
        for start in range(len(context) - size - 1, -1, -1):
            if context[start] == tail[0] and list(context[start : start + size]) == tail:
                return list(context[start + size : start + size + most])
    return []
