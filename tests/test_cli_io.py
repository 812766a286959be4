"""``kiwi-fhir extract`` as a user runs it: a subprocess, its exit code, its
stderr (one line per problem, never a traceback) and the files it writes.

Regression tests for the CLI issue: each case below once crashed, or exited
0 with lost or unreadable output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kiwi_fhir.core import Document
from kiwi_fhir.extract_cli import LONG_NOTE
from kiwi_fhir.extractors.onnx import OnnxExtractor
from kiwi_fhir.serialize import to_dict
from kiwi_fhir.source import Source
from kiwi_fhir.terminology import code_extraction

DATA = Path(__file__).resolve().parent / "data"
NOTE = "No fever. Aspirin 81 mg daily for chest pain."


def kiwi(*args: str, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [sys.executable, "-m", "kiwi_fhir.cli", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=300,
    )
    return subprocess.CompletedProcess(
        res.args, res.returncode, res.stdout.decode("utf-8"), res.stderr.decode("utf-8")
    )


def one_line(res: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_non_utf8_stdin_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    res = kiwi("extract", "-", cwd=tmp_path, stdin=b"SECRET fever \xff\xfe cough")
    assert res.returncode == 1 and res.stdout == ""
    line = one_line(res)
    assert "stdin: not valid UTF-8 at byte 13" in line and "SECRET" not in line


def test_stdin_is_sniffed_like_a_file(tmp_path: Path) -> None:
    res = kiwi("extract", "-", cwd=tmp_path, stdin=(DATA / "oru_radiology.hl7").read_bytes())
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["document"]["id"] == "stdin" and out["document"]["source"]["channel"] == "hl7"


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("afile", "--out afile: exists and is not a directory"),
        ("afile/sub", "--out afile/sub: cannot create"),
    ],
)
def test_bad_out_fails_before_any_work(tmp_path: Path, out: str, message: str) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "n.txt").write_text(NOTE)
    res = kiwi("extract", "n.txt", "--out", out, "--model", "no-such-model", cwd=tmp_path)
    # checked before the model loads: a missing model would be the other error
    assert res.returncode == 2 and message in one_line(res)


def test_same_names_in_different_folders_keep_their_folders(tmp_path: Path) -> None:
    for sub, text in (("c1", NOTE), ("c2", "Chest pain.")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "note.txt").write_text(text)
    res = kiwi("extract", "c1/note.txt", "c2/note.txt", "--out", "o", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    texts = {p.parent.name: json.loads(p.read_text())["document"]["length"]
             for p in (tmp_path / "o").rglob("*.json")}  # fmt: skip
    assert texts == {"c1": len(NOTE), "c2": len("Chest pain.")}


def test_colliding_output_names_are_refused_up_front(tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_text(NOTE)
    (tmp_path / "note.hl7").write_bytes((DATA / "oru_radiology.hl7").read_bytes())
    res = kiwi("extract", "note.txt", "note.hl7", "--out", "o", cwd=tmp_path)
    assert res.returncode == 2 and "would both write" in one_line(res)
    assert not any((tmp_path / "o").iterdir())


def test_stdout_one_result_is_json_several_are_json_lines(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(NOTE)
    (tmp_path / "b.txt").write_text("Chest pain.")
    single = kiwi("extract", "a.txt", cwd=tmp_path)
    assert single.returncode == 0 and json.loads(single.stdout)["document"]["id"] == "a"
    assert len(single.stdout.splitlines()) > 1  # pretty-printed
    several = kiwi("extract", "a.txt", "b.txt", cwd=tmp_path)
    assert several.returncode == 0, several.stderr
    ids = [json.loads(line)["document"]["id"] for line in several.stdout.splitlines()]
    assert ids == ["a", "b"]
    # a multi-message HL7 file is several results too
    batch = kiwi("extract", str(DATA / "batch_two_messages.hl7"), "--format", "fhir", cwd=tmp_path)
    assert batch.returncode == 0, batch.stderr
    kinds = [json.loads(line)["resourceType"] for line in batch.stdout.splitlines()]
    assert kinds == ["Bundle", "Bundle"]


def test_brat_for_several_documents_needs_out(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(NOTE)
    (tmp_path / "b.txt").write_text(NOTE)
    res = kiwi("extract", "a.txt", "b.txt", "--format", "brat", cwd=tmp_path)
    assert res.returncode == 2 and "give --out" in one_line(res) and res.stdout == ""
    res = kiwi("extract", str(DATA / "batch_two_messages.hl7"), "--format", "brat", cwd=tmp_path)
    assert res.returncode == 1 and "brat to stdout takes one" in one_line(res)
    assert res.stdout == ""


@pytest.mark.parametrize(
    ("setup", "args", "rc", "message"),
    [
        ("emptydir", ["emptydir"], 1, "emptydir: no input files"),
        ("empty.txt", ["empty.txt"], 1, "empty.txt: empty note, nothing to extract"),
        ("", ["nothere"], 1, "nothere: no such file or directory"),
        ("", ["nothere/"], 1, "nothere: no such file or directory"),
        ("{}", ["x.json"], 1, "resourceType: expected DocumentReference or Bundle, got (missing)"),
    ],
)
def test_nothing_to_extract_is_said(
    tmp_path: Path, setup: str, args: list[str], rc: int, message: str
) -> None:
    if setup == "emptydir":
        (tmp_path / "emptydir").mkdir()
    elif setup == "empty.txt":
        (tmp_path / "empty.txt").write_text("  \n")
    elif setup == "{}":
        (tmp_path / "x.json").write_text("{}")
    res = kiwi("extract", *args, "--out", "o", cwd=tmp_path)
    assert res.returncode == rc and message in one_line(res)
    assert not list((tmp_path / "o").rglob("*.json"))


def test_malformed_segment_names_its_line_once(tmp_path: Path) -> None:
    (tmp_path / "m.hl7").write_bytes(
        b"MSH|^~\\&|A|B|C|D|20200101||ORU^R01|1|P|2.5\rPID|1\rOBX1|TX\r"
    )
    line = one_line(kiwi("extract", "m.hl7", cwd=tmp_path))
    assert line.count("line 3") == 1 and "malformed segment" in line


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    res = kiwi("extract", "--debug", "afile", "--out", "afile", cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" in res.stderr and "InputError" in res.stderr
    plain = kiwi("--debug", "extract", "afile", "--out", "afile", cwd=tmp_path)
    assert "Traceback" in plain.stderr  # before the subcommand still works


def test_long_note_shows_progress_and_matches_extract(tmp_path: Path) -> None:
    text = (NOTE + " Troponin was negative. Chest x-ray showed mild edema.\n") * 400
    assert len(text) > LONG_NOTE
    (tmp_path / "long.txt").write_text(text)
    res = kiwi("extract", "long.txt", "--progress", cwd=tmp_path)
    assert res.returncode == 0 and "Traceback" not in res.stderr
    assert "long:" in res.stderr and "char" in res.stderr  # the per-note bar
    got = json.loads(res.stdout)
    (plain,) = OnnxExtractor().extract([Document("long", text, Source(channel="file"))])
    want = to_dict(code_extraction(plain))  # the CLI codes entities by default
    assert got["entities"] == want["entities"] and got["relations"] == want["relations"]
    quiet = kiwi("extract", "long.txt", cwd=tmp_path)  # not a terminal: no bar by default
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_help_describes_eval_arguments_and_train_defaults(tmp_path: Path) -> None:
    ev = " ".join(kiwi("eval", "--help", cwd=tmp_path).stdout.split())
    assert "NAME.txt with NAME.ann" in ev and "--format brat --out PRED_DIR" in ev
    tr = " ".join(kiwi("train", "--help", cwd=tmp_path).stdout.split())
    for default in ("fine-tuning epochs (default 36)", "(default 13)", "(default 1.5e-4)"):
        assert default in tr


def test_codes_by_default_and_no_codes(tmp_path: Path) -> None:
    (tmp_path / "n.txt").write_text("History of hypertension. Aspirin 81 mg daily.")
    coded = json.loads(kiwi("extract", "n.txt", cwd=tmp_path).stdout)
    systems = {c["system"] for e in coded["entities"] for c in e.get("codes", ())}
    assert "http://hl7.org/fhir/sid/icd-10-cm" in systems
    plain = json.loads(kiwi("extract", "n.txt", "--no-codes", cwd=tmp_path).stdout)
    assert plain["entities"] and not any("codes" in e for e in plain["entities"])


def test_results_without_narrative_still_make_a_bundle(tmp_path: Path) -> None:
    """Regression: an OUL^R22 CBC (structured results, no narrative) was reported
    as an "empty note" and its results were lost."""
    res = kiwi("extract", "--format", "fhir", str(DATA / "hl7" / "oul_r22_cbc.hl7"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    bundle = json.loads(res.stdout)
    obs = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert len(obs) == 2 and all("valueQuantity" in o or "valueString" in o for o in obs)
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert "DiagnosticReport" in kinds and "Condition" not in kinds
