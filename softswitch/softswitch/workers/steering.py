"""Which worker a datagram goes to: a classic BPF program that hashes its Call-ID.

Every worker has a socket in the ``SO_REUSEPORT`` group of each UDP listen address
(``sockets``). Left alone the kernel picks one by a hash of the 4-tuple, so a wholesale
customer's SBC that sends every call from one source ip:port puts all its calls on one worker
and the others idle. This program, attached to the group with ``SO_ATTACH_REUSEPORT_CBPF``,
picks the worker by the Call-ID instead. The Call-ID is the right key: an INVITE's
retransmissions, its CANCEL and the ACK of a failure response carry the INVITE's Call-ID
and must reach the worker that has its transaction; responses and in-dialog requests
(ACK of a 2xx, BYE, re-INVITE) need no steering, they come to the worker's own port named in
its Via and Record-Route.

What the kernel gives the program: the UDP payload from offset 0, its length in ``len``; the
return value is the index of the socket in the group in bind order, and a value past the
group makes the kernel fall back to its 4-tuple hash. A load past the end of the payload
aborts the program with 0 (the first worker), so every load here is guarded by ``len``.
Classic BPF has no loops and no backward jumps, conditional jumps reach 255 instructions
ahead, and a program holds at most 4096 instructions; hence the shape:

1. **Scan** (unrolled, 4 instructions per byte offset, :data:`WINDOW` offsets from
   :data:`FIRST`): the 32-bit word at each offset, letters folded to upper case, is compared
   with ``L-ID`` (the end of ``Call-ID``, any case) and ``\\r\\nI:`` (the compact form).
   Offsets go in chunks of :data:`CHUNK`; a chunk with a hit, or the chunk the datagram
   ends in, goes to step 2. Nothing found in the window: the kernel's hash decides.
2. **Rescan** that one chunk exactly, offset by offset with every load guarded: ``\\nCall-ID``
   (any case, after an LF, so after a CRLF too) then up to two spaces or tabs and ``:``; or
   ``\\r\\ni:`` / ``\\r\\nI:`` (the compact form with a bare LF or a space before the colon
   is not recognised). The first match wins; none (``X-Call-ID:`` or a value with ``l-id``
   in it, alone in its chunk): the kernel's hash decides. ``Call-Info`` is no candidate.
3. **Hash** up to :data:`HASHED` bytes of the value after up to three spaces or tabs, up to
   the first byte at or below 0x20 (the end of the line): ``h = ((h + byte) * K) % p`` from
   ``h = seed``, ``p`` the prime :data:`MODULUS` (65,407: the product stays below 2^32, so
   classic BPF's 32-bit ``BPF_MUL`` then ``BPF_MOD`` compute it exactly), a final mix, then
   ``h % size``; ``K`` and ``seed`` are the :class:`SteeringKey`, immediates of the
   program.

:func:`steered_index` is the same algorithm in Python, the reference the tests hold the
kernel's choice to. A Call-ID found gives the worker by its value alone, whatever the
source and the rest of the message. A Call-ID line that starts past the window (behind many
long Via headers), or after a lone false candidate, leaves the choice to the 4-tuple hash.

**The program is an optimisation, not the guarantee.** :func:`call_id_owner` is the same
search without the window, over the header section (and at least the program's reach), in
Python: each worker computes it for
every datagram its listen sockets get, and hands one that belongs to another worker to that
worker (``handoff``). Whenever the program finds a Call-ID, the owner is the program's
choice (the first Call-ID line the program can match is the first one the owner's search
matches, and the value is hashed alike), so a datagram the kernel steered is handled where
it arrived; the others (a Call-ID past the window, a kernel that refused the program) take
one more hop. An INVITE whose Call-ID is past the window and its short CANCEL therefore
still meet at one worker.

**The key.** With constants known to everyone (those of :meth:`SteeringKey.fixed`) anyone
can find offline, by brute force, a set of Call-IDs that all hash to one of N workers and so
put a whole flood, or a customer's whole traffic, on one worker while the others idle. A
secret seed alone changes nothing: ``h = seed * K^n + sum(b_k * K^(n-k))``, so two Call-IDs
of one length differ by the same amount whatever the seed. Hence a secret multiplier ``K``
(and a secret seed), drawn from ``os.urandom`` by :meth:`SteeringKey.random` once per start
of the switch, in the supervisor before the listen sockets are bound: the same key is in
every group's program and in every worker's hand-off, restarted workers included (they are
forked from the supervisor), so kernel and workers agree on the owner. A switch started
again draws a new key, so a Call-ID's worker is not the same across starts (no call
outlives its switch's workers).

Why modulo a prime. Two distinct hashed values of one length ``n`` (what the hash reads: up
to :data:`HASHED` bytes after up to three blanks) hash alike exactly when ``K`` is a root of
``sum((a_k - b_k) * K^(n-k))``, a polynomial over the field GF(p) that is not zero (each
difference is between -255 and 255, never a multiple of p) and has degree at most
:data:`HASHED` with no constant term: it has at most 31 roots besides 0, so the two collide
for fewer than 32 of the ~65,000 multipliers, whatever the values. Nobody can build
distinct hashed values that share a worker without the key (beyond the ``1 / size`` any two
have of sharing one). Modulo 2^32, as the hash
first was, that failed: ``Z/2^32`` is no field, and some small integer polynomials vanish
there at every odd ``K`` (the coefficients of ``(x^2 - 1)^5 (x^4 - 1)^3 (x^8 - 1)``, between
-27 and 27, are one), so Call-IDs whose bytes differ by them shared a worker under every key.
Multipliers whose powers repeat within 66 (1 and ``p - 1`` among them) are refused, so no
two lengths hashed weigh the seed alike.

What the key does not do. It is a randomised hash, not a cryptographic one:

* the key is per start: a caller learns which worker has a call (the worker's own port is
  in the Record-Route and Via the switch sends), so over one run it can keep the Call-IDs
  that landed on one worker, at a cost of N tries for each, or search for the key with
  enough of them: the hash has only about 16 bits (``h < p``) before the mix and ``%
  size``, and the key about 32 (multiplier and seed), few enough to search offline;
* only what the program can read is hashed, so Call-IDs alike there share a worker whatever
  the key: values whose first :data:`HASHED` bytes are the same (a classic BPF program has
  no loops, so it cannot read a value of any length), and values behind four blanks or more
  or on a folded line (the hash reads nothing of them: every one hashes as the seed). So
  the key stops Call-IDs brute-forced against a known hash, not a sender who makes its
  Call-IDs long with a common start;
* one Call-ID (retransmissions of one request) and datagrams with no Call-ID go to one
  worker whatever the key, as they must: pike and the block list are for those;
* with about 65,000 hash values before ``% size`` the spread is a little less even than
  with 2^32: the fullest of 16 workers gets 2% more than an even share, of 64 6%.

**Size.** The kernel converts the program to eBPF before it checks it, and refuses it with
``ENOMEM`` when the converted program is larger than ``net.core.optmem_max`` (20,480 bytes
by default before Linux 6.9: Debian 12, Ubuntu 22.04/24.04, RHEL 8/9). A word load becomes
about 14 eBPF instructions of 8 bytes; :func:`converted_size_estimate` is that model, held
under :data:`CONVERTED_BUDGET` by a test, so a program that grows is noticed (on Linux
6.18 the program attaches from ``optmem_max`` = 122,200 bytes; the model says 122,232).
"""

