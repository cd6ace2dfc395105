"""The ``[server] shared_state`` URL: checked here, so a typo is one clear error at start.

    [server]
    shared_state = "redis://127.0.0.1:6379/0"

Accepted forms (redis-py's): ``redis://[[user]:password@]host[:port][/db]``, the same with
``rediss://`` for TLS, and ``unix:///path/to/redis.sock[?db=N]``. The database number is the
path's digits (0 when absent). The URL's password is never logged: :func:`redact` is what
messages show.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from .errors import SharedStateConfigError

__all__ = ["SCHEMES", "check_url", "redact"]

SCHEMES = ("redis", "rediss", "unix")


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{user}:***@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def check_url(url: object, *, key: str = "[server] shared_state") -> str:
    """``url`` if redis-py can connect with it, else :class:`SharedStateConfigError` naming
    the problem (and ``key``, the setting it came from)."""
    if not isinstance(url, str) or not url.strip():
        raise SharedStateConfigError(f"{key}: expected a redis:// URL, got {url!r}")
    shown = redact(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise SharedStateConfigError(f"{key}: {shown!r} is not a valid URL: {e}") from None
    if parts.scheme not in SCHEMES:
        raise SharedStateConfigError(
            f"{key}: {shown!r}: the scheme must be redis://, rediss:// or unix://"
            f" (got {parts.scheme + '://' if parts.scheme else 'none'})"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise SharedStateConfigError(f"{key}: {shown!r}: a unix:// URL needs a socket path")
        return url
    if not parts.hostname:
        raise SharedStateConfigError(f"{key}: {shown!r}: no host")
    if port == 0:
        raise SharedStateConfigError(f"{key}: {shown!r}: port 0")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise SharedStateConfigError(
            f"{key}: {shown!r}: the path must be a database number like /0 (got /{db})"
        )
    return url
