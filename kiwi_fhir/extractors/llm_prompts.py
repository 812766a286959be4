"""The Kiwi instruction templates, verbatim.

The instruction-tuned Kiwi LLaMA weights only behave when they see exactly
the text they were tuned on (``shared/docs/kiwi-prompts.md``, from the public
Kiwi-LLaMA release): one sentence per prompt, no trailing newline after
``### Output Text:``, the answer ended by ``<EOS>``. So the templates are
kept here as literal strings and tested against that document; nothing else
in the package builds prompt text.
"""

from __future__ import annotations

from typing import Final

from kiwi_fhir.schema import ALLOWED_MODIFIERS

#: Stop string the models were tuned to emit after the tagged sentence.
STOP: Final[str] = "<EOS>"
#: Stop strings sent: ``<EOS>``, and a new ``###`` section -- a model that
#: failed to stop starts the next prompt there (our input is one line).
STOPS: Final[tuple[str, ...]] = (STOP, "\n###")
#: Generation limit the Kiwi release uses.
MAX_TOKENS: Final[int] = 512

_RE_TASK = (
    "### Task:\n"
    "Your task is to mark up modifier entities related to the entity marked with <span> tag"
    " in the input text.\n"
    "\n"
    "### Entity Markup Guide:\n"
)
_TAIL = "\n### Input Text: {} <EOS>\n### Output Text:"

NER_PROMPT: Final[str] = (
    "### Task:\n"
    "Your task is to generate an HTML version of an input text, using HTML <span> tags to mark"
    " up specific entities.\n"
    "\n"
    "### Entity Markup Guides:\n"
    'Use <span class="problem"> to denote a medical problem.\n'
    'Use <span class="treatment"> to denote a treatment.\n'
    'Use <span class="test"> to denote a test.\n'
    'Use <span class="drug"> to denote a drug.\n'
    "\n"
    "### Entity Definitions:\n"
    "Medical Problem: The abnormal condition that happens physically or mentally to a patient.\n"
    "Treatment: The procedures, interventions, and substances given to a patient for treating"
    " a problem.\n"
    "Drug: Generic or brand name of a single medication or a collective name of a group of"
    " medication.\n"
    "Test: A medical procedure performed (i) to detect or diagnose a problem, (ii) to monitor"
    " diseases, disease processes, and susceptibility, or (iii) to determine a course of"
    " treatment.\n" + _TAIL
)

RE_PROMPTS: Final[dict[str, str]] = {
    "test": _RE_TASK
    + 'Use <span class="labvalue"> to denote a numeric value or a normal description of the'
    " result of a lab test.\n"
    'Use <span class="reference_range"> to denote the range or interval of values that are'
    " deemed as normal for a test in a healthy person.\n"
    'Use <span class="negation"> to denote the phrase that indicates the absence of an entity.\n'
    'Use <span class="temporal"> to denote a calendar date, time, or duration related to a'
    " test.\n" + _TAIL,
    "drug": _RE_TASK + 'Use <span class="form"> to denote the form of drug.\n'
    'Use <span class="frequency"> to denote the frequency of taking a drug.\n'
    'Use <span class="dosage"> to denote the amount of active ingredient from the number of'
    " drugs prescribed.\n"
    'Use <span class="duration"> to denote the time period a patient should take a drug.\n'
    'Use <span class="strength"> to denote the amount of active ingredient in a given dosage'
    " form.\n"
    'Use <span class="route"> to denote the way by which a drug, fluid, poison, or other'
    " substance is taken into the body.\n"
    'Use <span class="negation"> to denote the phrase that indicates the absence of an entity.\n'
    'Use <span class="temporal"> to denote a calendar date, time, or duration related to a'
    " drug.\n" + _TAIL,
    "problem": _RE_TASK + 'Use <span class="uncertain"> to denote a measure of doubt.\n'
    'Use <span class="condition"> to denote a phrase that indicates the problems existing in a'
    " certain situation.\n"
    'Use <span class="subject"> to denote the person entity who is experiencing the disorder.\n'
    'Use <span class="negation"> to denote the phrase that indicates the absence of an entity.\n'
    'Use <span class="bodyloc"> to denote the location on the body where the observation is'
    " present.\n"
    'Use <span class="severity"> to denote the degree of intensity of a clinical condition.\n'
    'Use <span class="temporal"> to denote a calendar date, time, or duration related to a'
    " problem.\n"
    'Use <span class="course"> to denote the development or alteration of a problem.\n' + _TAIL,
    "treatment": _RE_TASK
    + 'Use <span class="temporal"> to denote a calendar date, time, or duration related to a'
    " treatment.\n"
    'Use <span class="negation"> to denote the phrase that indicates the absence of an entity.\n'
    + _TAIL,
}

#: Classes each relation prompt may emit: the prompt's own list, which is the
#: guideline's allowed set for that entity type.
RE_CLASSES: Final[dict[str, frozenset[str]]] = dict(ALLOWED_MODIFIERS)


def flatten(text: str) -> str:
    """Each whitespace character as one space: same length, so offsets survive.

    A sentence can span a wrapped line; a raw newline inside ``### Input
    Text:`` would look like the end of the input to the model.
    """
    return "".join(" " if c.isspace() else c for c in text)


def ner_prompt(sentence: str) -> str:
    return NER_PROMPT.format(flatten(sentence))


def mark(sentence: str, start: int, end: int, label: str) -> str:
    """The sentence with ``[start:end]`` wrapped as the entity an RE prompt asks about."""
    s = flatten(sentence)
    return f'{s[:start]}<span class="{label}">{s[start:end]}</span>{s[end:]}'


def re_prompt(label: str, marked_sentence: str) -> str:
    """``marked_sentence`` comes from :func:`mark` (already flattened)."""
    return RE_PROMPTS[label].format(marked_sentence)
