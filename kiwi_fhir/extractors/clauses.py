"""One modifier, several entities: keep the links inside its own clause.

The relation scorer sees a pair at a time, so in "a history of hypertension
and type 2 diabetes mellitus who presents with worsening shortness of breath
over the last 3 days" it links "the last 3 days" to all three problems (0.97,
0.76, 0.74). A relative pronoun, a contrast word, a semicolon or a colon
between a modifier and an entity starts another clause; when the modifier
also has a link that crosses no such boundary, the crossing links are
dropped. A modifier whose links all cross one keeps them: then the boundary
says nothing about which is right.

On the dev split this moved RE end to end 0.630 -> 0.631 and RE given gold
entities 0.705 -> 0.707, modifiers unchanged (docs/model.md); it is there
for the clinical reading of the FHIR output more than for the score.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_BOUNDARY = re.compile(
    r"\b(?:who|which|whom|whose|but|however|although|because|when|while)\b|[;:]",
    re.IGNORECASE,
)

Link = tuple[int, int, float]  # (entity index, modifier index, confidence)
CharSpan = tuple[int, int]


def same_clause_links(
    text: str, links: Sequence[Link], entities: Sequence[CharSpan], modifiers: Sequence[CharSpan]
) -> list[Link]:
    """``links`` less those that cross a clause boundary a sibling link does not."""

    def crosses(link: Link) -> bool:
        (es, ee), (ms, me) = entities[link[0]], modifiers[link[1]]
        a, b = (ee, ms) if ee <= ms else (me, es)
        return a < b and _BOUNDARY.search(text, a, b) is not None

    by_mod: dict[int, list[Link]] = {}
    for link in links:
        by_mod.setdefault(link[1], []).append(link)
    dropped: set[Link] = set()
    for group in by_mod.values():
        if len(group) < 2:
            continue
        crossing = [link for link in group if crosses(link)]
        if len(crossing) < len(group):
            dropped.update(crossing)
    return [link for link in links if link not in dropped]
