"""What counts as what: the definitions docs/statistics.md states, as code, in one place.

* An **answer** is a 2xx final response.
* A **network-effectiveness success** (ITU-T E.425's idea: the network did its job and the
  callee's side decided) is an answer, a user busy (486, 600), a decline (603), a no answer
  (480), a 408 after the callee was alerted, or a caller's cancel (487) after the callee was
  alerted. "Alerted" means a 18x was received first: a 408 or 487 before any 18x is a call
  the network never delivered. Every other final status, and every refusal by the switch,
  counts against NER.
* Durations and PDDs are whole milliseconds.
"""

from __future__ import annotations

from typing import Final

__all__ = ["NER_AFTER_RINGING", "NER_STATUSES", "is_answer", "ms", "ner_success"]

#: Final statuses that are network successes whether or not the callee was alerted.
NER_STATUSES: Final = frozenset({486, 600, 603, 480})
#: Final statuses that are network successes only after a 18x (the callee was alerted).
NER_AFTER_RINGING: Final = frozenset({408, 487})


def is_answer(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def ner_success(status: int | None, rang: bool) -> bool:
    """Whether a final ``status`` (None: none came) counts as a network success."""
    if status is None:
        return False
    if 200 <= status < 300 or status in NER_STATUSES:
        return True
    return rang and status in NER_AFTER_RINGING


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds (the switch's timings are rounded to the ms anyway)."""
    return round(seconds * 1000)
