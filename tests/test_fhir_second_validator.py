"""Every Bundle the CLI makes from the sample inputs passes a second, independent
R4 validator (@medplum/core's ``validateResource``, tests/fhir_server/validate.mjs),
besides the fhir.resources models the product builds them with: two readings of
the R4 structure definitions must agree that nothing is missing or misnamed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parent / "data"
VALIDATOR = Path(__file__).resolve().parent / "fhir_server"


def _samples() -> list[Path]:
    good = [p for p in sorted(DATA.iterdir()) if p.suffix in {".hl7", ".json"}
            and not p.name.startswith(("bad_", "bundle_transaction_one_bad"))]  # fmt: skip
    return good + sorted((DATA / "hl7").glob("*.hl7"))


def _validate(resources: list[dict[str, object]]) -> list[list[str]]:
    node = shutil.which("node")
    if node is None or not (VALIDATOR / "node_modules" / "@medplum" / "core").is_dir():
        pytest.fail("the medplum packages are not installed: `make test` runs `npm ci` in "
                    "tests/fhir_server (needs node)")  # fmt: skip
    lines = "".join(json.dumps(r) + "\n" for r in resources)
    res = subprocess.run([node, "validate.mjs"], input=lines.encode(), cwd=VALIDATOR,
                         capture_output=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr.decode()
    return [json.loads(x)["issues"] for x in res.stdout.decode().splitlines()]


def test_the_validator_finds_what_it_should() -> None:
    """A validator that passes everything proves nothing."""
    issues = _validate([
        {"resourceType": "Observation", "code": {"text": "x"}},  # status missing
        {"resourceType": "Condition", "subject": {"reference": "Patient/1"}, "onset": "x"},
        {"resourceType": "Condition", "subject": {"reference": "Patient/1"}},
    ])  # fmt: skip
    assert issues[0] and "status" in issues[0][0]
    assert issues[1] and "onset" in issues[1][0]
    assert issues[2] == []


def test_bundles_of_every_sample_input_pass(tmp_path: Path) -> None:
    samples = _samples()
    assert len(samples) >= 20
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "kiwi_fhir.cli", "extract", "--format", "fhir",
                          "--out", str(out), *map(str, samples)],
                         capture_output=True, timeout=900)  # fmt: skip
    # exit 1 is allowed: some samples carry parts the CLI names as not used (a PDF)
    assert res.returncode in (0, 1), res.stderr.decode()
    assert "Traceback" not in res.stderr.decode()
    bundles = sorted(out.rglob("*.bundle.json"))
    assert len(bundles) >= len(samples) - 3, res.stderr.decode()
    resources, where = [], []
    for b in bundles:
        bundle = json.loads(b.read_text(encoding="utf-8"))
        resources.append(bundle)
        where.append(f"{b.name}: Bundle")
        for i, entry in enumerate(bundle.get("entry", [])):
            resources.append(entry["resource"])
            where.append(f"{b.name}: entry[{i}] {entry['resource']['resourceType']}")
    kinds = {r["resourceType"] for r in resources}
    assert {"Condition", "Observation", "MedicationStatement", "DocumentReference",
            "Provenance", "DiagnosticReport"} <= kinds  # fmt: skip
    bad = [f"{w}: {i}" for w, issues in zip(where, _validate(resources), strict=True)
           for i in issues]  # fmt: skip
    assert bad == []
