"""Damaged and hostile VHD images, made by code (no checked-in blobs).

Each entry of ``CORPUS`` damages, in place, a valid image at ``path`` (a
regular file or a block device such as an LV's loop window): the way a
failing disk, a buggy tool or an attacker with write access to the SR
leaves it. The structures are located through the image as it is before
the damage; every header or footer rewritten on purpose gets a correct
checksum, so the damage is in what the fields say, not a checksum slip.

Entries need an image with two allocated blocks (the scenarios write
blocks 0 and 2); ``DIFF_ONLY`` ones a differencing image; ``FILE_ONLY``
ones a regular file (a container cannot be truncated by writing to it).
Used by tests/vhd (the library refuses each at open, before any write)
and by tests/helpers/hostile_scenarios.py (every driver stays usable).
"""

from __future__ import annotations

import os
import struct
import uuid as uuidlib
from typing import Callable

from smlib import vhd
from smlib.vhd import format as fmt


class Where:
    """Offsets of an image's structures, read before it is damaged."""

    def __init__(self, path: str) -> None:
        with vhd.open_image(path) as img:
            self.footer_pos = img.footer_pos
            self.header_offset = img.header_offset
            self.table_offset = img.header.table_offset
            self.bat = list(img.bat)
            self.allocated = img.allocated_blocks()


def read_at(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def write_at(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sealed(buf: bytearray, csum_at: int) -> bytes:
    struct.pack_into(">I", buf, csum_at, 0)
    struct.pack_into(">I", buf, csum_at, fmt.checksum(bytes(buf), csum_at))
    return bytes(buf)


def edit_footers(path: str, at: int, packed: bytes) -> None:
    """Set a footer field in both copies, checksums kept right."""
    w = Where(path)
    for pos in (0, w.footer_pos):
        buf = bytearray(read_at(path, pos, fmt.FOOTER_SIZE))
        buf[at:at + len(packed)] = packed
        write_at(path, pos, _sealed(buf, fmt.F_CHECKSUM))


def edit_header(path: str, at: int, packed: bytes) -> None:
    """Set a header field, checksum kept right."""
    hoff = Where(path).header_offset
    buf = bytearray(read_at(path, hoff, fmt.HEADER_SIZE))
    buf[at:at + len(packed)] = packed
    write_at(path, hoff, _sealed(buf, fmt.H_CHECKSUM))


def flip(path: str, offset: int) -> None:
    byte = read_at(path, offset, 1)[0]
    write_at(path, offset, bytes([byte ^ 0x10]))


def set_bat(path: str, index: int, sector: int) -> None:
    write_at(path, Where(path).table_offset + 4 * index, struct.pack(">I", sector))


# ------------------------------------------------------------------ entries

def footer_checksum(path: str) -> None:
    w = Where(path)
    for pos in (0, w.footer_pos):
        flip(path, pos + fmt.F_CURR_SIZE + 5)


def header_checksum(path: str) -> None:
    flip(path, Where(path).header_offset + fmt.H_MAX_BAT + 3)


def truncated(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def bat_past_eof(path: str) -> None:
    set_bat(path, Where(path).allocated[-1], 0x00FFFFF0)


def bat_into_header(path: str) -> None:
    """Issue 10 item 2: a block "at sector 0": a write to it lands on the
    footer copy, the header and the BAT."""
    set_bat(path, Where(path).allocated[-1], 0)


def overlapping_blocks(path: str) -> None:
    w = Where(path)
    first, second = w.allocated[:2]
    set_bat(path, second, w.bat[first] + 8)


def block_size_512(path: str) -> None:
    edit_header(path, fmt.H_BLOCK_SIZE, struct.pack(">I", 512))


def size_2_pow_50(path: str) -> None:
    edit_footers(path, fmt.F_CURR_SIZE, struct.pack(">Q", 1 << 50))


def disk_type_2(path: str) -> None:
    edit_footers(path, fmt.F_DISK_TYPE, struct.pack(">I", fmt.DISK_FIXED))


def huge_data_offset(path: str) -> None:
    edit_footers(path, fmt.F_DATA_OFFSET, struct.pack(">Q", 1 << 60))


def absurd_max_bat(path: str) -> None:
    """Issue 10 item 8: a table of 2^29 entries (2 GiB), far more than a
    2 TiB disk needs."""
    edit_header(path, fmt.H_MAX_BAT, struct.pack(">I", 1 << 29))


def locator_outside(path: str) -> None:
    """Every parent locator names a file outside the SR."""
    with vhd.open_image(path) as img:
        locators = [loc for loc in img.header.locators if loc.code in fmt.SNAPSHOT_LOCATORS]
    for loc in locators:
        payload = fmt.encode_locator(loc.code, "../../../etc/passwd")
        write_at(path, loc.offset, payload.ljust(loc.space, b"\0"))
    hoff = Where(path).header_offset
    buf = bytearray(read_at(path, hoff, fmt.HEADER_SIZE))
    for i in range(fmt.LOCATOR_COUNT):
        at = fmt.H_LOCATORS + i * fmt.LOCATOR_SIZE
        if struct.unpack_from(">I", buf, at)[0] in fmt.SNAPSHOT_LOCATORS:
            code = struct.unpack_from(">I", buf, at)[0]
            length = len(fmt.encode_locator(code, "../../../etc/passwd"))
            struct.pack_into(">I", buf, at + fmt.L_LENGTH, length)
    write_at(path, hoff, _sealed(buf, fmt.H_CHECKSUM))


def parent_uuid_mismatch(path: str) -> None:
    edit_header(path, fmt.H_PARENT_UUID, uuidlib.uuid4().bytes)


CORPUS: dict[str, Callable[[str], None]] = {
    "footer checksum": footer_checksum,
    "header checksum": header_checksum,
    "truncated": truncated,
    "BAT past EOF": bat_past_eof,
    "BAT into header": bat_into_header,
    "overlapping blocks": overlapping_blocks,
    "block size 512": block_size_512,
    "size 2^50": size_2_pow_50,
    "disk type 2": disk_type_2,
    "huge data offset": huge_data_offset,
    "absurd max_bat": absurd_max_bat,
    "parent locator outside": locator_outside,
    "parent uuid mismatch": parent_uuid_mismatch,
}
DIFF_ONLY = frozenset({"parent locator outside", "parent uuid mismatch"})
FILE_ONLY = frozenset({"truncated"})
