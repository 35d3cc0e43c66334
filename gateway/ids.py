"""Generate prefixed, time-ordered ids such as `evt_01JB...`."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _base32(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, index = divmod(number, 32)
        chars.append(_ALPHABET[index])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """Return `prefix_` plus 26 characters: 48 bits of milliseconds, 80 random bits.

    Ids sort by creation time, which keeps index inserts local and lets
    listings page by id.
    """
    millis = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_base32(millis, 10)}{_base32(random_bits, 16)}"
