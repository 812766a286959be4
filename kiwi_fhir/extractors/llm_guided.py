"""Guided decoding: a grammar that only lets the model copy and tag its input.

Sent as vLLM structured outputs (``{"grammar": ...}``, EBNF), it makes every
answer the input sentence, character for character, with well-formed span
tags inserted: an opening tag only before a token, a closing tag only after
one and only when a tag is open, at most ``depth`` open at once, all closed
at the end. So each tagged span covers at least one token and aligns by
construction, and a model cannot spin on tags until ``max_tokens``.

The language is regular, written right-linearly: one rule per (token
boundary, open depth), about ``2 * tokens * (depth + 1)`` rules. Tokens are
``segment.tokens``, so tags fall on the same boundaries the evaluator uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

from kiwi_fhir.segment import tokens

__all__ = ["Rules", "copy_grammar", "copy_rules"]

#: rule name -> alternatives: a literal (None: any opening tag, the rule
#: ``open``) and the rule that follows it (None: the end)
Rules = dict[str, list[tuple[str | None, str | None]]]
OPEN = "open"


def copy_rules(sentence: str, classes: Iterable[str], depth: int = 2) -> Rules:
    """The automaton as rules (rendered by :func:`copy_grammar`, walked by tests)."""
    spans = tokens(sentence)
    rules: Rules = {}
    if not spans:
        rules["root"] = [(" ", None), ("", None)]
        return rules
    gaps = [sentence[0 : spans[0][0]]]
    gaps += [sentence[a[1] : b[0]] for a, b in pairwise(spans)]
    gaps.append(sentence[spans[-1][1] :])
    n = len(spans)
    rules["root"] = [(" " + gaps[0], "b0_0"), (gaps[0], "b0_0")]
    for i, (s, e) in enumerate(spans):
        for d in range(depth + 1):
            before: list[tuple[str | None, str | None]] = [(sentence[s:e], f"a{i}_{d}")]
            if d < depth:
                before.insert(0, (None, f"b{i}_{d + 1}"))
            rules[f"b{i}_{d}"] = before
            after: list[tuple[str | None, str | None]] = []
            if d > 0:
                after.append(("</span>", f"a{i}_{d - 1}"))
            if i + 1 < n:
                after.append((gaps[i + 1], f"b{i + 1}_{d}"))
            elif d == 0:
                after.append((gaps[n], None))
            rules[f"a{i}_{d}"] = after
    rules[OPEN] = [(f'<span class="{c}">', None) for c in sorted(classes)]
    return rules


def copy_grammar(sentence: str, classes: Iterable[str], depth: int = 2) -> str:
    """``copy_rules`` as EBNF (the GBNF dialect vLLM's xgrammar backend reads)."""
    lines = []
    for name, alts in copy_rules(sentence, classes, depth).items():
        body = []
        for lit, nxt in alts:
            parts = [OPEN if lit is None else _lit(lit)] if lit != "" or nxt is None else []
            if nxt is not None:
                parts.append(nxt)
            body.append(" ".join(parts))
        lines.append(f"{name} ::= {' | '.join(body)}")
    return "\n".join(lines) + "\n"


def _lit(text: str) -> str:
    out = ['"']
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or c == "\x7f":
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)