from __future__ import annotations

import ctypes
import hashlib
import operator
import re
import secrets
import socket
import struct
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "CHUNK",
    "CONVERTED_BUDGET",
    "FIRST",
    "HASHED",
    "MAX_INSTRUCTIONS",
    "MODULUS",
    "SO_ATTACH_REUSEPORT_CBPF",
    "WINDOW",
    "SteeringKey",
    "attach_call_id_steering",
    "call_id_owner",
    "call_id_program",
    "converted_size_estimate",
    "steered_index",
]

#: ``SO_ATTACH_REUSEPORT_CBPF`` of Linux's asm-generic socket.h (x86, arm, riscv ...).
SO_ATTACH_REUSEPORT_CBPF: Final = 51
#: The kernel's limit on a classic BPF program (BPF_MAXINSNS).
MAX_INSTRUCTIONS: Final = 4096
#: The first scanned offset: no Call-ID line can start in the request line's first bytes.
FIRST: Final = 8
#: Offsets per chunk of the scan (see the module docstring).
CHUNK: Final = 16
#: Chunks of the scan: as many as fit in :data:`MAX_INSTRUCTIONS` with the rest.
CHUNKS: Final = 51
#: Scanned offsets: a Call-ID line starting before about ``FIRST + WINDOW`` is found.
WINDOW: Final = CHUNK * CHUNKS
#: Bytes of the Call-ID value hashed at most.
HASHED: Final = 32

