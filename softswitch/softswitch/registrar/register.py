"""A REGISTER's effect on an account's bindings (RFC 3261 10.3), as a pure function.

:func:`decide` takes the authenticated REGISTER, the account's bindings and the clock, and
returns what to change and what to answer: :class:`Accepted` (bindings to put and to remove,
and the account's contacts afterwards for the 200) or :class:`Refused` (a final status).
Nothing is changed unless the whole request is acceptable: one bad contact refuses all of
them (10.3 steps 6 to 8 process a REGISTER atomically).

Choices where RFC 3261 leaves room:

* The expiry is the contact's ``expires`` parameter, else the ``Expires`` header, else
  ``max_expires``; a longer one is shortened to ``max_expires``; a non-zero one shorter than
  ``min_expires`` is answered ``423 Interval Too Brief`` with ``Min-Expires``. A malformed
  one (not an integer) is ``400``, never silently the default.
* ``Contact: *`` needs ``Expires: 0`` and no other Contact (10.3 step 6), and removes every
  binding of the account.
* A binding set by the same Call-ID with a CSeq at least as high is newer than this request:
  the request is refused ``400`` (10.3 step 7 says the update fails; no code is named).
* At most ``max_contacts`` live contacts per account; more is ``403``.
* A contact that must be reached behind a NAT is decided here, once, at registration
  (``bindings.reached_behind_nat``).
* A ``Path`` (RFC 3327) is believed only from a trusted proxy (``[server]
  trusted_proxies``), whose own address must be its first hop: a Path names where the
  switch sends the account's calls, past the NAT rule, so from anyone else (a client, an
  untrusted proxy) it is ignored and the contact is reached as without one. A believed Path
  is kept with every contact the REGISTER puts, whether or not the client said ``Supported:
  path`` (the proxies that wrote it asked to be on the way; the client's support only
  decides whether the 200 echoes it, 5.3). Each entry must be a name-addr with a ``sip:``
  URI that routes loosely (``lr``) over UDP or TCP, or the REGISTER is ``400``; a first hop
  other than the proxy is ``403``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate

from softswitch.sip import NameAddr, Request, SipParseError, SipURI, parse_name_addr

from .bindings import Binding, host_ip, reached_behind_nat
from .store import storable

__all__ = ["MAX_CONTACTS", "Accepted", "Limits", "Refused", "Source", "decide"]

#: Live contacts one account may have at once.
MAX_CONTACTS = 10
#: The largest delta-seconds RFC 3261 allows (2**32 - 1); a bigger one is this.
_MAX_DELTA = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """``[server] registrar_min_expires``/``registrar_max_expires`` and the contact cap."""

    min_expires: int
    max_expires: int
    max_contacts: int = MAX_CONTACTS


@dataclass(frozen=True, slots=True)
class Source:
    """Where a REGISTER came from: its transport (``udp``/``tcp``), address and port."""

    transport: str
    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class Refused:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Accepted:
    """Bindings to put and to remove, and the account's live contacts afterwards."""

    put: tuple[Binding, ...]
    removed: tuple[Binding, ...]
    current: tuple[Binding, ...]
    #: The Path the 200 echoes (the request's, when it said ``Supported: path``), or "".
    path: str = ""

    def headers(self, now: float) -> list[tuple[str, str]]:
        """The 200's header fields: one Contact per live binding with the seconds it has
        left (10.3 step 8), the Path stored when the client supports it (RFC 3327 5.3),
        and the Date (a client may correct its clock by it)."""
        out = [("Contact", _contact_value(b, now)) for b in self.current]
        if self.path:
            out.append(("Path", self.path))
        out.append(("Date", formatdate(now, usegmt=True)))
        return out


def _contact_value(binding: Binding, now: float) -> str:
    q = "" if binding.q == 1.0 else f";q={binding.q:g}"
    return f"<{binding.contact}>;expires={binding.expires_in(now)}{q}"


def _delta(text: str) -> int | None:
    """delta-seconds (digits only), capped at 2**32-1; None when it is not one."""
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    return min(int(text), _MAX_DELTA)


def _q(text: str | None) -> float | None:
    """A ``q`` parameter: 0 to 1, at most three decimals (RFC 3261 20.10); 1 when absent."""
    if text is None:
        return 1.0
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 and len(text) <= 5 else None


