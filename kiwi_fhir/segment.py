"""Sentence and word segmentation that never moves a character offset.

Every span is a ``(start, end)`` index pair into the text we were given --
nothing is normalised or rewritten -- so gold brat offsets and model output
line up with no mapping step.

Why not a general-purpose splitter: clinical notes are built from lines
(section headers, numbered lists, vitals) far more than from prose, and they
are dense with period-bearing abbreviations (``p.o.``, ``b.i.d.``, ``q.6h.``)
and decimals. General splitters cut gold mentions in two at these points; see
``docs/segmentation.md`` for the measured comparison. Pure ``re`` and linear
scans: a long note must stay well under a second, and a pathological input
(one 200 KB line, megabytes of capitals) must not trigger regex backtracking.
"""

from __future__ import annotations

import re

__all__ = ["sentences", "tokens"]

Span = tuple[int, int]

# Line separators as str.splitlines sees them; "\r\n" counts as one break.
_LB = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_LINE_RE = re.compile(f"[^{_LB}]+")
_BREAK_RE = re.compile(f"\r\n|[{_LB}]")
_TERMINAL = ".!?:"

# Upper-case section header ending in a colon (``PAST MEDICAL HISTORY:``,
# ``HEENT :``). Every repeat is bounded so that a long run of capitals
# without a colon costs linear time, not quadratic.
_HEADER_RE = re.compile(
    r"(?<!\S)[A-Z][A-Z0-9&/()'\-]{0,30}(?:[ \t]{1,3}[A-Z0-9&/()'\-]{1,30}){0,7}[ \t]{0,3}:(?=\s|$)"
)
_LIST_MARKER_RE = re.compile(r"\d{1,2}[.)](?!\S)")
_FIRST_ITEM_RE = re.compile(r"1[.)](?!\S)")
_END_RE = re.compile(r"(?<![.!?])[.!?]++[)\]\"'\u201d\u2019]*+(?=\s)")
_WORD_RE = re.compile(r"[\w']+")
_INTERNAL_ABBREV_RE = re.compile(r"[A-Za-z]{1,2}(?:\.[A-Za-z0-9]{1,3})+|(?:[A-Z]\.){1,3}[A-Z]")

# A period after these is never a sentence end: what follows is a name, a
# number or the rest of a comparison.
_TITLES = frozenset({"dr", "mr", "mrs", "ms", "prof", "st", "vs", "v", "approx", "cf", "fig"})
# Dose and unit abbreviations usually sit mid-sentence ("40 mg p.o. b.i.d.
# Coumadin 5 mg ..."); they end one only when a clause opener follows.
_UNITS = frozenset(
    {"mg", "mcg", "ml", "cc", "kg", "gm", "cm", "mm", "tab", "tabs", "cap", "caps", "hr", "hrs",
     "min", "mins", "sec", "wk", "wks", "mo", "mos", "yr", "yrs", "max", "sig", "disp", "q", "qd"}
)  # fmt: skip
_OPENERS = frozenset(
    {"the", "he", "she", "his", "her", "they", "their", "we", "i", "it", "this", "there", "these",
     "patient", "pt", "she's", "he's", "if", "on", "at", "in", "after", "she'll", "he'll"}
)  # fmt: skip

# Tokens, first alternative that matches wins.
_TOKEN_RE = re.compile(
    r"""
    (?<![\w.])(?:[A-Za-z]{1,2}(?:\.[a-z0-9]{1,3})++|[A-Z](?:\.[A-Z])+)(?!\w)  # b.i.d q.6h U.S
  | (?<!\w)(?:Dr|Drs|Mrs|Mr|Ms|Prof|St|Jr|Sr|vs|approx)\.                   # Dr. vs. approx.
  | (?:(?<![\w)])\+(?=\d))?                                               # +5/5
    \w+(?:(?:(?<=\d)[.:/](?=\d)|(?<=\d),(?=\d{3}(?!\d))|[-'\u2019](?=\w))\w+)*  # 0.35 D-dimer
  | \S                                                                    # any other mark
    """,
    re.VERBOSE,
)