_FOLD: Final = 0xDFDFDFDF  # clears bit 5 of each byte: ASCII letters to upper case
_LONG_CANDIDATE: Final = 0x4C0D4944  # "l-id" folded ("-" & 0xdf is 0x0d)
_COMPACT_CANDIDATE: Final = 0x0D0A491A  # "\r\ni:" folded (":" & 0xdf is 0x1a)
_LONG_MASK: Final = 0xDFFFDFDF  # letters folded, "-" kept
_LONG_EXACT: Final = 0x4C2D4944  # "L-ID"
_LINE_MASK: Final = 0xFFDFDFDF  # LF kept, letters folded
_LINE_EXACT: Final = 0x0A43414C  # "\nCAL"
_COMPACT_MASK: Final = 0xFFFFDFFF  # only the "i" folded
_COMPACT_EXACT: Final = 0x0D0A493A  # "\r\nI:"
_NAME_SPACES: Final = 2  # spaces or tabs allowed between "Call-ID" and ":"
_VALUE_SPACES: Final = 3  # spaces or tabs skipped before the value
#: The hash's modulus: the largest prime ``p`` with ``(h + byte) * K`` below 2^32 for every
#: ``h``, ``K`` below ``p`` and ``byte`` below 256, so the program's 32-bit ``A`` holds the
#: product exactly before it takes ``% p``.
MODULUS: Final = 65407
_FNV_SEED: Final = 0x811C9DC5  # FNV's offset basis and prime, reduced modulo p: the fixed key
_FNV_PRIME: Final = 0x01000193
#: MurmurHash3's 32-bit finaliser (its first ``h ^= h >> 16`` left out: ``h < p < 2^16``):
#: without it the low bits that ``% size`` keeps follow the hash's own too closely, and
#: Call-IDs that differ in a digit or two (SIPp's ``1-<pid>@host``, a counter) cluster on
#: one worker under some keys (16 such Call-IDs all on one of 2 workers for 0.2% of keys
#: with the single multiply-xorshift mix a first version had).
_MIX_1: Final = 0x85EBCA6B
_MIX_2: Final = 0xC2B2AE35
_U32: Final = 0xFFFFFFFF
# Scratch memory cells.
_REM: Final = 0  # bytes from X to the end of the payload
_HASH: Final = 1
_BASE: Final = 2  # X while it is lent to the hash


# -- the key ----------------------------------------------------------------------------

#: ``p - 1 = 2 * 3 * 11 * 991``: a multiplier whose powers cycle through at most 66 values
#: (its multiplicative order divides 66) is refused; every other has an order of 991 or more,
#: more than :data:`HASHED`, so ``K^m != K^n`` for any two lengths hashed.
_SHORT_CYCLE: Final = 66


