"""Scoring predicted extractions against gold ones, as the Kiwi paper does.

Three levels -- main entities (``ner``), modifiers (``modifier``) and
``hasAttr`` relations (``re``) -- each scored by micro-averaged P/R/F1 over
all documents under two matching modes:

* **exact**: same label and same ``(start, end)``. For a discontinuous brat
  span that is its overall extent, not its fragments.
* **relaxed**: same label and at least one shared character. Matching is
  *one-to-one*, so a long prediction spanning two gold mentions earns one
  TP, never two. Every exact pair is fixed first (an exact hit is never
  traded away, which also keeps relaxed TP >= exact TP); the rest are
  paired by a maximum-cardinality bipartite matching on the overlap graph
  (Kuhn's augmenting paths, each gold item trying its candidates largest
  overlap first). Maximum rather than greedy because greedy largest-overlap
  pairing can strand a prediction whose only partner it took, under-counting.

A relation is keyed by its two mentions' ``(label, start, end)``, so mention
ids (which never agree between gold and prediction) play no part. Exact: the
key equals a gold relation's key. Relaxed: both ends overlap-match the gold
relation's ends (same labels); relations are matched one-to-one the same way
as mentions, on their own -- not through the ``ner`` level's pairing, so a
predicted entity overlapping two gold entities may match a relation of each.
Relations are scored whether or not the guideline allows their type pair.
Duplicates (two identical mentions or relations) are two predictions: the
second finds no unused gold item and is a false positive.

Precision, recall and F1 are 0.0 when their denominator is 0 -- including
F1 when there is nothing to find and nothing was predicted -- so a metric
is never NaN and JSON stays valid. The 95% CI is a percentile bootstrap
over documents (pairing kept: one set of resampled documents for all
metrics), reproducible from the seed.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from kiwi_fhir.brat import ParseReport, parse_ann, read_text
from kiwi_fhir.core import Document, Extraction, Mention
from kiwi_fhir.errors import InputError
from kiwi_fhir.schema import ENTITY_TYPES, MODIFIER_TYPES
from kiwi_fhir.source import Source

Span = tuple[str, int, int]  # (label, start, end)
RelKey = tuple[Span, Span]  # (entity, modifier)
K = TypeVar("K", bound=Hashable)

LEVELS = ("ner", "modifier", "re")
MODES = ("exact", "relaxed")
LABELS = (*ENTITY_TYPES, *MODIFIER_TYPES)
_SLOTS = [*((lv, md) for lv in LEVELS for md in MODES), *LABELS]


def mention_keys(mentions: Sequence[Mention]) -> list[Span]:
    """Mentions as sorted ``(label, start, end)`` keys; sorting makes matching order-free."""
    return sorted((m.label, m.start, m.end) for m in mentions)


def relation_pairs(extraction: Extraction) -> list[RelKey]:
    """Relations as sorted (entity key, modifier key) pairs, free of mention ids."""
    key = {m.id: (m.label, m.start, m.end) for m in (*extraction.entities, *extraction.modifiers)}
    return sorted((key[r.entity_id], key[r.modifier_id]) for r in extraction.relations)


def _shared(a: Span, b: Span) -> int:
    """Characters two same-label spans share (0 = no relaxed match)."""
    return max(0, min(a[2], b[2]) - max(a[1], b[1])) if a[0] == b[0] else 0


def _rel_shared(a: RelKey, b: RelKey) -> int:
    ent, mod = _shared(a[0], b[0]), _shared(a[1], b[1])
    return ent + mod if ent and mod else 0


def _max_matching(adj: list[list[int]]) -> int:
    """Size of a maximum bipartite matching (Kuhn's augmenting paths, iterative).

    ``adj[i]`` lists the right nodes left node ``i`` may take, preferred first.
    Iterative so a pathological document cannot hit the recursion limit.
    """
    match_l: dict[int, int] = {}
    match_r: dict[int, int] = {}
    for root in range(len(adj)):
        seen: set[int] = set()
        parent: dict[int, int] = {}
        stack = [(root, iter(adj[root]))]
        found: int | None = None
        while stack and found is None:
            u, candidates = stack[-1]
            for v in candidates:
                if v in seen:
                    continue
                seen.add(v)
                parent[v] = u
                if v not in match_r:
                    found = v
                else:
                    stack.append((match_r[v], iter(adj[match_r[v]])))
                break
            else:
                stack.pop()
        v_opt = found
        while v_opt is not None:  # flip the path root -> ... -> found
            u = parent[v_opt]
            nxt = match_l.get(u)
            match_l[u], match_r[v_opt] = v_opt, u
            v_opt = None if u == root else nxt
    return len(match_l)


def match_counts(
    gold: Sequence[K], pred: Sequence[K], shared: Callable[[K, K], int]
) -> tuple[int, int]:
    """(exact TP, relaxed TP), both one-to-one; exact pairs are fixed first."""
    left = Counter(gold)
    exact = 0
    rest_pred: list[K] = []
    for p in pred:
        if left[p] > 0:
            left[p] -= 1
            exact += 1
        else:
            rest_pred.append(p)
    rest_gold = list(left.elements())
    adj: list[list[int]] = []
    for g in rest_gold:
        scored = [(-s, j) for j, p in enumerate(rest_pred) if (s := shared(g, p)) > 0]
        adj.append([j for _, j in sorted(scored)])
    return exact, exact + _max_matching(adj)


def _doc_counts(gold: Extraction | None, pred: Extraction | None) -> list[tuple[int, int, int]]:
    """(tp, pred, gold) for every slot of ``_SLOTS`` in one document."""
    out: list[tuple[int, int, int]] = []
    per_label: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for level in LEVELS:
        g_keys: list[Any]
        p_keys: list[Any]
        if level == "re":
            g_keys = relation_pairs(gold) if gold else []
            p_keys = relation_pairs(pred) if pred else []
            exact, relaxed = match_counts(g_keys, p_keys, _rel_shared)
        else:
            attr = "entities" if level == "ner" else "modifiers"
            g_keys = mention_keys(getattr(gold, attr)) if gold else []
            p_keys = mention_keys(getattr(pred, attr)) if pred else []
            # Labels never match across types, so matching label by label is
            # the same matching, only cheaper.
            exact = relaxed = 0
            for label in {k[0] for k in (*g_keys, *p_keys)}:
                gl = [k for k in g_keys if k[0] == label]
                pl = [k for k in p_keys if k[0] == label]
                e, r = match_counts(gl, pl, _shared)
                exact, relaxed = exact + e, relaxed + r
                per_label[label] = [e, len(pl), len(gl)]
        out += [(exact, len(p_keys), len(g_keys)), (relaxed, len(p_keys), len(g_keys))]
    out += [(t[0], t[1], t[2]) for t in (per_label[label] for label in LABELS)]
    return out


def _f1(
    tp: npt.NDArray[np.int64], pred: npt.NDArray[np.int64], gold: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    denom = (pred + gold).astype(np.float64)
    f1: npt.NDArray[np.float64] = np.divide(
        2.0 * tp, denom, out=np.zeros_like(denom), where=denom > 0
    )
    return f1


def _bootstrap_ci(
    counts: npt.NDArray[np.int64], seed: int, resamples: int
) -> npt.NDArray[np.float64]:
    """(slots, 2) percentile CI of micro F1, documents resampled with replacement.

    Resample r draws ``n`` document indices; instead of gathering their counts
    we count how often each document was drawn and take one matrix product.
    """
    n_docs, n_slots, _ = counts.shape
    if n_docs == 0:
        return np.zeros((n_slots, 2))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_docs, size=(resamples, n_docs))
    flat = (idx + n_docs * np.arange(resamples)[:, None]).ravel()
    weights = np.bincount(flat, minlength=resamples * n_docs).reshape(resamples, n_docs)
    sums = (weights @ counts.reshape(n_docs, -1)).reshape(resamples, n_slots, 3)
    f1 = _f1(sums[..., 0], sums[..., 1], sums[..., 2])
    ci: npt.NDArray[np.float64] = np.percentile(f1, [2.5, 97.5], axis=0).T
    return ci


def _metric(tp: int, pred: int, gold: int, ci: Sequence[float]) -> dict[str, Any]:
    p = tp / pred if pred else 0.0
    r = tp / gold if gold else 0.0
    f1 = 2 * tp / (pred + gold) if pred + gold else 0.0  # = 2PR/(P+R) when defined
    lo, hi = float(ci[0]), float(ci[1])
    return {"p": p, "r": r, "f1": f1, "tp": tp, "pred": pred, "gold": gold, "ci": [lo, hi]}


def _by_id(docs: Sequence[Extraction], what: str) -> dict[str, Extraction]:
    out: dict[str, Extraction] = {}
    for d in docs:
        if d.document.id in out:
            raise InputError(f"duplicate document id {d.document.id!r} among {what}")
        out[d.document.id] = d
    return out


def evaluate(
    gold: Sequence[Extraction],
    pred: Sequence[Extraction],
    *,
    seed: int = 13,
    resamples: int = 1000,
) -> dict[str, Any]:
    """Score ``pred`` against ``gold``, pairing documents by id.

    A gold document without prediction is all false negatives; a prediction
    without gold is all false positives. Both are scored and listed
    (``missing_pred``/``unmatched_pred``); ``documents`` counts every scored
    id. Documents are taken in id order, so input order never changes a CI.
    """
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    gold_by_id, pred_by_id = _by_id(gold, "gold"), _by_id(pred, "predictions")
    ids = sorted(gold_by_id.keys() | pred_by_id.keys())
    counts = np.zeros((len(ids), len(_SLOTS), 3), dtype=np.int64)
    for i, doc_id in enumerate(ids):
        counts[i] = _doc_counts(gold_by_id.get(doc_id), pred_by_id.get(doc_id))
    totals = counts.sum(axis=0)
    cis = _bootstrap_ci(counts, seed, resamples)
    metrics = [
        _metric(int(t[0]), int(t[1]), int(t[2]), ci) for t, ci in zip(totals, cis, strict=True)
    ]
    result: dict[str, Any] = {lv: {} for lv in LEVELS}
    for slot, m in zip(_SLOTS, metrics, strict=True):
        if isinstance(slot, tuple):
            result[slot[0]][slot[1]] = m
    result["per_type"] = {label: metrics[_SLOTS.index(label)] for label in LABELS}
    result["documents"] = len(ids)
    result["missing_pred"] = sorted(gold_by_id.keys() - pred_by_id.keys())
    result["unmatched_pred"] = sorted(pred_by_id.keys() - gold_by_id.keys())
    result["bootstrap"] = {"seed": seed, "resamples": resamples}
    return result


def _read(ann_path: Path, txt_path: Path, report: ParseReport) -> Extraction:
    source = Source(path=str(txt_path))
    doc = Document(id=ann_path.stem, text=read_text(txt_path), source=source)
    return parse_ann(read_text(ann_path), doc, path=str(ann_path), strict=False, report=report)


def evaluate_dirs(gold_dir: Path, pred_dir: Path, *, seed: int = 13) -> dict[str, Any]:
    """Score the brat files of ``pred_dir`` against those of ``gold_dir``.

    Every ``NAME.ann`` is a document. A prediction's note text comes from its
    own ``NAME.txt`` if present, else the gold one (``extract --format brat``
    writes only ``.ann``). Lenient reading, as for training: a stray line is
    skipped with a warning on stderr rather than losing the whole note.
    """
    for what, d in (("gold", gold_dir), ("prediction", pred_dir)):
        if not d.is_dir():
            raise InputError(f"{what} directory {d} does not exist or is not a directory")
    gold_anns = sorted(gold_dir.glob("*.ann"))
    if not gold_anns:
        raise InputError(f"gold directory {gold_dir} holds no .ann files")
    report = ParseReport()
    gold: list[Extraction] = []
    for ann in gold_anns:
        txt = ann.with_suffix(".txt")
        if not txt.is_file():
            raise InputError(f"{ann}: no {txt.name} beside it")
        gold.append(_read(ann, txt, report))
    gold_text = {g.document.id: g.document.text for g in gold}
    pred: list[Extraction] = []
    for ann in sorted(pred_dir.glob("*.ann")):
        own, fallback = ann.with_suffix(".txt"), gold_dir / f"{ann.stem}.txt"
        txt = own if own.is_file() else fallback
        if not txt.is_file():
            raise InputError(f"{ann}: no {own.name} in {pred_dir} or {gold_dir}")
        p = _read(ann, txt, report)
        if p.document.id in gold_text and p.document.text != gold_text[p.document.id]:
            print(f"warning: {own} differs from the gold note; offsets follow it", file=sys.stderr)
        pred.append(p)
    for problem in report.problems:
        print(f"warning: skipped {problem}", file=sys.stderr)
    return evaluate(gold, pred, seed=seed)


def _row(name: str, mode: str, m: dict[str, Any]) -> str:
    ci = f"[{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]"
    return (
        f"{name:<16}{mode:<9}{m['p']:>7.3f}{m['r']:>7.3f}{m['f1']:>7.3f}  {ci:<16}"
        f"{m['tp']:>7}{m['pred']:>7}{m['gold']:>7}"
    )


def format_report(result: dict[str, Any]) -> str:
    """A fixed-width table: level x mode, then exact-match rows per type."""
    boot = result.get("bootstrap", {})
    head = f"{'':<16}{'match':<9}{'P':>7}{'R':>7}{'F1':>7}  {'95% CI of F1':<16}"
    head += f"{'TP':>7}{'pred':>7}{'gold':>7}"
    lines = [
        f"{result['documents']} documents; percentile bootstrap over documents "
        f"({boot.get('resamples', '?')} resamples, seed {boot.get('seed', '?')})",
        "",
        head,
    ]
    lines += [_row(lv, md, result[lv][md]) for lv in LEVELS for md in MODES]
    lines += ["", "per type (exact match)", head]
    lines += [_row(label, "exact", m) for label, m in result["per_type"].items()]
    for key, what in (
        ("missing_pred", "gold notes without prediction (all FN)"),
        ("unmatched_pred", "predictions without gold note (all FP)"),
    ):
        ids = result.get(key, [])
        if ids:
            more = f" ... (+{len(ids) - 10})" if len(ids) > 10 else ""
            lines += ["", f"{what}: {len(ids)}: {', '.join(ids[:10])}{more}"]
    return "\n".join(lines)
