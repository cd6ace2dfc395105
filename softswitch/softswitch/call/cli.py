"""Caller-ID: who the call says is calling, the ``cli`` rules that rewrite it, and whether
the call has one (for routes with ``cli = "required"`` or ``"absent"``).

The caller's identity is the user part of ``From`` and of each ``P-Asserted-Identity``
entry (RFC 3325; a ``tel:`` entry's number), each a :class:`Party`. The rules of the
account run when the call arrives, before routing; those of a gateway on top of them for
each attempt there. Each rule applies to every party in turn, file order, each to the
previous result:

* ``{ prefix = "0", strip = 1, add = "44" }``: when the user starts with ``prefix``
  (default: always), drop ``strip`` leading characters and put ``add`` in front;
* ``{ match = "^0044", replace = "44" }``: ``re.sub(match, replace, user, count=1)``;
* ``{ set = "441234567890" }``: a fixed CLI, whatever the caller sent.

Prefix and regex rules only touch a user that is a number (digits, optionally after one
``+``): a name or ``anonymous`` passes through. No rule touches an anonymous party (RFC
3323: user ``anonymous`` or host ``anonymous.invalid``): a fixed CLI never unmasks a caller
who withheld theirs. A rule whose result would be empty is skipped (a URI's user part
cannot be empty).

A call *has a caller-ID* when, after the account's rules, one of its parties is a number
(``P-Asserted-Identity`` first, then ``From``) that is not anonymous, and the caller did not
withhold it: ``Privacy: id`` (RFC 3325) or ``Privacy: user`` (RFC 3323) counts as none,
since the callee will not be shown it.

The forwarded INVITE carries the result (:func:`header_edits`): only the URI's user part
changes, in place, so the display name, the URI's other parts and the header parameters
(the ``From`` tag above all: it identifies the caller's dialog, RFC 3261 12) stay as the
caller sent them. ``Privacy`` and every other header go through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from ..config import CliRule
from ..sip import Request, SipParseError
from ..sip.fields import NameAddr, parse_name_addr
from ..sip.uri import URI, SipURI, TelURI, escape, unescape

__all__ = [
    "Identity",
    "Party",
    "apply_rule",
    "header_edits",
    "identity_of",
    "is_number",
    "rewrite",
    "rewrite_user",
]

_NUMBER_RE: Final = re.compile(r"\+?[0-9]+")
#: ``Privacy`` values that withhold the caller's identity from the callee.
_WITHHOLDING: Final = frozenset({"id", "user"})
_PAI: Final = "P-Asserted-Identity"


def is_number(user: str | None) -> bool:
    """Digits, optionally after one ``+``: what the rules rewrite and what counts as CLI."""
    return user is not None and _NUMBER_RE.fullmatch(user) is not None


@dataclass(frozen=True, slots=True)
class Party:
    """One identity the INVITE carries: its user (a sip URI's, unescaped, or a tel URI's
    number; None when the URI has none) and whether it is anonymous (RFC 3323)."""

    user: str | None
    anonymous: bool = False

    @property
    def number(self) -> str | None:
        """The caller-ID this party gives, None when it gives none."""
        return self.user if not self.anonymous and is_number(self.user) else None


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller's identity: ``From``'s party and each ``P-Asserted-Identity`` entry's
    (None for one that cannot be read or is not a sip/sips/tel URI: left as it is), and
    whether ``Privacy`` withholds it."""

    from_: Party | None
    asserted: tuple[Party | None, ...] = ()
    withheld: bool = False

    @property
    def number(self) -> str | None:
        """The caller-ID, None when the call has none (see the module's docstring)."""
        if self.withheld:
            return None
        for party in (*self.asserted, self.from_):
            if party is not None and party.number is not None:
                return party.number
        return None

    @property
    def present(self) -> bool:
        return self.number is not None


# -- reading ------------------------------------------------------------------------------


def _party(uri: URI) -> Party | None:
    if isinstance(uri, SipURI):
        user = None if uri.user is None else unescape(uri.user)
        anonymous = (user or "").lower() == "anonymous" or uri.host.lower() == "anonymous.invalid"
        return Party(user, anonymous)
    if isinstance(uri, TelURI):
        return Party(uri.number)
    return None


def _parse(value: str) -> NameAddr | None:
    try:
        return parse_name_addr(value)
    except SipParseError:
        return None


