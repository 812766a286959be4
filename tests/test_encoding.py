from pathlib import Path

import numpy as np
import pytest

from kiwi_fhir.extractors.encoding import encode_note, load_tokenizer
from kiwi_fhir.extractors.onnx import default_model_dir


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    path = default_model_dir() / "tokenizer.json"
    if not path.is_file():
        pytest.skip("no packaged model")
    return load_tokenizer(Path(path))


def test_word_spans_are_exact_offsets(tok) -> None:  # type: ignore[no-untyped-def]
    text = "Lasix 20 mg b.i.d. Café, naïve\x00 BP 100/60."
    note = encode_note(tok, text)
    words = [text[s:e] for s, e in note.word_spans.tolist()]
    assert words[:4] == ["Lasix", "20", "mg", "b"]
    assert "Café" in words and "naïve" in words and "100" in words


def test_long_note_windows_cover_and_start_on_words(tok) -> None:  # type: ignore[no-untyped-def]
    text = "The patient has chest pain and shortness of breath. " * 200
    note = encode_note(tok, text, max_len=64, stride=40)
    assert len(note.windows) > 10
    starts = set(note.word_first.tolist())
    assert all(a in starts for a, _ in note.windows)
    assert all(b - a <= 62 for a, b in note.windows)
    covered = np.zeros(len(note.ids), dtype=bool)
    for a, b in note.windows:
        covered[a:b] = True
    assert covered.all() and (note.owner >= 0).all()
    # each subtoken is owned by a window where it is not at an edge, when possible
    k = note.owner[len(note.ids) // 2]
    a, b = note.windows[k]
    mid = len(note.ids) // 2
    assert min(mid - a, b - 1 - mid) >= 10


def test_shift_shortens_first_window(tok) -> None:  # type: ignore[no-untyped-def]
    text = "word " * 500
    note = encode_note(tok, text, max_len=66, stride=64, shift=20)
    assert note.windows[0][1] <= 20 and note.windows[1][0] == note.windows[0][1]


def test_empty_and_control_only(tok) -> None:  # type: ignore[no-untyped-def]
    for text in ("", "   \n\t", "\x00\x01\x02"):
        note = encode_note(tok, text)
        assert note.n_words == 0