@dataclass(frozen=True, slots=True)
class SteeringKey:
    """The secret of the Call-ID hash (see the module docstring): ``h = ((h + byte) *
    multiplier) % p`` from ``h = seed``, ``p`` the prime :data:`MODULUS`. Its tables, made
    once with the key, let :func:`call_id_owner` compute the hash as one sum of products on
    every datagram.

    The multiplier is 2 to ``p - 1`` and its powers take at least 991 values: 1 (a plain
    sum of the bytes, the same for every order of them), ``p - 1`` (an alternating sum) and
    the other numbers whose powers repeat within 66 are refused."""

    multiplier: int = field(repr=False)
    seed: int = field(repr=False)
    #: ``powers[n][k]``: the multiplier to the power ``n - k`` modulo ``p``, the weight of
    #: byte ``k`` of ``n`` hashed.
    powers: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)
    #: ``seeded[n]``: the seed's term after ``n`` bytes, ``seed * K^n`` modulo ``p``.
    seeded: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _strong_multiplier(self.multiplier):
            raise ValueError(
                f"a steering multiplier is 2 to {MODULUS - 1} and its powers modulo"
                f" {MODULUS} do not repeat within {_SHORT_CYCLE}"
            )
        if not 0 <= self.seed < MODULUS:
            raise ValueError(f"a steering seed is below {MODULUS}")
        powers = tuple(
            tuple(pow(self.multiplier, n - k, MODULUS) for k in range(n)) for n in range(HASHED + 1)
        )
        seeded = tuple(
            self.seed * pow(self.multiplier, n, MODULUS) % MODULUS for n in range(HASHED + 1)
        )
        object.__setattr__(self, "powers", powers)
        object.__setattr__(self, "seeded", seeded)

    @classmethod
    def fixed(cls) -> SteeringKey:
        """The public constants (FNV's prime and offset basis modulo ``p``): the documented
        reference, for tests and tools that need the same owner on every run; never a
        running switch's."""
        return cls(_FNV_PRIME % MODULUS, _FNV_SEED % MODULUS)

    @classmethod
    def random(cls) -> SteeringKey:
        """A key from 32 bytes of ``os.urandom``: one per start of the switch."""
        return cls.from_secret(secrets.token_bytes(32))

    @classmethod
    def from_secret(cls, secret: bytes) -> SteeringKey:
        """The key ``secret`` stands for (the same on every run: a test's fixed secret
        gives a key it can predict yet not chosen by hand): multiplier and seed from a
        BLAKE2b of it (64 bits each reduced modulo ``p``: no value noticeably likelier),
        drawn again while the multiplier is a refused one."""
        attempt = 0
        while True:
            digest = hashlib.blake2b(
                secret + attempt.to_bytes(4, "big"), digest_size=16, person=b"call-id-steering"
            ).digest()
            multiplier = 2 + int.from_bytes(digest[:8], "big") % (MODULUS - 2)
            if _strong_multiplier(multiplier):
                return cls(multiplier, int.from_bytes(digest[8:], "big") % MODULUS)
            attempt += 1


def _strong_multiplier(multiplier: int) -> bool:
    return 2 <= multiplier < MODULUS and pow(multiplier, _SHORT_CYCLE, MODULUS) != 1


# -- the reference -----------------------------------------------------------------------


