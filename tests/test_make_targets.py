"""The training targets of the Makefile call the CLI with flags it has.

``make model``, ``make cv`` and ``make distill`` each take from 40 minutes
to hours, so CI cannot run them; a renamed or dropped flag would only show
when someone does. ``make -n`` prints their commands; each ``kiwi-fhir
train`` in them must parse with the real argument parser.
"""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from kiwi_fhir.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _train_commands(target: str, *assign: str) -> list[list[str]]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(
        ["make", "-n", target, *assign], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.replace("\\\n", " ")
    cmds = []
    for part in re.split(r"\|\||;|&&|\n", out.replace("$s", "13").replace("$i", "1")):
        words = shlex.split(part)
        while words[:1] == ["do"]:
            words = words[1:]
        if "kiwi-fhir" in (Path(w).name for w in words[:1]) and words[1:2] == ["train"]:
            cmds.append(words[1:])
    return cmds


@pytest.mark.parametrize(
    ("target", "first"),
    [("model", {"seed": 13}), ("cv", {"fold": "1/3"}), ("distill", {"seed": 13})],
)
def test_training_targets_use_flags_the_cli_has(target: str, first: dict[str, object]) -> None:
    cmds = _train_commands(target, "TEACHER_SEEDS=13 14")
    parsed = [build_parser().parse_args(c) for c in cmds]  # exits on an unknown flag
    assert len(parsed) == (1 if target == "cv" else 2)  # a loop body is printed once
    assert {k: getattr(parsed[0], k) for k in first} == first
    assert parsed[0].epochs == 36
    if target == "distill":  # the teachers' loop, then the student
        student = parsed[-1]
        assert student.distill_teachers == "build/teacher-s13,build/teacher-s14"
        assert student.pseudo_data and student.pseudo_epochs == 1
        assert not any(p.all_notes for p in parsed)  # dev stays held out: it scores them
        assert student.distill_labels == "build/distill-labels-s13-14"
    if target == "model":  # the shipped recipe: one teacher, whatever TEACHER_SEEDS says
        teacher, student = parsed
        assert not teacher.all_notes and student.all_notes
        assert student.distill_teachers == "build/teacher-s13" and student.out == "build/model"
        assert student.pseudo_data and student.distill_labels == "build/distill-labels-s13"


def test_the_all_notes_student_shares_the_dev_students_teachers_and_labels() -> None:
    dev_run = [build_parser().parse_args(c) for c in _train_commands("distill")][-1]
    ship = [build_parser().parse_args(c) for c in _train_commands("distill", "STUDENT_NOTES=all")]
    assert ship[-1].all_notes and not dev_run.all_notes
    assert not ship[0].all_notes  # the teachers never see the dev notes either way
    for flag in ("distill_teachers", "distill_labels", "pseudo_data", "pseudo_epochs"):
        assert getattr(ship[-1], flag) == getattr(dev_run, flag), flag


def test_student_args_reach_the_student_alone() -> None:
    cmds = _train_commands("distill", "STUDENT_ARGS=--soft-relations --min-confidence 0.95")
    parsed = [build_parser().parse_args(c) for c in cmds]
    assert parsed[-1].soft_relations and parsed[-1].min_confidence == 0.95
    assert not parsed[0].soft_relations and parsed[0].min_confidence == 0.0  # the teachers
