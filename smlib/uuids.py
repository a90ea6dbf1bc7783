"""Random (version 4) uuids and their canonical text, without ``import uuid``.

The standard module imports ``platform`` and more (4-9 ms per driver call);
the drivers only need fresh random uuids and the text form of 16 raw bytes.
The text is exactly ``str(uuid.UUID(bytes=raw))``: lowercase 8-4-4-4-12 hex.
"""

import os

VERSION_BYTE = 6        # high nibble: the version (4 = random)
VARIANT_BYTE = 8        # top two bits: the RFC 4122 variant (0b10)


def random_bytes() -> bytes:
    """16 random bytes with the version-4 and RFC 4122 variant bits set."""
    raw = bytearray(os.urandom(16))
    raw[VERSION_BYTE] = (raw[VERSION_BYTE] & 0x0F) | 0x40
    raw[VARIANT_BYTE] = (raw[VARIANT_BYTE] & 0x3F) | 0x80
    return bytes(raw)


def text(raw: bytes) -> str:
    """The canonical text of 16 uuid bytes (big-endian field order)."""
    if len(raw) != 16:
        raise ValueError(f"a uuid is 16 bytes, not {len(raw)}")
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid4() -> str:
    """A fresh random uuid as text, like ``str(uuid.uuid4())``."""
    return text(random_bytes())


_HEX = frozenset("0123456789abcdefABCDEF")
_DASHES = (8, 13, 18, 23)


def is_uuid_text(value: str) -> bool:
    """8-4-4-4-12 hex digits, either case: safe in a path or on a command line.
    (Checked by hand: compiling a regex costs a driver call ~2 ms.)"""
    return len(value) == 36 and all(
        (c == "-") if i in _DASHES else (c in _HEX) for i, c in enumerate(value))