def _word(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big")


def steered_index(payload: bytes, size: int, key: SteeringKey) -> int | None:
    """The socket index the program made with ``key`` returns for ``payload`` in a group of
    ``size``, or None when it returns ``size`` (no Call-ID found: the kernel's 4-tuple hash
    decides)."""
    length = len(payload)
    for chunk in range(CHUNKS):
        start = FIRST + chunk * CHUNK
        if length < start + CHUNK + 3:
            return _rescan(payload, start, size, key)
        for offset in range(start, start + CHUNK):
            if _word(payload, offset) & _FOLD in (_LONG_CANDIDATE, _COMPACT_CANDIDATE):
                return _rescan(payload, start, size, key)
    return None


def _rescan(payload: bytes, start: int, size: int, key: SteeringKey) -> int | None:
    length = len(payload)
    for offset in range(start, start + CHUNK):
        if offset + 4 > length:
            return None
        word = _word(payload, offset)
        if word & _COMPACT_MASK == _COMPACT_EXACT:
            return _value(payload, offset + 4, size, key)
        if word & _LONG_MASK == _LONG_EXACT and _word(payload, offset - 4) & _LINE_MASK == (
            _LINE_EXACT
        ):
            at = _skip_spaces(payload, offset + 4, _NAME_SPACES)
            if at >= length or payload[at] != ord(":"):
                return None
            return _value(payload, at + 1, size, key)
    return None


def _skip_spaces(payload: bytes, at: int, most: int) -> int:
    for _ in range(most):
        if at < len(payload) and payload[at] in b" \t":
            at += 1
    return at


def _value(payload: bytes, at: int, size: int, key: SteeringKey) -> int:
    at = _skip_spaces(payload, at, _VALUE_SPACES)
    value = key.seed
    for byte in payload[at : at + HASHED]:
        if byte <= 0x20:
            break
        value = (value + byte) * key.multiplier % MODULUS
    return _finalised(value) % size


def _finalised(value: int) -> int:
    """The finaliser of ``_MIX_1`` and ``_MIX_2``, as the program computes it."""
    value = (value * _MIX_1) & _U32
    value ^= value >> 13
    value = (value * _MIX_2) & _U32
    return value ^ (value >> 16)


# -- the owner: the reference without the window ------------------------------------------

#: After ``Call-ID`` (matched folded): up to two spaces or tabs and ``:``, then the value as
#: ``_value`` reads it (up to three spaces or tabs skipped, up to :data:`HASHED` bytes above
#: 0x20); after ``\r\ni:``, the value alone.
_NAME_END: Final = re.compile(rb"[ \t]{0,2}:[ \t]{0,3}([\x21-\xff]{0,%d})" % HASHED)
_VALUE: Final = re.compile(rb"[ \t]{0,3}([\x21-\xff]{0,%d})" % HASHED)


#: Bytes covering every word the program's scan and rescan read: a Call-ID the program can
#: find lies wholly in this prefix.
_REACH: Final = FIRST + CHUNK * CHUNKS + 4


def _header_end(payload: bytes) -> int:
    """The end of the header section (after its blank line); the datagram's without one
    (a message with bare LFs is searched whole, a superset)."""
    end = payload.find(b"\n\r\n", _REACH - 8)
    return len(payload) if end < 0 else end + 3


def call_id_owner(payload: bytes, size: int, key: SteeringKey) -> int | None:
    """The index of the worker that owns ``payload`` among ``size``: the hash of its Call-ID
    value with ``key``; None when it has no Call-ID line.

    The same search as the program's (:func:`steered_index`) but over the program's reach
    and the whole header section rather than the program's window: the first ``\nCall-ID``
    (any case) followed by its colon, or ``\r\ni:``, at or after :data:`FIRST`, so
    whenever the program finds a Call-ID this is its choice. In a SIP message the first
    match is the Call-ID header (a header line starts after an LF, and a value holds no LF).
    A body past the program's reach (SDP) is neither searched nor copied.

    Every worker runs this on every datagram of its listen sockets, so it is cheap where
    the Call-ID is within the program's reach (nearly always): ``bytes.lower`` of that
    prefix alone, ``find`` in C (the compact form only before the first long one), the hash
    as one sum of products with the key's powers: ``h = seed * K^n + sum(b_k * K^(n - k))``,
    k from 0, modulo ``p`` once at the end (the same as at every byte). Only when the
    prefix has no Call-ID are the rest of the header section folded and searched."""
    folded = payload[:_REACH].lower()  # ASCII letters only, as the program folds them
    whole = len(payload) <= _REACH
    long_at = folded.find(b"\ncall-id", FIRST - 4)  # "L-ID" at FIRST or after
    while True:
        if long_at < 0 and not whole:  # past the prefix: the rest of the header section
            end = _REACH if folded.find(b"\n\r\n") >= 0 else _header_end(payload)
            whole = True
            if end > _REACH:
                folded = payload[:end].lower()
                long_at = folded.find(b"\ncall-id", _REACH - 8)  # one cut by the prefix
                continue
        # Only a compact form before the first long one can come first.
        compact_at = folded.find(b"\r\ni:", FIRST, len(folded) if long_at < 0 else long_at)
        if compact_at >= 0:
            found = _VALUE.match(payload, compact_at + 4)
        elif long_at >= 0:
            found = _NAME_END.match(payload, long_at + 8)
            if found is None:  # "Call-ID" and no colon: on to the next
                long_at = folded.find(b"\ncall-id", long_at + 1)
                continue
        else:
            return None
        assert found is not None
        value = found.group(1)
        n = len(value)
        products: int = sum(map(operator.mul, value, key.powers[n]))
        hashed = (key.seeded[n] + products) % MODULUS
        return _finalised(hashed) % size


# -- the program -----------------------------------------------------------------------

# Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
_LD_W_ABS: Final = 0x20
_LD_W_IND: Final = 0x40
_LD_B_IND: Final = 0x50
_LD_IMM: Final = 0x00
_LD_MEM: Final = 0x60
_LD_LEN: Final = 0x80
_LDX_IMM: Final = 0x01
_LDX_MEM: Final = 0x61
_ST: Final = 0x02
_STX: Final = 0x03
_ADD_K: Final = 0x04
_ADD_X: Final = 0x0C
_SUB_X: Final = 0x1C
_MUL_K: Final = 0x24
_AND_K: Final = 0x54
_RSH_K: Final = 0x74
_MOD_K: Final = 0x94
_XOR_X: Final = 0xAC
_JA: Final = 0x05
_JEQ_K: Final = 0x15
_JGT_K: Final = 0x25
_JGE_K: Final = 0x35
_JGT_X: Final = 0x2D
_RET_K: Final = 0x06
_RET_A: Final = 0x16
_TAX: Final = 0x07
_TXA: Final = 0x87

Instruction = tuple[int, int, int, int]  # struct sock_filter: code, jt, jf, k


@dataclass
class _Assembler:
    """Instructions with labels for jump targets, resolved at the end."""

    code: list[tuple[int, str | None, str | None, int | str]] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)

    def op(self, code: int, k: int = 0) -> None:
        self.code.append((code, None, None, k))

    def jump(self, code: int, k: int, jt: str | None = None, jf: str | None = None) -> None:
        """A conditional jump; a target of None is the next instruction."""
        self.code.append((code, jt, jf, k))

    def ja(self, label: str) -> None:
        self.code.append((_JA, None, None, label))

    def label(self, name: str) -> None:
        assert name not in self.labels, name
        self.labels[name] = len(self.code)

    def assemble(self) -> list[Instruction]:
        out: list[Instruction] = []
        for at, (code, jt, jf, k) in enumerate(self.code):
            if isinstance(k, str):  # ja: a 32-bit offset
                out.append((code, 0, 0, self._offset(at, k, 1 << 32)))
            else:
                jt_off = 0 if jt is None else self._offset(at, jt, 256)
                jf_off = 0 if jf is None else self._offset(at, jf, 256)
                out.append((code, jt_off, jf_off, k))
        return out

    def _offset(self, at: int, label: str, limit: int) -> int:
        offset = self.labels[label] - at - 1
        if not 0 <= offset < limit:
            raise ValueError(f"jump from {at} to {label!r} out of reach ({offset})")
        return offset


