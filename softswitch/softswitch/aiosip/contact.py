"""aiosip's ``Contact``, ``Uri`` and ``Param``: name-addrs as mutable mappings.

aiosip programs read addresses as nested dictionaries (``message.from_details['uri']['user']``,
``contact['params']['tag']``) and build them with ``Contact.from_header(text)``. These
classes keep that shape, but the text is parsed by ``softswitch.sip`` (RFC 3261's grammar,
escapes and IPv6 included) rather than by aiosip's regular expressions, and they convert to
and from the stack's immutable ``NameAddr`` and ``SipURI`` at the edge of the API.

Kept from aiosip: the keys (``name``, ``uri``, ``params``; a URI's ``scheme``, ``user``,
``password``, ``host``, ``port``, ``params``, ``headers``), ``None`` for absent parts, the
port as an ``int``, and the text ``str()`` gives. Changed, as documented in docs/aiosip.md:
a parameter without a value (``;lr``) is kept with the value ``None`` (aiosip dropped it),
``localhost`` is not rewritten to ``127.0.0.1``, a TCP contact's default port is 5060 (RFC
3261 19.1.2; aiosip said 5080), and two mappings are equal when their contents are.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from softswitch.sip import URI, NameAddr, SipParseError, SipURI, TelURI, parse_name_addr, parse_uri

__all__ = ["Contact", "Param", "Uri"]


def _format_params(params: Mapping[str, Any]) -> str:
    return ";".join(k if v is None else f"{k}={v}" for k, v in params.items())


class Param(MutableMapping[str, Any]):
    """URI or header parameters: ``Param("transport=tcp;lr")``; ``str()`` writes them back."""

    def __init__(self, param: str | Mapping[str, Any] | None = "") -> None:
        self._param: dict[str, Any] = {}
        if isinstance(param, Mapping):
            self._param.update(param)
        elif param:
            for item in param.split(";"):
                name, sep, value = item.strip().partition("=")
                if name:
                    self._param[name] = value if sep else None

    def __str__(self) -> str:
        return _format_params(self._param)

    def __repr__(self) -> str:
        return f"Param({self._param!r})"

    def __getitem__(self, key: str) -> Any:
        return self._param[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._param[key] = value

    def __delitem__(self, key: str) -> None:
        del self._param[key]

    def __len__(self) -> int:
        return len(self._param)

    def __iter__(self) -> Iterator[str]:
        return iter(self._param)


class Uri(MutableMapping[str, Any]):
    """A URI as aiosip's mapping: ``scheme``, ``user``, ``password``, ``host``, ``port``,
    ``params`` (a :class:`Param` or None) and ``headers`` (the text after ``?`` or None)."""

    def __init__(self, uri: str | URI | Mapping[str, Any]) -> None:
        if isinstance(uri, Mapping):
            self._uri: dict[str, Any] = {
                "scheme": "sip",
                "user": None,
                "password": None,
                "host": None,
                "port": None,
                "params": None,
                "headers": None,
            }
            self._uri.update(uri)
            params = self._uri["params"]
            if params is not None and not isinstance(params, Param):
                self._uri["params"] = Param(params) if params else None
            return
        if isinstance(uri, str):
            try:
                uri = parse_uri(uri.strip())
            except SipParseError as exc:
                raise ValueError(f"not a valid URI: {uri!r} ({exc.reason})") from None
        self._uri = _uri_fields(uri)

    @classmethod
    def from_uri(cls, uri: URI) -> Uri:
        return cls(uri)

    def to_uri(self) -> URI:
        """The stack's URI for this mapping (it is parsed again, so edits are checked)."""
        try:
            return parse_uri(str(self))
        except SipParseError as exc:
            raise ValueError(f"not a valid URI: {self!s} ({exc.reason})") from None

    def short_uri(self) -> str:
        """``scheme:user:password@host:port``, without parameters or headers."""
        u = self._uri
        if not u.get("host"):
            raise ValueError("host is a mandatory field")
        text = f"{u.get('scheme') or 'sip'}:"
        if u.get("user"):
            text += str(u["user"])
            if u.get("password"):
                text += f":{u['password']}"
            text += "@"
        text += str(u["host"])
        if u.get("port"):
            text += f":{u['port']}"
        return text

    def optional_params(self) -> str:
        text = ""
        if self._uri.get("params"):
            text += f";{self._uri['params']}"
        if self._uri.get("headers"):
            text += f"?{self._uri['headers']}"
        return text

    def contact_repr(self) -> str:
        return f"<{self}>"

    def __str__(self) -> str:
        return self.short_uri() + self.optional_params()

    def __repr__(self) -> str:
        return f"Uri({str(self)!r})"

    def __getitem__(self, key: str) -> Any:
        return self._uri[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._uri[key] = value

    def __delitem__(self, key: str) -> None:
        del self._uri[key]

    def __len__(self) -> int:
        return len(self._uri)

    def __iter__(self) -> Iterator[str]:
        return iter(self._uri)


def _uri_fields(uri: URI) -> dict[str, Any]:
    if isinstance(uri, SipURI):
        return {
            "scheme": uri.scheme,
            "user": uri.user,
            "password": uri.password,
            "host": uri.host,
            "port": uri.port,
            "params": Param(dict(uri.params)) if uri.params else None,
            "headers": "&".join(f"{k}={v}" for k, v in uri.headers.items()) or None,
        }
    if isinstance(uri, TelURI):
        params = Param(dict(uri.params)) if uri.params else None
        return {
            "scheme": uri.scheme,
            "user": None,
            "password": None,
            "host": uri.number,
            "port": None,
            "params": params,
            "headers": None,
        }
    return {
        "scheme": uri.scheme,
        "user": None,
        "password": None,
        "host": uri.opaque,
        "port": None,
        "params": None,
        "headers": None,
    }


class Contact(MutableMapping[str, Any]):
    """A name-addr (From, To, Contact) as aiosip's mapping of ``name``, ``uri``, ``params``.

    ``Contact({'uri': 'sip:alice@example.com'})`` or ``Contact.from_header(text)``;
    ``str(contact)`` is the header value.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._contact: dict[str, Any] = dict(*args, **kwargs)
        params = self._contact.get("params")
        if not isinstance(params, Param):
            self._contact["params"] = Param(params or "")
        uri = self._contact.get("uri")
        if uri is None:
            raise ValueError("a Contact needs a 'uri'")
        if not isinstance(uri, Uri):
            self._contact["uri"] = Uri(uri)
        self._contact.setdefault("name", None)

    @classmethod
    def from_header(cls, contact: str) -> Contact:
        """Parse a From/To/Contact value; ValueError when it is not one."""
        try:
            name_addr = parse_name_addr(contact.strip())
        except SipParseError as exc:
            raise ValueError(f"Not valid contact address: {exc.reason}") from None
        return cls.from_name_addr(name_addr)

    @classmethod
    def from_name_addr(cls, name_addr: NameAddr) -> Contact:
        return cls(
            name=name_addr.display,
            uri=Uri(name_addr.uri),
            params=Param(dict(name_addr.params)),
        )

    def to_name_addr(self) -> NameAddr:
        """The stack's NameAddr for this mapping (checked by parsing ``str(self)``)."""
        try:
            return parse_name_addr(str(self))
        except SipParseError as exc:
            raise ValueError(f"Not valid contact address: {self!s} ({exc.reason})") from None

    def copy(self) -> Contact:
        """An independent copy (the URI and parameters are copied too)."""
        return Contact.from_header(str(self))

    def add_tag(self) -> None:
        """Give the address a fresh ``tag`` parameter unless it has one (RFC 3261 19.3)."""
        if "tag" not in self._contact["params"]:
            self._contact["params"]["tag"] = secrets.token_hex(8)

    def __str__(self) -> str:
        text = ""
        name = self._contact.get("name")
        if name:
            escaped = str(name).replace("\\", "\\\\").replace('"', '\\"')
            text += f'"{escaped}" '
        uri: Uri = self._contact["uri"]
        text += uri.contact_repr()
        params = self._contact["params"]
        if params:
            text += f";{params}"
        return text

    def __repr__(self) -> str:
        return f"Contact({str(self)!r})"

    @property
    def scheme(self) -> str:
        return str(self._contact["uri"]["scheme"])

    @property
    def transport(self) -> str:
        transport = self._contact["params"].get("transport")
        uri_params = self._contact["uri"]["params"]
        if not transport and uri_params:
            transport = uri_params.get("transport")
        if not transport:
            return "tcp" if self.scheme == "sips" else "udp"
        return str(transport).lower()

    @property
    def host(self) -> str:
        return str(self._contact["uri"]["host"])

    @property
    def port(self) -> int:
        port = self._contact["uri"].get("port")
        if port:
            return int(port)
        return 5061 if self.scheme == "sips" else 5060

    @property
    def details(self) -> tuple[str, str, str, int]:
        return self.scheme, self.transport, self.host, self.port

    def __getitem__(self, key: str) -> Any:
        return self._contact[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._contact[key] = value

    def __delitem__(self, key: str) -> None:
        del self._contact[key]

    def __len__(self) -> int:
        return len(self._contact)

    def __iter__(self) -> Iterator[str]:
        return iter(self._contact)


def as_name_addr(value: Contact | NameAddr | str | None) -> NameAddr | None:
    """Whatever a caller gave for From/To/Contact, as the stack's NameAddr."""
    if value is None or isinstance(value, NameAddr):
        return value
    if isinstance(value, str):
        return Contact.from_header(value).to_name_addr()
    return value.to_name_addr()
