import subprocess
import sys
from pathlib import Path

import pytest

from kiwi_fhir import __version__
from kiwi_fhir.cli import main


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("extract", "eval", "train", "serve"):
        assert cmd in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_errors_are_one_line_without_traceback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = subprocess.run(
        [sys.executable, "-m", "kiwi_fhir.cli", "eval", str(tmp_path / "no"), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("kiwi-fhir: error:") and str(tmp_path / "no") in res.stderr


def test_debug_shows_traceback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiwi_fhir.cli",
            "--debug",
            "eval",
            str(tmp_path / "no"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0 and "Traceback" in res.stderr


@pytest.mark.parametrize("flag", ["--batch-size", "--threads"])
@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_extract_refuses_a_non_positive_count_in_one_line(flag: str, value: str,
                                                          tmp_path: Path) -> None:  # fmt: skip
    """Regression: --batch-size 0 was a traceback, -1 silently gave zero entities."""
    note = tmp_path / "n.txt"
    note.write_text("Fever.")
    r = subprocess.run([sys.executable, "-m", "kiwi_fhir.cli", "extract", str(note), flag,
                        value], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"argument {flag}" in r.stderr and r.stdout == ""