def call_id_program(size: int, key: SteeringKey) -> list[Instruction]:
    """The program for a group of ``size`` sockets hashing with ``key`` (``struct
    sock_filter`` tuples)."""
    if size < 1:
        raise ValueError(f"a reuse-port group has at least one socket, not {size}")
    a = _Assembler()
    _scan(a, size)
    _rescan_program(a, size)
    _value_program(a, size, key)
    program = a.assemble()
    assert len(program) <= MAX_INSTRUCTIONS, len(program)
    return program


def _scan(a: _Assembler, size: int) -> None:
    for chunk in range(CHUNKS):
        start = FIRST + chunk * CHUNK
        hit, after = f"chunk{chunk}", f"after{chunk}"
        a.op(_LD_LEN)
        a.jump(_JGE_K, start + CHUNK + 3, jf=hit)  # every word of the chunk in the payload
        for offset in range(start, start + CHUNK):
            a.op(_LD_W_ABS, offset)
            a.op(_AND_K, _FOLD)
            a.jump(_JEQ_K, _LONG_CANDIDATE, jt=hit)
            last = offset == start + CHUNK - 1
            a.jump(_JEQ_K, _COMPACT_CANDIDATE, jt=hit, jf=after if last else None)
        a.label(hit)
        a.op(_LDX_IMM, start - 4)  # X + 4 is the chunk's start: the rescan looks back 4
        a.ja("rescan")
        a.label(after)
    a.op(_RET_K, size)


