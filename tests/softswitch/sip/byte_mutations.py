"""Random edits of a valid message's bytes, for the property tests that hold the parser (and
its fast paths) to their contract on near-valid input: a few replacements, insertions and
deletions, of bytes that matter to SIP's grammar or of random ones."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st


def mutate(draw: st.DrawFn, seed: bytes, interesting: Sequence[bytes], *, max_edits: int) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_edits))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        chunk = draw(st.one_of(st.sampled_from(interesting), st.binary(min_size=1, max_size=3)))
        if action == "replace":
            data[pos : pos + len(chunk)] = chunk
        elif action == "insert":
            data[pos:pos] = chunk
        else:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)
