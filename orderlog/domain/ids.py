"""Random ids made per request and per event, without a system call each.

``os.urandom`` (and so ``uuid.uuid4``) releases the GIL around its system call. Under
load another thread takes the GIL at once, and the caller then waits for its turn:
each id made that way costs a round of the GIL, several times the id itself. These
ids must be unique, not secret, so one generator seeded from ``os.urandom`` (and
seeded again in a forked child, which would otherwise repeat its parent's ids) makes
them from 122 random bits per UUID.
"""

from __future__ import annotations

import os
import random

_random = random.Random()  # seeded from os.urandom
os.register_at_fork(after_in_child=_random.seed)

_VERSION_4 = 0x4 << 76  # the version nibble: the UUID's 13th hex digit
_VERSION_MASK = 0xF << 76
_VARIANT_RFC = 0x2 << 62  # the top two bits of byte 8: 10 (RFC 9562 variant)
_VARIANT_MASK = 0x3 << 62


def new_uuid() -> str:
    """A random UUID (version 4) as text."""
    bits = (_random.getrandbits(128) & ~(_VERSION_MASK | _VARIANT_MASK)) | (
        _VERSION_4 | _VARIANT_RFC
    )
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def random_hex(nbytes: int = 16) -> str:
    """``nbytes`` random bytes as lowercase hex."""
    return f"{_random.getrandbits(8 * nbytes):0{2 * nbytes}x}"