def _rescan_program(a: _Assembler, size: int) -> None:
    a.label("rescan")
    a.op(_LD_LEN)
    a.jump(_JGT_X, 0, jf="none")
    a.op(_SUB_X)
    a.op(_ST, _REM)
    for k in range(CHUNK):  # the word at X + k + 4 is the one the scan read
        a.op(_LD_MEM, _REM)
        a.jump(_JGE_K, k + 8, jf="none")
        a.op(_LD_W_IND, k + 4)
        a.op(_AND_K, _COMPACT_MASK)
        a.jump(_JEQ_K, _COMPACT_EXACT, jt=f"compact{k}")
        a.op(_AND_K, _LONG_MASK)
        a.jump(_JEQ_K, _LONG_EXACT, jf=f"next{k}")
        a.op(_LD_W_IND, k)
        a.op(_AND_K, _LINE_MASK)
        a.jump(_JEQ_K, _LINE_EXACT, jf=f"next{k}")
        a.op(_LD_IMM, k + 8)  # just after "Call-ID"
        a.ja("name")
        a.label(f"compact{k}")
        a.op(_LD_IMM, k + 8)  # just after "i:"
        a.ja("value")
        a.label(f"next{k}")
    a.label("none")
    a.op(_RET_K, size)


def _skip_spaces_program(a: _Assembler, most: int, tag: str) -> None:
    """X moves past up to ``most`` spaces or tabs (X stays within the payload)."""
    end = f"{tag}-end"
    for n in range(most):
        step = f"{tag}-{n}"
        a.op(_LD_LEN)
        a.op(_SUB_X)
        a.jump(_JEQ_K, 0, jt=end)
        a.op(_LD_B_IND, 0)
        a.jump(_JEQ_K, ord(" "), jt=step)
        a.jump(_JEQ_K, ord("\t"), jf=end)
        a.label(step)
        a.op(_TXA)
        a.op(_ADD_K, 1)
        a.op(_TAX)
    a.label(end)


def _value_program(a: _Assembler, size: int, key: SteeringKey) -> None:
    # After "Call-ID": A is its end relative to X; spaces, then ":".
    a.label("name")
    a.op(_ADD_X)
    a.op(_TAX)
    _skip_spaces_program(a, _NAME_SPACES, "name-spaces")
    a.op(_LD_LEN)
    a.op(_SUB_X)
    a.jump(_JEQ_K, 0, jt="no-colon")
    a.op(_LD_B_IND, 0)
    a.jump(_JEQ_K, ord(":"), jt="colon")
    a.label("no-colon")
    a.op(_RET_K, size)
    a.label("colon")
    a.op(_LD_IMM, 1)
    # The value: A is its start relative to X.
    a.label("value")
    a.op(_ADD_X)
    a.op(_TAX)
    _skip_spaces_program(a, _VALUE_SPACES, "value-spaces")
    a.op(_LD_LEN)
    a.op(_SUB_X)
    a.op(_ST, _REM)
    a.op(_STX, _BASE)
    a.op(_LD_IMM, key.seed)
    a.op(_ST, _HASH)
    half = HASHED // 2
    for n in range(HASHED):
        done = "done-early" if n < half else "done"
        a.op(_LD_MEM, _REM)
        a.jump(_JGT_K, n, jf=done)
        a.op(_LD_B_IND, n)
        a.jump(_JGT_K, 0x20, jf=done)
        a.op(_LDX_MEM, _HASH)
        a.op(_ADD_X)
        a.op(_MUL_K, key.multiplier)  # below 2^32: see MODULUS
        a.op(_MOD_K, MODULUS)
        a.op(_ST, _HASH)
        a.op(_LDX_MEM, _BASE)
        if n == half - 1:  # a trampoline: the first half's exits are too far from "done"
            a.ja("second-half")
            a.label("done-early")
            a.ja("done")
            a.label("second-half")
    a.label("done")
    a.op(_LD_MEM, _HASH)  # ``_finalised``
    a.op(_MUL_K, _MIX_1)
    a.op(_TAX)
    a.op(_RSH_K, 13)
    a.op(_XOR_X)
    a.op(_MUL_K, _MIX_2)
    a.op(_TAX)
    a.op(_RSH_K, 16)
    a.op(_XOR_X)
    a.op(_MOD_K, size)
    a.op(_RET_A)


