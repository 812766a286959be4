"""The vLLM extractor and its HTTP client against a scripted fake server.

The fake answers like a well-behaved Kiwi model: it finds the input sentence
in each prompt and tags the words it knows. That pins the prompt format, the
batching, the two stages, the offsets and the error translation without a
real server (tests/test_llm_vllm.py runs a real one).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from kiwi_fhir.core import Document, Entity
from kiwi_fhir.errors import (
    BackendError,
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    ModelError,
)
from kiwi_fhir.extractors.llm import LlmExtractor
from kiwi_fhir.extractors.llm_client import CompletionsClient, api_root
from kiwi_fhir.extractors.llm_guided import OPEN, Rules, copy_grammar, copy_rules
from kiwi_fhir.extractors.llm_prompts import NER_PROMPT, RE_PROMPTS, mark, ner_prompt
from kiwi_fhir.schema import ENTITY_TYPES

INPUT_RE = re.compile(r"### Input Text: (.*) <EOS>\n### Output Text:$", re.S)
NER_WORDS = {"chest pain": "problem", "aspirin": "drug", "ECG": "test"}
RE_WORDS = {"problem": {"no": "negation", "severe": "severity"},
            "drug": {"81 mg": "strength", "daily": "frequency"},
            "test": {"normal": "labvalue"}}  # fmt: skip

NOTE = "No severe chest pain today.\nAspirin 81 mg\ndaily was started.\nECG was normal."


def tag(text: str, words: dict[str, str]) -> str:
    for w, cls in words.items():
        text = re.sub(rf"(?<![\w>]){re.escape(w)}(?!\w)", f'<span class="{cls}">{w}</span>',
                      text, flags=re.I)  # fmt: skip
    return text


def kiwi_answer(prompt: str) -> str:
    m = INPUT_RE.search(prompt)
    assert m is not None, "prompt does not end with the Kiwi input/output lines"
    sent = m.group(1)
    if prompt.startswith(NER_PROMPT[:60]):
        return " " + tag(sent, NER_WORDS) + " <EOS>"
    label = re.search(r'<span class="(\w+)">', sent)
    assert label is not None
    return " " + tag(sent, RE_WORDS[label.group(1)]) + " "


class FakeServer:
    def __init__(self, answer: Callable[[str], str] = kiwi_answer) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self.fail: list[int] = []  # status codes to answer with first
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "kiwi"}]})
        body = json.loads(request.content)
        with self.lock:
            self.requests.append(body)
            if self.fail:
                return httpx.Response(self.fail.pop(0), json={"error": {"type": "Overloaded"}})
        choices = [{"index": i, "text": self.answer(p)} for i, p in enumerate(body["prompt"])]
        return httpx.Response(200, json={"choices": choices[::-1]})  # any order


def extractor(server: FakeServer, **kw: Any) -> LlmExtractor:
    kw.setdefault("backoff_s", 0.0)
    return LlmExtractor("http://fake:8000", "kiwi", transport=httpx.MockTransport(server), **kw)


def test_two_stage_extraction_gives_exact_offsets_and_relations() -> None:
    server = FakeServer()
    ex = extractor(server, batch_size=2)
    (x,) = ex.extract([Document("d1", NOTE)])
    assert [(e.label, e.text) for e in x.entities] == [
        ("problem", "chest pain"), ("drug", "Aspirin"), ("test", "ECG")]  # fmt: skip
    got = {(x.entity(r.entity_id).text, x.modifier(r.modifier_id).label,
            x.modifier(r.modifier_id).text) for r in x.relations}  # fmt: skip
    assert got == {("chest pain", "negation", "No"), ("chest pain", "severity", "severe"),
                   ("Aspirin", "strength", "81 mg"), ("Aspirin", "frequency", "daily"),
                   ("ECG", "labvalue", "normal")}  # fmt: skip
    assert all(m.source == "vllm" for m in (*x.entities, *x.modifiers))
    assert x.backend == "vllm" and x.model == "kiwi"
    # sentences batched two per request, greedy, with the Kiwi stop string
    first = server.requests[0]
    assert len(first["prompt"]) == 2 and first["temperature"] == 0.0
    assert "<EOS>" in first["stop"] and "structured_outputs" not in first
    # the wrapped line reached the model as one line
    assert all("\n" not in INPUT_RE.search(p).group(1)  # type: ignore[union-attr]
               for r in server.requests for p in r["prompt"])  # fmt: skip
    assert ex.stats()["spans"] == 8


def test_given_entities_skip_ner_and_keep_their_ids() -> None:
    server = FakeServer()
    ent = Entity("E7", "drug", 28, 35, NOTE[28:35])
    (x,) = extractor(server).extract([Document("d", NOTE)], [[ent]])
    assert x.entities == (ent,)
    assert {x.modifier(r.modifier_id).text for r in x.relations} == {"81 mg", "daily"}
    assert all(not p.startswith(NER_PROMPT[:60]) for r in server.requests for p in r["prompt"])
    # the RE prompt spans the wrapped line that holds the entity
    assert RE_PROMPTS["drug"].format(mark("Aspirin 81 mg daily was started.", 0, 7, "drug")) in [
        p for r in server.requests for p in r["prompt"]]  # fmt: skip


def test_guided_sends_one_copy_grammar_per_prompt() -> None:
    server = FakeServer()
    extractor(server, guided=True).extract([Document("d", "ECG was normal.")])
    ner, rel = server.requests
    assert ner["prompt"] == [ner_prompt("ECG was normal.")]
    assert ner["structured_outputs"]["grammar"] == copy_grammar("ECG was normal.", ENTITY_TYPES)
    # the RE answer may copy the entity's own tag as well as its modifiers'
    assert 'open ::= "<span class=\\"labvalue\\">" |' in rel["structured_outputs"]["grammar"]
    assert '"<span class=\\"test\\">"' in rel["structured_outputs"]["grammar"]


def accepts(rules: Rules, text: str) -> bool:
    """Walk the right-linear rules over ``text`` (what the grammar engine does)."""
    states, seen = [("root", 0)], set()
    while states:
        rule, pos = states.pop()
        if (rule, pos) in seen:
            continue
        seen.add((rule, pos))
        for lit, nxt in rules[rule]:
            lits = [x for x, _ in rules[OPEN]] if lit is None else [lit]
            for piece in lits:
                if text.startswith(piece, pos):
                    if nxt is None:
                        if pos + len(piece) == len(text):
                            return True
                    else:
                        states.append((nxt, pos + len(piece)))
    return False


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        (" BP 120/80 (sitting).", True),
        ('<span class="test">BP</span> 120/80 (sitting).', True),
        ('BP 120/80 (<span class="problem"><span class="test">sitting</span></span>).', True),
        ("BP 120/80 (standing).", False),  # rewritten
        ('<span class="drug">BP</span> 120/80 (sitting).', False),  # class not offered
        ('<span class="test">BP 120/80 (sitting).', False),  # left open
        ("BP</span> 120/80 (sitting).", False),  # stray close
        ('BP <span class="test"></span>120/80 (sitting).', False),  # empty
        ('BP <span class="test"> 120/80</span> (sitting).', False),  # tag before a space
        (
            '<span class="test"><span class="test"><span class="test">BP</span></span></span>'
            " 120/80 (sitting).",
            False,
        ),  # deeper than 2
    ],
)
def test_copy_grammar_accepts_well_formed_tagged_copies_only(answer: str, ok: bool) -> None:
    assert accepts(copy_rules("BP 120/80 (sitting).", ["test", "problem"]), answer) is ok


def test_copy_grammar_renders_quotes_and_backslashes() -> None:
    g = copy_grammar('a "b" \\ c', ["test"]).splitlines()
    assert 'root ::= " " b0_0 | b0_0' in g
    assert r'b1_0 ::= open b1_1 | "\"" a1_0' in g  # the token " as an EBNF literal
    assert r'b4_0 ::= open b4_1 | "\\" a4_0' in g  # and the token \


def test_rewritten_answers_are_dropped_and_counted() -> None:
    server = FakeServer(lambda p: ' <span class="problem">migraine</span> <EOS>')
    ex = extractor(server)
    (x,) = ex.extract([Document("d", "Severe headache.")])
    assert x.entities == () and ex.stats()["unaligned"] == 1


def test_refused_prompt_is_isolated_and_counted() -> None:
    server = FakeServer()
    server.fail = [400, 400]  # the batch, then its first prompt alone
    ex = extractor(server, batch_size=8)
    (x,) = ex.extract([Document("d", "ECG was normal. No chest pain.")])
    assert ex.stats()["failed_prompts"] == 1
    assert {e.text for e in x.entities} == {"chest pain"}
    assert len(server.requests) == 4  # batch, two singles, one RE prompt


def test_retries_then_unavailable() -> None:
    server = FakeServer()
    server.fail = [503, 503, 503]
    ex = extractor(server, retries=2)
    with pytest.raises(BackendUnavailableError, match="HTTP 503"):
        ex.extract([Document("d", "ECG.")])
    server.fail = [503]
    assert extractor(server, retries=1).extract([Document("d", "ECG.")])[0].entities


def test_timeouts_and_refused_connections_become_backend_errors() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    kw: dict[str, Any] = {"retries": 1, "backoff_s": 0.0}
    c = CompletionsClient("http://x", "m", transport=httpx.MockTransport(slow), **kw)
    with pytest.raises(BackendTimeoutError) as info:
        c.complete(["p"], max_tokens=4)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    c = CompletionsClient("http://x", "m", transport=httpx.MockTransport(down), **kw)
    with pytest.raises(BackendUnavailableError, match="ConnectError"):
        c.models()


def test_rejection_and_malformed_answers_never_quote_the_prompt() -> None:
    def reject(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"type": "BadRequestError",
                                                   "message": "SECRET note text"}})  # fmt: skip

    c = CompletionsClient("http://x", "m", transport=httpx.MockTransport(reject))
    with pytest.raises(BackendRejectedError) as info:
        c.complete(["SECRET note text"], max_tokens=4)
    assert "SECRET" not in str(info.value) and info.value.status == 400

    def short(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": []})

    c = CompletionsClient("http://x", "m", transport=httpx.MockTransport(short))
    with pytest.raises(BackendError, match="number of completions"):
        c.complete(["a"], max_tokens=4)


def test_load_checks_the_served_model() -> None:
    ex = LlmExtractor("http://fake", "other", transport=httpx.MockTransport(FakeServer()))
    with pytest.raises(ModelError, match="does not serve"):
        ex.load()
    assert not ex.health()
    ok = extractor(FakeServer())
    ok.load()
    assert ok.health()
    ok.close()
    assert not ok.health()


def test_api_root() -> None:
    assert api_root("http://h:8000") == api_root("http://h:8000/v1/") == "http://h:8000/v1"