def sentences(text: str) -> list[Span]:
    """Sentence spans: ordered, disjoint, stripped, covering all non-space text.

    A section header begins the sentence it introduces rather than standing
    alone: annotators tag header words (``NECK``, ``PULSE``) as mentions
    whose related modifier follows the colon, and a lone header would cut
    that relation in two. Every sentence starts right after whitespace, so
    tokenising sentence by sentence gives exactly the whole-note tokens.
    """
    out: list[Span] = []
    for bs, be in _blocks(text):
        starts = _block_breaks(text, bs, be)
        for s, e in zip(starts, [*starts[1:], be], strict=True):
            span = _strip(text, s, e)
            if span is not None:
                out.append(span)
    return out


def tokens(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Word tokens of ``text[start:end]``, with offsets into ``text``.

    The window is tokenised as if it were the whole string, so what lies
    outside it cannot change where its tokens fall. An abbreviation keeps
    its inner periods (``q.6h``, ``b.i.d``) but not its last one: the gold
    notes annotate both ``b.i.d`` and ``b.i.d.``, and only a separate final
    period lets both end on a token boundary. Titles (``Dr.``) keep theirs,
    as no mention or sentence ends there.
    """
    start, end, _ = slice(start, end).indices(len(text))
    if start >= end:
        return []
    return [(m.start() + start, m.end() + start) for m in _TOKEN_RE.finditer(text[start:end])]


def _strip(text: str, s: int, e: int) -> Span | None:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return (s, e) if s < e else None


def _blocks(text: str) -> list[Span]:
    """Lines, with a wrapped line joined back to the one it continues.

    A line continues the previous one when it starts lower-case and the
    previous one has no terminal punctuation, and no blank line separates
    them. A bare list marker (``1.``) on its own line joins the next line.
    """
    blocks: list[list[int]] = []
    for m in _LINE_RE.finditer(text):
        span = _strip(text, m.start(), m.end())
        if span is None:
            continue
        s, e = span
        if blocks:
            prev = blocks[-1]
            gap = len(_BREAK_RE.findall(text, prev[1], s))
            bare_marker = _LIST_MARKER_RE.fullmatch(text, prev[0], prev[1]) is not None
            wrapped = text[s].islower() and text[prev[1] - 1] not in _TERMINAL
            if gap <= 1 and (wrapped or bare_marker):
                prev[1] = e
                continue
        blocks.append([s, e])
    return [(s, e) for s, e in blocks]


def _block_breaks(text: str, bs: int, be: int) -> list[int]:
    """Sorted sentence starts inside one block (the first is ``bs``)."""
    starts = {bs}
    list_ok = {bs}  # where a list marker is at a sentence start, not a number
    for m in _HEADER_RE.finditer(text, bs, be):
        starts.add(m.start())
        after = _skip_space(text, m.end(), be)
        if _FIRST_ITEM_RE.match(text, after, be):
            starts.add(after)  # "DIAGNOSES: 1. Sepsis": header, then item (not "PULSE: 76.")
        list_ok.add(after)
    for m in _END_RE.finditer(text, bs, be):
        nxt = _skip_space(text, m.end(), be)
        if nxt >= be:
            break
        w = m.start()
        while w > bs and not text[w - 1].isspace():
            w -= 1
        if _ends_sentence(text, w, m.start(), m.group(), nxt, be, w in list_ok or w in starts):
            starts.add(nxt)
            list_ok.add(nxt)
    return sorted(starts)


def _ends_sentence(
    text: str, w: int, p: int, punct: str, nxt: int, be: int, at_start: bool
) -> bool:
    """Whether the mark ``punct`` after the word ``text[w:p]`` ends a sentence."""
    c = text[nxt]
    if punct[0] != "." or punct.startswith(".."):
        return not c.islower()
    word = text[w:p].lstrip("([{\"'")
    low = word.lower()
    if at_start and _LIST_MARKER_RE.fullmatch(text, w, p + 1):
        return False  # "1. Disseminated ..." is an item, not a sentence "1."
    if low in _TITLES:
        return False
    if low in _UNITS or _INTERNAL_ABBREV_RE.fullmatch(word):
        m = _WORD_RE.match(text, nxt, be)
        return m is not None and c.isupper() and m.group().lower() in _OPENERS
    if c.isupper():
        return True
    if c.isdigit():  # "... diet. 2. History": an inline list item
        return _LIST_MARKER_RE.match(text, nxt, be) is not None
    if c in "([\"'":  # '. (Medical ...' and '. "The ...'
        after = _skip_space(text, nxt + 1, be)
        return after < be and text[after].isupper()
    return False


def _skip_space(text: str, i: int, end: int) -> int:
    while i < end and text[i].isspace():
        i += 1
    return i