# -- its size once converted ---------------------------------------------------------------

#: The bytes ``net.core.optmem_max`` allows by default since Linux 6.9 (128 KiB): the
#: converted program must stay under it, or a stock kernel refuses it too.
CONVERTED_BUDGET: Final = 131072
#: eBPF instructions per classic instruction where the conversion (``bpf_convert_filter``,
#: ``convert_bpf_ld_abs`` in net/core/filter.c) makes more than one: an absolute load is an
#: inline bounds check and load with a byte swap, then a helper call as the slow path; an
#: indirect load is the helper call alone; a return sets A and exits.
_CONVERTED_ABS: Final = 14  # a word or half-word; one fewer for a byte, and with k = 0
_CONVERTED_IND: Final = 9  # one fewer with k = 0
_CONVERTED_RET: Final = 2
#: A division or modulo by a constant is one eBPF ALU32 instruction, mapped as is: the
#: classic checker has already refused a zero constant, so only the forms by X get the
#: conversion's guard against a zero divisor (four more instructions, none here). Measured:
#: the 32 of the hash's ``% p`` grew the smallest ``optmem_max`` the kernel takes by 256.
_CONVERTED_DIV_MOD_K: Final = 1
_CONVERTED_PROLOGUE: Final = 6  # A and X cleared, the context and packet registers set
_EBPF_INSTRUCTION: Final = 8  # bytes
_PROG_HEADER: Final = 128  # struct bpf_prog before its instructions (about 80 bytes)


def converted_size_estimate(program: list[Instruction]) -> int:
    """Bytes of ``program`` once the kernel converted it to eBPF, the size it holds to
    ``net.core.optmem_max`` when the program is attached (an estimate from the model above;
    a two-target conditional jump counts two)."""
    count = _CONVERTED_PROLOGUE
    for code, jt, jf, k in program:
        cls, mode, size = code & 0x07, code & 0xE0, code & 0x18
        if cls == 0x00 and mode == 0x20:  # BPF_LD | BPF_ABS
            count += _CONVERTED_ABS - (size == 0x10) - (k == 0)
        elif cls == 0x00 and mode == 0x40:  # BPF_LD | BPF_IND
            count += _CONVERTED_IND - (k == 0)
        elif cls == 0x06:  # BPF_RET
            count += _CONVERTED_RET
        elif cls == 0x04 and (code & 0xF8) in (0x30, 0x90):  # BPF_ALU | BPF_DIV/BPF_MOD | BPF_K
            count += _CONVERTED_DIV_MOD_K
        elif cls == 0x05 and code != _JA and jt and jf:
            count += 2
        else:
            count += 1
    return _PROG_HEADER + count * _EBPF_INSTRUCTION


# -- attaching -------------------------------------------------------------------------


def attach_call_id_steering(sock: socket.socket, size: int, key: SteeringKey) -> None:
    """Attach the program with ``key`` to the reuse-port group ``sock`` belongs to (``size``
    sockets, all bound); ``OSError`` when the kernel refuses it."""
    program = call_id_program(size, key)
    filters = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }; the kernel
    # copies the program during the call, `filters` only has to outlive it.
    fprog = struct.pack("HP", len(program), ctypes.addressof(filters))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
