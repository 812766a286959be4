"""Mapping tables: loaded and validated at start-up, and shipped in the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from kiwi_fhir.errors import ConfigError
from kiwi_fhir.fhir import load_mapping, mappings_dir
from kiwi_fhir.schema import ALLOWED_MODIFIERS

REPO = Path(__file__).resolve().parents[1]


def test_default_tables_load_and_cover_every_allowed_modifier() -> None:
    m = load_mapping()
    assert load_mapping() is m  # cached
    assert mappings_dir() == REPO / "mappings"
    assert {k: v.resource for k, v in m.entities.items()} == {
        "problem": "Condition",
        "family_history": "FamilyMemberHistory",
        "test": "Observation",
        "drug": "MedicationStatement",
        "treatment": "Procedure",
        "planned_test": "ServiceRequest",
        "planned_treatment": "ServiceRequest",
        "planned_drug": "MedicationStatement",
    }
    for etype, allowed in ALLOWED_MODIFIERS.items():
        assert {r.modifier for r in m.entities[etype].rules} == allowed
        planned = m.entities[etype].planned
        if planned:  # a planned mention loses none of its modifiers either
            assert {r.modifier for r in m.entities[planned].rules} == allowed
    assert m.entities["planned_drug"].defaults["status"] == "intended"
    assert m.codes.units["gm/dl"] == "g/dL"
    assert m.codes.coded["route"]["po"].code == "26643006"


def _broken(tmp_path: Path, name: str, edit: str, old: str) -> Path:
    for f in ("resources.yaml", "codes.yaml"):
        shutil.copy(REPO / "mappings" / f, tmp_path / f)
    target = tmp_path / name
    text = target.read_text(encoding="utf-8")
    assert old in text
    target.write_text(text.replace(old, edit, 1), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("name", "old", "new", "words"),
    [
        (
            "resources.yaml",
            "resource: Procedure",
            "resource: Prozedur",
            "unknown FHIR R4B resource",
        ),
        (
            "resources.yaml",
            "path: severity,",
            "path: severty,",
            "Condition has no element 'severty'",
        ),
        ("resources.yaml", "parse: frequency", "parse: freq", "unknown parser 'freq'"),
        ("resources.yaml", "table: route", "table: routes", "unknown table 'routes'"),
        ("resources.yaml", "      route: {path", "      rout: {path", "no rule for ['route']"),
        (
            "resources.yaml",
            "types: [dateTime, Period]}",
            "types: [Quantity]}",
            "cannot produce ['Quantity']",
        ),
        (
            "resources.yaml",
            "extension: disease_course",
            "extension: course_ext",
            "unknown extension key",
        ),
        ("resources.yaml", "{route: family_history}", "{route: relatives}", "unknown mapping"),
        ("codes.yaml", "gm/dl: g/dL", "gm/dl: gm/dL", "'gm/dL' is not a valid UCUM code"),
        (
            "codes.yaml",
            'mild: [snomed, "255604002", Mild]',
            "mild: [snomd, x, y]",
            "coded.severity.mild",
        ),
        ("codes.yaml", "version: 1", "version: 2", "version: 1"),
        ("codes.yaml", "units:\n", "units: [\n", "not valid YAML"),
    ],
)
def test_bad_table_is_a_config_error_naming_file_and_key(
    tmp_path: Path, name: str, old: str, new: str, words: str
) -> None:
    folder = _broken(tmp_path, name, new, old)
    with pytest.raises(ConfigError) as info:
        load_mapping(folder)
    assert words in str(info.value)
    assert str(folder) in str(info.value)


def test_env_override_and_missing_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _broken(tmp_path, "codes.yaml", "version: 1", "version: 1")
    monkeypatch.setenv("KIWI_FHIR_MAPPINGS", str(folder))
    assert mappings_dir() == folder
    data = yaml.safe_load((folder / "resources.yaml").read_text(encoding="utf-8"))
    assert data["entities"]["test"]["resource"] == "Observation"
    (folder / "codes.yaml").unlink()
    with pytest.raises(ConfigError, match=r"KIWI_FHIR_MAPPINGS=.*codes\.yaml"):
        mappings_dir()


def test_wheel_ships_the_tables_and_installed_package_finds_them(tmp_path: Path) -> None:
    """`pip install .` (non-editable): tables land in <prefix>/share and are found there."""
    before = _installed_location()
    wheels = tmp_path / "wheels"
    run = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*run, "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-w", str(wheels)],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    (wheel,) = wheels.glob("kiwi_fhir-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for f in ("resources.yaml", "codes.yaml"):
            inside = next(n for n in names if n.endswith(f"/share/kiwi-fhir/mappings/{f}"))
            assert z.read(inside) == (REPO / "mappings" / f).read_bytes()
    prefix = tmp_path / "prefix"
    subprocess.run(
        # --ignore-installed: without it pip uninstalls the package from the
        # running environment first (it did: the dev venv lost kiwi-fhir).
        [
            *run,
            "install",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            "--prefix",
            str(prefix),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    site = next(prefix.glob("lib/python*/site-packages"))
    env = {k: v for k, v in os.environ.items() if k != "KIWI_FHIR_MAPPINGS"}
    env["PYTHONPATH"] = str(site)
    code = (
        "import kiwi_fhir.fhir as f; print(f.__file__); print(f.mappings_dir()); f.load_mapping()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert out[0].startswith(str(site))  # the installed copy, not the checkout
    assert Path(out[1]) == prefix / "share" / "kiwi-fhir" / "mappings"
    assert _installed_location() == before  # the running environment is left alone


def _installed_location() -> str | None:
    """Where the running environment's kiwi-fhir distribution is recorded, if any."""
    code = (
        "import importlib.metadata as m\n"
        "try:\n    print(m.distribution('kiwi-fhir')._path)\n"
        "except m.PackageNotFoundError:\n    print('none')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    ).stdout.strip()
    return None if out == "none" else out
