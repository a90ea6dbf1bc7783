"""The record declarations of smlib/vhd/format.py: each field where its name says.

Each value is packed through the library's record and read back at the
named offset with a format of its own, so a field packed in the wrong place
(or a Struct that drifted from the names) fails here, independently of the
golden images.
"""

import struct

import pytest

from smlib.vhd import format as fmt


def test_footer_fields_sit_at_their_named_offsets():
    footer = fmt.Footer(disk_type=fmt.DISK_DIFF, current_size=0x1122334455, original_size=0x66,
                        uuid=bytes(range(16)), timestamp=0x01020304, data_offset=0x0A0B,
                        hidden=1, saved_state=1, creator_version=0x00010003,
                        creator_os=0x4C6E7578, features=2, version=0x00010000,
                        geometry=(0x1234, 0x10, 0x3F))
    buf = footer.pack()
    assert len(buf) == fmt.FOOTER_SIZE
    for offset, code, want in (
            (fmt.F_COOKIE, "8s", fmt.FOOTER_COOKIE), (fmt.F_FEATURES, "I", 2),
            (fmt.F_VERSION, "I", 0x00010000), (fmt.F_DATA_OFFSET, "Q", 0x0A0B),
            (fmt.F_TIMESTAMP, "I", 0x01020304), (fmt.F_CREATOR_APP, "4s", fmt.CREATOR_APP),
            (fmt.F_CREATOR_VERSION, "I", 0x00010003), (fmt.F_CREATOR_OS, "I", 0x4C6E7578),
            (fmt.F_ORIG_SIZE, "Q", 0x66), (fmt.F_CURR_SIZE, "Q", 0x1122334455),
            (fmt.F_GEOMETRY, "H", 0x1234), (fmt.F_HEADS, "B", 0x10),
            (fmt.F_SECTORS_PER_TRACK, "B", 0x3F), (fmt.F_DISK_TYPE, "I", fmt.DISK_DIFF),
            (fmt.F_CHECKSUM, "I", fmt.checksum(buf, fmt.F_CHECKSUM)),
            (fmt.F_UUID, "16s", bytes(range(16))), (fmt.F_SAVED_STATE, "B", 1),
            (fmt.F_HIDDEN, "B", 1), (fmt.F_RESERVED, "426s", bytes(426))):
        assert struct.unpack_from(">" + code, buf, offset)[0] == want, offset
    back = fmt.Footer.unpack(buf, "x", 0)
    assert (back.current_size, back.original_size, back.geometry, back.hidden) == \
        (0x1122334455, 0x66, (0x1234, 0x10, 0x3F), 1)


def test_header_and_locator_fields_sit_at_their_named_offsets():
    locators = [fmt.Locator(fmt.PLAT_W2KU, 512, 76, 0x3000)] + \
        [fmt.Locator() for _ in range(fmt.LOCATOR_COUNT - 1)]
    header = fmt.Header(max_bat=0x1234, table_offset=0x600, parent_uuid=bytes(range(16)),
                        parent_timestamp=0x0A0B0C0D, parent_name="p.vhd", locators=locators)
    buf = header.pack()
    assert len(buf) == fmt.HEADER_SIZE
    for offset, code, want in (
            (fmt.H_COOKIE, "8s", fmt.HEADER_COOKIE), (fmt.H_DATA_OFFSET, "Q", 2 ** 64 - 1),
            (fmt.H_TABLE_OFFSET, "Q", 0x600), (fmt.H_VERSION, "I", fmt.HEADER_VERSION),
            (fmt.H_MAX_BAT, "I", 0x1234), (fmt.H_BLOCK_SIZE, "I", fmt.BLOCK_SIZE),
            (fmt.H_CHECKSUM, "I", fmt.checksum(buf, fmt.H_CHECKSUM)),
            (fmt.H_PARENT_UUID, "16s", bytes(range(16))),
            (fmt.H_PARENT_TIMESTAMP, "I", 0x0A0B0C0D), (fmt.H_RESERVED, "I", 0),
            (fmt.H_PARENT_NAME, "10s", "p.vhd".encode("utf-16-be")),
            (fmt.H_LOCATORS + fmt.L_CODE, "I", fmt.PLAT_W2KU),
            (fmt.H_LOCATORS + fmt.L_SPACE, "I", 512), (fmt.H_LOCATORS + fmt.L_LENGTH, "I", 76),
            (fmt.H_LOCATORS + fmt.L_RESERVED, "I", 0),
            (fmt.H_LOCATORS + fmt.L_OFFSET, "Q", 0x3000),
            (fmt.H_RESERVED2, "256s", bytes(256))):
        assert struct.unpack_from(">" + code, buf, offset)[0] == want, offset
    back = fmt.Header.unpack(buf, "x", fmt.HEADER_OFFSET)
    assert (back.max_bat, back.parent_name, back.locators[0].offset) == (0x1234, "p.vhd", 0x3000)


def test_batmap_header_fields_sit_at_their_named_offsets():
    buf = fmt.BatmapHeader(offset=0x4200, size=3, checksum=0xCAFE).pack()
    assert len(buf) == fmt.SECTOR
    for offset, code, want in ((fmt.B_COOKIE, "8s", fmt.BATMAP_COOKIE),
                               (fmt.B_OFFSET, "Q", 0x4200), (fmt.B_SIZE, "I", 3),
                               (fmt.B_VERSION, "I", fmt.BATMAP_VERSION),
                               (fmt.B_CHECKSUM, "I", 0xCAFE)):
        assert struct.unpack_from(">" + code, buf, offset)[0] == want, offset


def test_a_field_declared_at_the_wrong_offset_is_refused():
    with pytest.raises(AssertionError, match="declared at 5, follows at 4"):
        fmt._record("r", 8, (0, "I"), (5, "I"))
    with pytest.raises(AssertionError, match="8 bytes, not 12"):
        fmt._record("r", 12, (0, "I"), (4, "I"))
