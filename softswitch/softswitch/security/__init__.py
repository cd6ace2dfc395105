"""Survival on a public SIP port: who may cost the switch work, and how much.

Scanners, brute-forcers and floods reach any SIP port on the internet within minutes. The
defence is to spend as little as possible on strangers: a blocked source is dropped before
its bytes are parsed, a source that sends too fast is blocked (``pike``), a scanner's
User-Agent is dropped, and a request from a source no account matches gets at most one
stateless answer, no transaction, no CDR row, and a counter instead of a log line each
(``refusals``). ``guard.SourceGuard`` puts these together; the engine asks it at two fixed
points (a packet's source, before parsing; a request, before any transaction).
"""

from .guard import Screen, SourceGuard, gateway_addresses
from .pike import Blocklist, Pike
from .refusals import RefusalCounters

__all__ = ["Blocklist", "Pike", "RefusalCounters", "Screen", "SourceGuard", "gateway_addresses"]
