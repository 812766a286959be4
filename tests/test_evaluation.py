"""Scoring: every expected number below is counted by hand from the spans."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiwi_fhir.brat import write_pair
from kiwi_fhir.cli import main
from kiwi_fhir.core import Document, Entity, Extraction, Modifier, Relation
from kiwi_fhir.corpus import load_corpus
from kiwi_fhir.errors import InputError
from kiwi_fhir.evaluation import evaluate, evaluate_dirs, format_report
from kiwi_fhir.schema import ENTITY_TYPES, MODIFIER_TYPES

NOTE = "Chest pain and shortness of breath. Took aspirin 81 mg daily and metoprolol. No fever."
METRIC_KEYS = {"p", "r", "f1", "tp", "pred", "gold", "ci"}


def at(phrase: str, note: str = NOTE) -> tuple[int, int]:
    start = note.index(phrase)
    return start, start + len(phrase)


def ent(mid: str, label: str, start: int, end: int, note: str = NOTE) -> Entity:
    return Entity(mid, label, start, end, note[start:end])


def mod(mid: str, label: str, start: int, end: int, note: str = NOTE) -> Modifier:
    return Modifier(mid, label, start, end, note[start:end])


def ext(
    doc_id: str,
    entities: Sequence[Entity] = (),
    modifiers: Sequence[Modifier] = (),
    relations: Sequence[tuple[str, str]] = (),
    note: str = NOTE,
) -> Extraction:
    return Extraction(
        Document(doc_id, note),
        tuple(entities),
        tuple(modifiers),
        tuple(Relation(e, m) for e, m in relations),
    )


def gold_entities() -> list[Entity]:
    return [
        ent("T1", "problem", *at("Chest pain")),
        ent("T2", "problem", *at("shortness of breath")),
        ent("T3", "drug", *at("aspirin")),
        ent("T4", "drug", *at("metoprolol")),
        ent("T5", "problem", *at("fever")),
    ]


def gold_modifiers() -> list[Modifier]:
    return [
        mod("T6", "strength", *at("81 mg")),
        mod("T7", "frequency", *at("daily")),
        mod("T8", "negation", *at("No")),
    ]


GOLD_RELS = [("T3", "T6"), ("T3", "T7"), ("T5", "T8")]


def gold_doc(doc_id: str = "n1") -> Extraction:
    return ext(doc_id, gold_entities(), gold_modifiers(), GOLD_RELS)


def counts(metric: dict[str, Any]) -> tuple[int, int, int]:
    return metric["tp"], metric["pred"], metric["gold"]


def prf(metric: dict[str, Any]) -> tuple[float, float, float]:
    return metric["p"], metric["r"], metric["f1"]


def test_perfect_match_ignores_mention_ids_and_order() -> None:
    gold = gold_doc()
    renamed = {f"T{i}": f"X{9 - i}" for i in range(1, 9)}
    pred = ext(
        "n1",
        [replace(e, id=renamed[e.id]) for e in reversed(gold.entities)],
        [replace(m, id=renamed[m.id]) for m in gold.modifiers],
        [(renamed[e], renamed[m]) for e, m in reversed(GOLD_RELS)],
    )
    res = evaluate([gold], [pred])
    expected = {"ner": (5, 5, 5), "modifier": (3, 3, 3), "re": (3, 3, 3)}
    for level, n in expected.items():
        for mode in ("exact", "relaxed"):
            m = res[level][mode]
            assert set(m) == METRIC_KEYS
            assert counts(m) == n
            assert prf(m) == (1.0, 1.0, 1.0)
            assert m["ci"] == [1.0, 1.0]
    assert counts(res["per_type"]["problem"]) == (3, 3, 3)
    assert counts(res["per_type"]["drug"]) == (2, 2, 2)
    assert set(res["per_type"]) == {*ENTITY_TYPES, *MODIFIER_TYPES}
    assert res["per_type"]["test"] == {
        "p": 0.0,
        "r": 0.0,
        "f1": 0.0,
        "tp": 0,
        "pred": 0,
        "gold": 0,
        "ci": [0.0, 0.0],
    }
    assert res["documents"] == 1
    assert res["missing_pred"] == [] and res["unmatched_pred"] == []


def test_boundary_shift_is_exact_error_but_relaxed_hit() -> None:
    ents = gold_entities()
    ents[0] = ent("T1", "problem", *at("pain"))  # "Chest pain" -> "pain"
    res = evaluate([gold_doc()], [ext("n1", ents, gold_modifiers(), GOLD_RELS)])
    assert counts(res["ner"]["exact"]) == (4, 5, 5)
    assert prf(res["ner"]["exact"]) == pytest.approx((0.8, 0.8, 0.8))
    assert counts(res["ner"]["relaxed"]) == (5, 5, 5)
    assert counts(res["per_type"]["problem"]) == (2, 3, 3)
    # T1 takes part in no relation: relations are untouched.
    assert counts(res["re"]["exact"]) == (3, 3, 3)


def test_one_prediction_over_two_gold_mentions_counts_once() -> None:
    gold = ext("n1", gold_entities()[:2])  # "Chest pain", "shortness of breath"
    s, _ = at("pain")
    _, e = at("shortness")
    res = evaluate([gold], [ext("n1", [ent("P1", "problem", s, e)])])  # "pain and shortness"
    assert counts(res["ner"]["exact"]) == (0, 1, 2)
    assert counts(res["ner"]["relaxed"]) == (1, 1, 2)
    assert prf(res["ner"]["relaxed"]) == pytest.approx((1.0, 0.5, 2 / 3))


def test_two_predictions_inside_one_gold_mention_count_once() -> None:
    gold = ext("n1", [gold_entities()[1]])  # "shortness of breath"
    pred = ext(
        "n1", [ent("P1", "problem", *at("shortness")), ent("P2", "problem", *at("of breath"))]
    )
    res = evaluate([gold], [pred])
    assert counts(res["ner"]["relaxed"]) == (1, 2, 1)
    assert prf(res["ner"]["relaxed"]) == pytest.approx((0.5, 1.0, 2 / 3))


def test_relaxed_matching_is_maximum_not_greedy() -> None:
    note = "abcdefghijklmnopqrst"
    gold = ext("n", [ent("A", "problem", 0, 6, note), ent("B", "problem", 6, 10, note)], note=note)
    # P shares 4 characters with A and 2 with B; Q shares 2 with A only. Greedy
    # largest-overlap-first pairs P-A and strands Q; the maximum pairs P-B, Q-A.
    pred = ext("n", [ent("P", "problem", 2, 8, note), ent("Q", "problem", 0, 2, note)], note=note)
    res = evaluate([gold], [pred])
    assert counts(res["ner"]["exact"]) == (0, 2, 2)
    assert counts(res["ner"]["relaxed"]) == (2, 2, 2)


def test_exact_pairs_are_fixed_before_relaxed_matching() -> None:
    note = "abcdefghijklmnopqrst"
    gold = ext("n", [ent("G", "test", 0, 10, note), ent("H", "test", 9, 12, note)], note=note)
    # P is an exact hit on G. Re-pairing P with H would let Q take G (2 TP), but an
    # exact hit is never given up for a relaxed one: Q is left a false positive.
    pred = ext("n", [ent("P", "test", 0, 10, note), ent("Q", "test", 0, 2, note)], note=note)
    res = evaluate([gold], [pred])
    assert counts(res["ner"]["exact"]) == (1, 2, 2)
    assert counts(res["ner"]["relaxed"]) == (1, 2, 2)


def test_labels_must_agree_even_when_relaxed() -> None:
    note = "abcdefghijklmnopqrst"
    gold = ext("n", [ent("G", "problem", 0, 10, note)], note=note)
    pred = ext("n", [ent("P", "test", 2, 5, note)], note=note)
    assert counts(evaluate([gold], [pred])["ner"]["relaxed"]) == (0, 1, 1)


def test_duplicate_predictions_are_false_positives() -> None:
    ents = [*gold_entities(), ent("T9", "drug", *at("aspirin"))]  # aspirin twice
    rels = [*GOLD_RELS, ("T3", "T7"), ("T9", "T6")]  # aspirin->daily twice, dup->81 mg
    res = evaluate([gold_doc()], [ext("n1", ents, gold_modifiers(), rels)])
    for mode in ("exact", "relaxed"):
        assert counts(res["ner"][mode]) == (5, 6, 5)
        assert prf(res["ner"][mode]) == pytest.approx((5 / 6, 1.0, 10 / 11))
        assert counts(res["re"][mode]) == (3, 5, 3)
        assert prf(res["re"][mode]) == pytest.approx((0.6, 1.0, 0.75))
    assert counts(res["per_type"]["drug"]) == (2, 3, 2)


def test_type_error_counts_against_both_types() -> None:
    ents = gold_entities()
    ents[2] = ent("T3", "treatment", *at("aspirin"))  # gold says drug
    res = evaluate([gold_doc()], [ext("n1", ents, gold_modifiers(), GOLD_RELS)])
    assert counts(res["ner"]["exact"]) == (4, 5, 5)
    assert counts(res["ner"]["relaxed"]) == (4, 5, 5)
    assert counts(res["per_type"]["drug"]) == (1, 1, 2)
    assert counts(res["per_type"]["treatment"]) == (0, 1, 0)
    assert prf(res["per_type"]["treatment"]) == (0.0, 0.0, 0.0)
    # Both aspirin relations now start from a treatment: only fever<-No survives.
    assert counts(res["re"]["exact"]) == (1, 3, 3)
    assert counts(res["re"]["relaxed"]) == (1, 3, 3)


def test_relation_exact_versus_relaxed() -> None:
    mods = gold_modifiers()
    mods[0] = mod("T6", "strength", *at("81"))  # gold "81 mg"
    # aspirin->81 (boundary), metoprolol->daily (gold: aspirin->daily), fever->No.
    rels = [("T3", "T6"), ("T4", "T7"), ("T5", "T8")]
    res = evaluate([gold_doc()], [ext("n1", gold_entities(), mods, rels)])
    assert counts(res["modifier"]["exact"]) == (2, 3, 3)
    assert counts(res["modifier"]["relaxed"]) == (3, 3, 3)
    assert counts(res["re"]["exact"]) == (1, 3, 3)
    assert counts(res["re"]["relaxed"]) == (2, 3, 3)
    assert prf(res["re"]["relaxed"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert counts(res["per_type"]["strength"]) == (0, 1, 1)


def test_zero_denominators_give_zero_not_nan() -> None:
    gold = ext("n1", gold_entities())  # no modifiers, no relations anywhere
    res = evaluate([gold], [ext("n1")])
    assert counts(res["ner"]["exact"]) == (0, 0, 5)
    assert prf(res["ner"]["exact"]) == (0.0, 0.0, 0.0)  # precision: 0 predictions
    for level in ("modifier", "re"):
        assert res[level]["exact"] == {
            "p": 0.0,
            "r": 0.0,
            "f1": 0.0,
            "tp": 0,
            "pred": 0,
            "gold": 0,
            "ci": [0.0, 0.0],
        }
    empty = evaluate([], [])
    assert empty["documents"] == 0
    assert empty["ner"]["relaxed"]["f1"] == 0.0 and empty["ner"]["relaxed"]["ci"] == [0.0, 0.0]
    json.dumps(empty)  # no NaN, no numpy types


def test_missing_and_extra_documents_in_memory() -> None:
    res = evaluate([gold_doc("a"), gold_doc("b")], [gold_doc("a"), gold_doc("c")])
    assert counts(res["ner"]["exact"]) == (5, 10, 10)
    assert counts(res["re"]["relaxed"]) == (3, 6, 6)
    assert res["missing_pred"] == ["b"] and res["unmatched_pred"] == ["c"]
    assert res["documents"] == 3
    with pytest.raises(InputError, match="duplicate document id 'a'"):
        evaluate([gold_doc("a"), gold_doc("a")], [])


def make_dirs(tmp_path: Path) -> tuple[Path, Path]:
    gold_dir, pred_dir = tmp_path / "gold", tmp_path / "pred"
    write_pair(gold_doc("a"), gold_dir)
    write_pair(gold_doc("b"), gold_dir)
    write_pair(gold_doc("a"), pred_dir, write_text=False)  # note text from gold_dir
    extra = "Fever and cough."
    write_pair(
        ext(
            "c",
            [ent("E1", "problem", 0, 5, extra), ent("E2", "problem", 10, 15, extra)],
            note=extra,
        ),
        pred_dir,
    )
    return gold_dir, pred_dir


def test_evaluate_dirs_missing_and_extra_prediction_files(tmp_path: Path) -> None:
    gold_dir, pred_dir = make_dirs(tmp_path)
    res = evaluate_dirs(gold_dir, pred_dir)
    # a: 5/5 hit; b: no prediction, 5 FN; c: no gold, 2 FP.
    assert counts(res["ner"]["exact"]) == (5, 7, 10)
    assert prf(res["ner"]["exact"]) == pytest.approx((5 / 7, 0.5, 10 / 17))
    assert counts(res["modifier"]["exact"]) == (3, 3, 6)
    assert counts(res["re"]["exact"]) == (3, 3, 6)
    assert counts(res["per_type"]["problem"]) == (3, 5, 6)
    assert res["missing_pred"] == ["b"] and res["unmatched_pred"] == ["c"]
    assert res["documents"] == 3
    report = format_report(res)
    assert "reference_range" in report
    assert "gold notes without prediction (all FN): 1: b" in report
    assert "predictions without gold note (all FP): 1: c" in report


def test_evaluate_dirs_rejects_missing_dirs_and_textless_predictions(tmp_path: Path) -> None:
    gold_dir, pred_dir = make_dirs(tmp_path)
    with pytest.raises(InputError, match=r"gold directory .*nowhere"):
        evaluate_dirs(tmp_path / "nowhere", pred_dir)
    with pytest.raises(InputError, match=r"prediction directory .*nowhere"):
        evaluate_dirs(gold_dir, tmp_path / "nowhere")
    (pred_dir / "c.txt").unlink()  # c.ann now has no note in either directory
    with pytest.raises(InputError, match=r"c\.ann"):
        evaluate_dirs(gold_dir, pred_dir)


def test_evaluate_dirs_lenient_reading_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gold_dir, pred_dir = make_dirs(tmp_path)
    with open(pred_dir / "a.ann", "a", encoding="utf-8") as fh:
        fh.write("T99\tproblem 0 5\tnot the note text\n")
    res = evaluate_dirs(gold_dir, pred_dir)
    assert counts(res["ner"]["exact"]) == (5, 7, 10)  # the bad line is skipped
    assert "warning: skipped" in capsys.readouterr().err


def test_bootstrap_ci_is_seeded_and_follows_the_spec() -> None:
    gold, pred = [], []
    for i in range(12):  # doc i: 5 gold entities, the first i % 6 of them predicted
        gold.append(ext(f"d{i:02d}", gold_entities()))
        pred.append(ext(f"d{i:02d}", gold_entities()[: i % 6]))
    res = evaluate(gold, pred, seed=7, resamples=300)
    assert res == evaluate(gold[::-1], pred[::-1], seed=7, resamples=300)
    assert (
        res["ner"]["exact"]["ci"]
        != evaluate(gold, pred, seed=8, resamples=300)["ner"]["exact"]["ci"]
    )
    m = res["ner"]["exact"]
    assert counts(m) == (30, 30, 60)  # 2 * (0+1+2+3+4+5)
    lo, hi = m["ci"]
    assert lo <= m["f1"] <= hi and lo < hi
    # Independently: per resample draw 12 documents (in id order) and re-score.
    tp = np.array([i % 6 for i in range(12)])
    rng = np.random.default_rng(7)
    f1s = []
    for _ in range(300):
        pick = rng.integers(0, 12, size=12)
        f1s.append(2 * tp[pick].sum() / (tp[pick].sum() + 5 * 12))
    assert [lo, hi] == pytest.approx(list(np.percentile(f1s, [2.5, 97.5])))


def test_eval_of_shared_corpus_against_itself_is_perfect(shared_corpus: Path) -> None:
    res = evaluate_dirs(shared_corpus, shared_corpus)
    assert res["documents"] == len(list(shared_corpus.glob("*.ann")))
    for level in ("ner", "modifier", "re"):
        for mode in ("exact", "relaxed"):
            m = res[level][mode]
            assert m["gold"] > 0 and m["tp"] == m["pred"] == m["gold"]
            assert m["f1"] == 1.0 and m["ci"] == [1.0, 1.0]


def test_eval_of_a_known_perturbation_of_the_shared_corpus(
    shared_corpus: Path, tmp_path: Path
) -> None:
    gold = load_corpus(shared_corpus)
    n_ent = n_mod = n_rel = 0
    deleted_ents = shifted_mods = deleted_rels = kept_rels_shifted = 0
    ent_counter = mod_counter = 0
    deleted_by_type = dict.fromkeys(ENTITY_TYPES, 0)
    for g in gold:
        text = g.document.text
        gold_mod_keys = {(m.label, m.start, m.end) for m in g.modifiers}
        keep: list[Entity] = []
        for e in g.entities:
            ent_counter += 1
            if ent_counter % 10 == 0:
                deleted_ents += 1
                deleted_by_type[e.label] += 1
            else:
                keep.append(e)
        kept_ids = {e.id for e in keep}
        mods: list[Modifier] = []
        shifted: set[str] = set()
        for m in g.modifiers:
            mod_counter += 1
            # Possible: a next character that brat can carry on the same line,
            # a non-empty span, and no clash with another gold modifier.
            can = (
                m.end < len(text)
                and m.end > m.start
                and (text[m.end] == " " or not text[m.end].isspace())
                and (m.label, m.start, m.end + 1) not in gold_mod_keys
            )
            if mod_counter % 7 == 0 and can:
                mods.append(Modifier(m.id, m.label, m.start, m.end + 1, text[m.start : m.end + 1]))
                shifted.add(m.id)
            else:
                mods.append(m)
        shifted_mods += len(shifted)
        rels = [r for r in g.relations if r.entity_id in kept_ids]
        deleted_rels += len(g.relations) - len(rels)
        kept_rels_shifted += sum(r.modifier_id in shifted for r in rels)
        n_ent += len(g.entities)
        n_mod += len(g.modifiers)
        n_rel += len(g.relations)
        write_pair(
            Extraction(g.document, tuple(keep), tuple(mods), tuple(rels)),
            tmp_path,
            write_text=False,
        )
    assert deleted_ents > 0 and shifted_mods > 0 and deleted_rels > 0 and kept_rels_shifted > 0

    res = evaluate_dirs(shared_corpus, tmp_path)
    kept = n_ent - deleted_ents
    for mode in ("exact", "relaxed"):
        assert counts(res["ner"][mode]) == (kept, kept, n_ent)
    assert res["ner"]["exact"]["p"] == 1.0
    assert res["ner"]["exact"]["r"] == pytest.approx(kept / n_ent)
    assert counts(res["modifier"]["exact"]) == (n_mod - shifted_mods, n_mod, n_mod)
    assert counts(res["modifier"]["relaxed"]) == (n_mod, n_mod, n_mod)
    n_pred_rel = n_rel - deleted_rels
    assert counts(res["re"]["exact"]) == (n_pred_rel - kept_rels_shifted, n_pred_rel, n_rel)
    assert counts(res["re"]["relaxed"]) == (n_pred_rel, n_pred_rel, n_rel)
    for label, n_del in deleted_by_type.items():
        m = res["per_type"][label]
        assert m["pred"] == m["tp"] == m["gold"] - n_del
    assert res["missing_pred"] == [] and res["unmatched_pred"] == []


def test_cli_eval_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold_dir, pred_dir = make_dirs(tmp_path)
    assert main(["eval", str(gold_dir), str(pred_dir), "--json", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"ner", "modifier", "re", "per_type", "documents", "missing_pred", "unmatched_pred"} <= (
        set(out)
    )
    for level in ("ner", "modifier", "re"):
        assert set(out[level]) == {"exact", "relaxed"}
        assert set(out[level]["exact"]) == METRIC_KEYS
    assert out["ner"]["exact"]["tp"] == 5 and out["bootstrap"]["seed"] == 3
    # Same directory on both sides, as `kiwi-fhir eval D D`: perfect.
    assert main(["eval", str(gold_dir), str(gold_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["re"]["relaxed"]["f1"] == 1.0
    assert main(["eval", str(gold_dir), str(gold_dir)]) == 0
    assert "per type (exact match)" in capsys.readouterr().out


def test_cli_eval_missing_dir_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gold_dir, _ = make_dirs(tmp_path)
    missing = tmp_path / "no-such-dir"
    assert main(["eval", str(gold_dir), str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error" in captured.err and str(missing) in captured.err
    assert "Traceback" not in captured.err
    shutil.rmtree(gold_dir)
    assert main(["eval", str(gold_dir), str(gold_dir), "--json"]) == 2
