"""smlib.uuids replaces the standard uuid module on the driver path: its text
must be exactly what uuid prints, and fresh uuids must be valid version 4."""

import os
import uuid

import pytest

from smlib import uuids


def test_text_is_uuid_module_text():
    for raw in [bytes(16), b"\xff" * 16, bytes(range(16)), *(os.urandom(16) for _ in range(500))]:
        assert uuids.text(raw) == str(uuid.UUID(bytes=raw))


def test_text_refuses_wrong_length():
    with pytest.raises(ValueError):
        uuids.text(bytes(15))


def test_uuid4_is_random_version_4_rfc_4122():
    seen = {uuids.uuid4() for _ in range(1000)}
    assert len(seen) == 1000
    for text in seen:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_random_bytes_set_only_the_version_and_variant_bits():
    # Over many draws every other bit takes both values: nothing else is fixed.
    draws = [int.from_bytes(uuids.random_bytes(), "big") for _ in range(2000)]
    ones = zeros = 0
    for value in draws:
        ones |= value
        zeros |= ~value
    fixed = ~(ones & zeros) & ((1 << 128) - 1)
    version_bits = 0xF << (128 - 52)        # byte 6, high nibble
    variant_bits = 0x3 << (128 - 66)        # byte 8, top two bits
    assert fixed == version_bits | variant_bits
