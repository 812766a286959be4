"""Turn a model's ``<span class=...>`` answer back into offsets of the note.

A generative model does not point at characters: it rewrites the sentence
with tags in it, and may change whitespace, case or HTML-escape ``&``, leave
a tag open, close one twice, nest tags, invent a class, or paraphrase. Every
span we report must still be ``note[start:end]``, so each tagged span is
*aligned* to the input sentence, and what cannot be aligned is dropped and
counted (:class:`ParseStats`), never guessed.

Alignment works on non-space characters (case-folded): whitespace changes
cost nothing, and a span counts only if all its characters are matched to
one contiguous run of the input. Failing that, the span's own text is looked
up in the input (nearest occurrence to where it was expected), which keeps
entities the model copied correctly inside a sentence it otherwise reworded.
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection
from dataclasses import dataclass, fields
from difflib import SequenceMatcher

__all__ = ["ParseStats", "TaggedSpan", "parse_tagged"]

_TAG_RE = re.compile(
    r"<\s*span\b(?P<attrs>[^<>]*)>|<\s*/\s*span\s*>|</?\s*[A-Za-z][^<>]{0,200}>", re.I
)
_CLASS_RE = re.compile(r"""class\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.I)
# The model running on into a new prompt, or writing its stop marker badly.
_TAIL_RE = re.compile(r"<\s*/?\s*EOS\b|\n\s*###")
_TRIM = " \t\r\n,;:"


@dataclass(frozen=True)
class TaggedSpan:
    label: str
    start: int
    end: int