def _withheld(values: Iterable[str]) -> bool:
    for value in values:
        for token in value.split(";"):
            if token.strip().lower() in _WITHHOLDING:
                return True
    return False


def identity_of(request: Request) -> Identity:
    """The identity ``request`` carries (a malformed ``From`` gives no party: the transport
    answered those 400 already)."""
    try:
        from_ = request.from_
    except SipParseError:
        from_ = None
    headers = request.headers
    asserted: tuple[Party | None, ...] = ()
    if _PAI in headers:
        entries = (_parse(v) for v in headers.get_all(_PAI))
        asserted = tuple(None if na is None else _party(na.uri) for na in entries)
    withheld = "Privacy" in headers and _withheld(headers.get_all("Privacy"))
    return Identity(None if from_ is None else _party(from_.uri), asserted, withheld)


# -- the rules ----------------------------------------------------------------------------


def apply_rule(rule: CliRule, user: str | None) -> str | None:
    """One rule on one (not anonymous) user; the user unchanged when the rule does not apply."""
    if rule.kind == "set":
        return rule.set
    if user is None or not is_number(user):
        return user
    if rule.kind == "regex":
        assert rule.pattern is not None, "regex rules are compiled when the config is loaded"
        out = rule.pattern.sub(rule.replace, user, count=1)
    elif user.startswith(rule.prefix):
        out = rule.add + user[rule.strip :]
    else:
        return user
    return out or user


def rewrite_user(rules: Sequence[CliRule], user: str | None) -> str | None:
    for rule in rules:
        user = apply_rule(rule, user)
    return user


def _rewrite_party(rules: Sequence[CliRule], party: Party | None) -> Party | None:
    if party is None or party.anonymous:
        return party
    user = rewrite_user(rules, party.user)
    return party if user == party.user else replace(party, user=user)


def rewrite(identity: Identity, rules: Sequence[CliRule]) -> Identity:
    """``identity`` with ``rules`` applied to each of its parties (itself when none)."""
    if not rules:
        return identity
    return Identity(
        _rewrite_party(rules, identity.from_),
        tuple(_rewrite_party(rules, p) for p in identity.asserted),
        identity.withheld,
    )


# -- the forwarded INVITE -----------------------------------------------------------------


def _with_user(uri: URI, user: str) -> URI:
    if isinstance(uri, SipURI):
        return uri.with_(user=escape(user))
    if isinstance(uri, TelURI) and is_number(user):
        return TelURI(user, uri.params, uri.scheme)
    return uri  # a tel URI's number cannot be anything else; other schemes are not ours


def _edited(value: str, na: NameAddr, user: str) -> str:
    """``value`` (one name-addr) with its URI's user part changed and nothing else: the URI
    is spliced in where it was written; a URI not written as the parser prints it (such as
    ``sip:h:05060``) makes the whole value reprinted, its parameters (tag) kept."""
    old, new = str(na.uri), str(_with_user(na.uri, user))
    if old == new:
        return value
    bracketed = value.rfind(f"<{old}>")
    if bracketed >= 0:
        return f"{value[: bracketed + 1]}{new}{value[bracketed + 1 + len(old) :]}"
    if value.startswith(old) and "<" not in value:  # an addr-spec: no display name
        return new + value[len(old) :]
    return str(na.with_(uri=_with_user(na.uri, user)))


def header_edits(request: Request, identity: Identity) -> tuple[tuple[str, str], ...]:
    """The header fields that replace ``request``'s so that it carries ``identity`` (the
    request's own, rewritten): ``From`` and/or ``P-Asserted-Identity`` (all its entries as
    one field), each only when a user changed; empty when nothing did."""
    received = identity_of(request)
    edits: list[tuple[str, str]] = []
    party = identity.from_
    if party is not None and party.user is not None and party != received.from_:
        value = request.headers.get("From")
        na = None if value is None else _parse(value)
        if value is not None and na is not None:
            edits.append(("From", _edited(value, na, party.user)))
    if identity.asserted != received.asserted:
        values = request.headers.get_all(_PAI)
        out = []
        for value, party, was in zip(values, identity.asserted, received.asserted, strict=False):
            na = _parse(value)
            if na is None or party is None or party.user is None or party == was:
                out.append(value)
            else:
                out.append(_edited(value, na, party.user))
        edits.append((_PAI, ", ".join(out)))
    return tuple(edits)