def decide(
    request: Request,
    account_id: str,
    existing: Mapping[str, Binding],
    source: Source,
    now: float,
    limits: Limits,
    *,
    user_agent: str = "",
    credentials: str = "",
    path_from: str | None = None,
) -> Accepted | Refused:
    """What an authenticated REGISTER for ``account_id`` does to its bindings.

    ``existing`` is the account's bindings by contact (expired ones may be among them: they
    count as absent). ``now`` is wall-clock seconds. ``credentials`` is the fingerprint of
    the account's credentials the request passed (``registrar.credentials``), carried by
    the bindings it puts. ``path_from``: the trusted proxy the REGISTER came from, the only
    source whose Path is believed (None: the Path is ignored).
    """
    call_id = request.call_id or ""
    cseq = request.cseq
    if cseq is None:
        return Refused(400, "Missing CSeq")
    default = limits.max_expires
    header = request.headers.get("Expires")
    if header is not None:
        parsed = _delta(header)
        if parsed is None:
            return Refused(400, "Invalid Expires")
        default = parsed
    live = {c: b for c, b in existing.items() if b.live(now)}

    def stale(binding: Binding | None) -> bool:
        return binding is not None and binding.call_id == call_id and cseq.seq <= binding.cseq

    if request.contact_is_wildcard:
        if header is None or default != 0:
            return Refused(400, "Contact: * needs Expires: 0")
        if any(stale(b) for b in live.values()):
            return Refused(400, "CSeq out of order")
        return Accepted((), tuple(existing.values()), ())
    try:
        contacts: list[NameAddr] = request.contact
    except SipParseError as e:
        return Refused(400, f"Invalid Contact: {e.reason}"[:100])
    if any(str(na.uri) == "*" for na in contacts):
        return Refused(400, "Contact: * must be alone")
    path = "" if path_from is None else _path(request, path_from)
    if isinstance(path, Refused):
        return path

    via = request.top_via
    asked_rport = via is not None and via.rport is not None
    put: dict[str, Binding] = {}
    removed: dict[str, Binding] = {}
    for na in contacts:
        uri = na.uri
        if not isinstance(uri, SipURI):
            return Refused(400, "Contact must be a sip: or sips: URI")
        contact = str(uri)
        if storable(contact) != contact:  # the table could not keep it as it is
            return Refused(400, "Invalid Contact")
        expires = default
        param = na.param("expires")
        if param is not None:
            parsed = _delta(param)
            if parsed is None:
                return Refused(400, "Invalid Contact expires")
            expires = parsed
        q = _q(na.param("q"))
        if q is None:
            return Refused(400, "Invalid Contact q")
        old = existing.get(contact)
        if stale(old):
            return Refused(400, "CSeq out of order")
        if expires == 0:
            put.pop(contact, None)
            if old is not None:
                removed[contact] = old
            continue
        if expires < limits.min_expires:
            return Refused(423, "Interval Too Brief", (("Min-Expires", str(limits.min_expires)),))
        expires = min(expires, limits.max_expires)
        removed.pop(contact, None)
        put[contact] = Binding(
            account_id=account_id,
            contact=contact,
            expires_at=now + expires,
            q=q,
            call_id=call_id,
            cseq=cseq.seq,
            transport=source.transport,
            source_ip=source.ip,
            source_port=source.port,
            nat=reached_behind_nat(uri.host, source.ip, asked_rport),
            # Never before the binding it replaces (a clock stepped back since): the table,
            # the workers and the other nodes keep a contact's latest binding by this.
            registered_at=now if old is None else max(now, old.registered_at),
            user_agent=user_agent,
            credentials=credentials,
            path=path,
        )
    after = {c: b for c, b in live.items() if c not in removed}
    after.update(put)
    if len(after) > limits.max_contacts and len(put) > 0:
        return Refused(403, f"More than {limits.max_contacts} contacts")
    current = sorted(after.values(), key=lambda b: (-b.q, -b.registered_at))
    echo = path if path and _supports_path(request) else ""
    return Accepted(tuple(put.values()), tuple(removed.values()), tuple(current), echo)


def _path(request: Request, proxy: str) -> str | Refused:
    """The REGISTER's Path entries as one field value, each written anew from its parse
    (so the table, the notices and the Route of a call hold one spelling); "" for none.
    Refused: an entry that is no loose route the switch can follow (not a name-addr with a
    ``sip:`` URI carrying ``lr``, a transport other than UDP or TCP, not storable), or a
    first hop other than ``proxy``, the trusted proxy that sent it."""
    entries: list[NameAddr] = []
    for value in request.headers.get_all("Path"):
        try:
            entry = parse_name_addr(value)
        except SipParseError:
            return Refused(400, "Invalid Path")
        uri = entry.uri
        if (
            not isinstance(uri, SipURI)
            or uri.scheme.lower() != "sip"
            or "lr" not in {name.lower() for name in uri.params}
            or (uri.param("transport") or "udp").lower() not in ("udp", "tcp")
        ):
            return Refused(400, "Invalid Path")
        entries.append(entry)
    if not entries:
        return ""
    first = entries[0].uri
    assert isinstance(first, SipURI)
    if host_ip(first.host) != host_ip(proxy):
        return Refused(403, "Path not from the proxy")
    text = ", ".join(str(entry) for entry in entries)
    return text if storable(text) == text else Refused(400, "Invalid Path")


def _supports_path(request: Request) -> bool:
    return any(option.strip().lower() == "path" for option in request.headers.get_all("Supported"))
