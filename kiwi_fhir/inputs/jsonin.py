"""JSON from outside, parsed so that no input can surface as a traceback.

``json.loads`` lets hostile input escape as ``RecursionError`` (arrays nested
100,000 deep) or ``ValueError`` (a 5,000-digit integer, over Python's digit
limit); code walking a parsed document recursively can hit the same limit
later. One parser for every place that reads JSON from a caller (files,
gRPC, the demo, FHIR notifications) turns all of these into ``FhirInputError``
naming the place, and caps the nesting depth well below the recursion limit.
"""

from __future__ import annotations

import json
from typing import Any, Final

from kiwi_fhir.errors import FhirInputError

#: FHIR resources nest about 10 deep; a Bundle of them twice that.
MAX_DEPTH: Final = 64


def loads(data: str | bytes, *, source: str = "") -> Any:
    try:
        obj = json.loads(data)
    except json.JSONDecodeError as exc:
        raise FhirInputError("$", f"malformed JSON (line {exc.lineno}, column {exc.colno})",
                             source=source) from exc  # fmt: skip
    except UnicodeDecodeError as exc:
        raise FhirInputError("$", "JSON is not valid UTF-8", source=source) from exc
    except RecursionError as exc:
        raise FhirInputError("$", f"JSON nested deeper than {MAX_DEPTH} levels",
                             source=source) from exc  # fmt: skip
    except ValueError as exc:  # int digits over sys.get_int_max_str_digits()
        raise FhirInputError("$", "a JSON number has too many digits", source=source) from exc
    if depth(obj) > MAX_DEPTH:
        raise FhirInputError("$", f"JSON nested deeper than {MAX_DEPTH} levels", source=source)
    return obj


def depth(obj: Any) -> int:
    """Nesting depth, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, d)
            if d <= MAX_DEPTH:  # past the cap the answer is already "too deep"
                stack.extend((v, d + 1) for v in node if isinstance(v, (dict, list)))
    return deepest
