"""The registrar for dynamic customers (RFC 3261 10): accounts with ``register = true``.

Such an account REGISTERs its contacts with its digest credentials; the switch keeps them
with their expiry, durable across a restart (the ``registrations`` table of ``[server]
database``). Calls *to* the account go through a gateway with ``address =
"registered:ACCOUNT"``, one branch per live contact; calls *from* it are authorised by the
registration when they come from a live contact's source address. Read in this order:

``bindings``  a binding, the live index, where a NAT'd contact is reached (RFC 3581)
``register``  a REGISTER's effect on an account's bindings, as a pure function
``credentials`` what a binding was registered under, judged against the configuration
``store``     the table, loading it at start, the writer thread
``node_sync`` other nodes' changes on a shared PostgreSQL, as they commit (LISTEN/NOTIFY)
``service``   the stateless 401, digest, applying and answering; the expiry sweep

See docs/registrar.md.
"""

from .bindings import Binding, Registrations, reached_behind_nat
from .register import MAX_CONTACTS, Accepted, Limits, Refused, Source, decide
from .service import SWEEP_INTERVAL, Registrar, has_authorization, screen_register
from .store import REGISTRATIONS_SCHEMA, BindingWriter, load

__all__ = [
    "MAX_CONTACTS",
    "REGISTRATIONS_SCHEMA",
    "SWEEP_INTERVAL",
    "Accepted",
    "Binding",
    "BindingWriter",
    "Limits",
    "Refused",
    "Registrar",
    "Registrations",
    "Source",
    "decide",
    "has_authorization",
    "load",
    "reached_behind_nat",
    "screen_register",
]
