"""The normalise stage: the dialed number as routing and billing see it.

Run after ``authorise`` (which strips the tech prefix) and before ``limits`` (whose
allow/deny lists are written in the normalised form) and route (``routing``):

1. one leading ``+`` is dropped (``+44...`` and ``44...`` are the same E.164 number);
2. the account's ``rewrite`` rules are applied in file order, each to the previous result:
   ``{match = "^00", replace = ""}`` is ``re.sub(match, replace, number, count=1)`` (Python
   syntax, ``\\1`` back-references); ``{prefix = "0", strip = 1, add = "44"}`` applies only
   when the number starts with ``prefix`` (default: always), drops ``strip`` leading digits
   and puts ``add`` in front;
3. the result must be ASCII digits only and not empty, else the call is refused with
   ``invalid_number`` (484): ``lcr`` routes and rates digit strings.
"""

from __future__ import annotations

from ..config import Account, RewriteRule
from .refusal import EndReason, Refusal, refuse

__all__ = ["apply_rule", "normalise"]


def apply_rule(rule: RewriteRule, number: str) -> str:
    if rule.kind == "regex":
        assert rule.pattern is not None, "regex rules are compiled when the config is loaded"
        return rule.pattern.sub(rule.replace, number, count=1)
    if not number.startswith(rule.prefix):
        return number
    return rule.add + number[rule.strip :]


def normalise(account: Account, number: str) -> str | Refusal:
    """The routable digit string for ``number`` (tech prefix already stripped)."""
    out = number.removeprefix("+")
    for rule in account.rewrite:
        out = apply_rule(rule, out)
    if not out or not (out.isascii() and out.isdigit()):
        return refuse(EndReason.INVALID_NUMBER, f"{number!r} became {out!r}, not a digit string")
    return out