@dataclass
class ParseStats:
    """Counts of what the parser kept and dropped (added up per extractor)."""

    spans: int = 0  # aligned and kept
    unclosed: int = 0  # open tags with no close: closed at the next tag, kept if aligned
    stray_close: int = 0  # close tags with nothing open
    unknown_class: int = 0  # class not in the allowed set: dropped
    unaligned: int = 0  # tagged text not found in the input: dropped
    empty: int = 0  # tags around nothing but spaces or punctuation: dropped
    rewritten: int = 0  # outputs whose text differs from the input beyond whitespace/case

    def add(self, other: ParseStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


def _fold(c: str) -> str:
    low = c.lower()
    return low if len(low) == 1 else c


def _classes(attrs: str) -> list[str]:
    m = _CLASS_RE.search(attrs)
    if m is None:
        return []
    return (m.group(1) or m.group(2) or m.group(3) or "").split()


def _strip_markup(output: str) -> tuple[str, list[tuple[str | None, int, int]], ParseStats]:
    """Plain text of ``output`` and the raw tagged spans (class, start, end) in it."""
    stats = ParseStats()
    tail = _TAIL_RE.search(output)
    if tail is not None:
        output = output[: tail.start()]
    plain: list[str] = []
    n = 0
    opened: list[tuple[list[str], int]] = []
    raw: list[tuple[str | None, int, int]] = []
    boundaries: list[int] = []  # plain positions of every span tag, for unclosed ones
    pos = 0
    for m in _TAG_RE.finditer(output):
        piece = html.unescape(output[pos : m.start()])
        plain.append(piece)
        n += len(piece)
        pos = m.end()
        tag = m.group(0)
        if m.group("attrs") is not None:
            opened.append((_classes(m.group("attrs")), n))
            boundaries.append(n)
        elif re.fullmatch(r"<\s*/\s*span\s*>", tag, re.I):
            boundaries.append(n)
            if not opened:
                stats.stray_close += 1
                continue
            classes, start = opened.pop()
            raw.append((" ".join(classes) or None, start, n))
        # any other tag (<b>, </div>, <br/>) is markup noise: removed, not text
    piece = html.unescape(output[pos:])
    plain.append(piece)
    n += len(piece)
    for classes, start in opened:
        stats.unclosed += 1
        end = next((b for b in boundaries if b > start), n)
        raw.append((" ".join(classes) or None, start, end))
    return "".join(plain), raw, stats


def _dense(text: str) -> tuple[str, list[int]]:
    """Non-space characters of ``text``, case-folded, with their positions."""
    keep = [i for i, c in enumerate(text) if not c.isspace()]
    return "".join(_fold(text[i]) for i in keep), keep


def parse_tagged(
    source: str, output: str, allowed: Collection[str], *, ignore: Collection[str] = ()
) -> tuple[list[TaggedSpan], ParseStats]:
    """Spans of ``output`` as ``(label, start, end)`` offsets into ``source``.

    ``allowed`` are the classes to keep; a tag carrying several classes keeps
    its first allowed one. ``ignore`` are classes expected but not wanted
    (the entity an RE prompt marked): neither kept nor counted as unknown.
    Results are sorted and free of duplicates.
    """
    plain, raw, stats = _strip_markup(output)
    src_d, src_pos = _dense(source)
    out_d, out_pos = _dense(plain)
    # out dense index -> src dense index, for the characters the model copied
    mapping: dict[int, int] = {}
    if out_d == src_d:
        mapping = {i: i for i in range(len(out_d))}
    else:
        stats.rewritten += 1
        sm = SequenceMatcher(None, out_d, src_d, autojunk=False)
        for a, b, size in sm.get_matching_blocks():
            for k in range(size):
                mapping[a + k] = b + k
    # plain position -> dense index of the first non-space char at or after it
    first_at = [0] * (len(plain) + 1)
    j = len(out_pos)
    for p in range(len(plain), -1, -1):
        while j > 0 and out_pos[j - 1] >= p:
            j -= 1
        first_at[p] = j
    found: set[TaggedSpan] = set()
    for cls, start, end in raw:
        names = cls.split() if cls else []
        label = next((c for c in names if c in allowed), None)
        if label is None:
            if not any(c in ignore for c in names):
                stats.unknown_class += 1
            continue
        a, b = first_at[start], first_at[end]  # dense range [a, b)
        if a >= b:
            stats.empty += 1
            continue
        span = _align(a, b, out_d, src_d, mapping)
        if span is None:
            stats.unaligned += 1
            continue
        s, e = src_pos[span[0]], src_pos[span[1] - 1] + 1
        while s < e and source[s] in _TRIM:
            s += 1
        while e > s and source[e - 1] in _TRIM:
            e -= 1
        e = _drop_final_period(source, s, e)
        if s == e:
            stats.empty += 1
            continue
        found.add(TaggedSpan(label, s, e))
    stats.spans = len(found)
    return sorted(found, key=lambda t: (t.start, t.end, t.label)), stats


def _align(
    a: int, b: int, out_d: str, src_d: str, mapping: dict[int, int]
) -> tuple[int, int] | None:
    """Dense source range for dense output range ``[a, b)`` (non-empty), or None."""
    hits = [mapping.get(k) for k in range(a, b)]
    first = hits[0]
    if first is not None and all(h == first + k for k, h in enumerate(hits)):
        return first, first + (b - a)
    # Not copied verbatim in place: look the span's text up in the input,
    # taking the occurrence nearest to where the alignment expected it.
    needle = out_d[a:b]
    near = next((h for h in hits if h is not None), None)
    if near is None:
        before = [mapping[k] for k in mapping if k < a]
        near = max(before) + 1 if before else 0
    best: int | None = None
    i = src_d.find(needle)
    while i != -1:
        if best is None or abs(i - near) < abs(best - near):
            best = i
        i = src_d.find(needle, i + 1)
    if best is None or (len(needle) < 3 and src_d.count(needle) > 1):
        return None  # too short to place by search alone
    return best, best + len(needle)


def _drop_final_period(text: str, s: int, e: int) -> int:
    """End without a sentence period the model swept in (``fever.``), keeping
    an abbreviation's own (``b.i.d.``, ``p.o.``)."""
    if e - s < 2 or text[e - 1] != ".":
        return e
    w = e - 1
    while w > s and not text[w - 1].isspace():
        w -= 1
    return e if "." in text[w : e - 1] else e - 1
