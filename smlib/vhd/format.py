"""VHD on-disk structures (blktap dialect): constants, pack and unpack.

Every integer is big-endian. Each record (footer, dynamic header, parent
locator entry, batmap header) is one ``struct.Struct`` built from its
fields' named offsets in order, so the layout is the declaration (as in
blktap's ``struct hd_ftr``): ``_record`` checks every offset against the
position the fields before it give, and the size of the whole. Nothing
here does I/O; sizes and rounding live in geometry.py. The structures are
plain classes with ``__slots__``: ``dataclasses`` costs every driver call
about 5 ms of import (it pulls in ``inspect``).
"""

import struct
from typing import List, Optional, Tuple

from smlib.uuids import text as uuid_text

from .errors import VHDError
from .geometry import BLOCK_SIZE, FOOTER_SIZE, HEADER_OFFSET, HEADER_SIZE, SECTOR, TABLE_OFFSET

VHD_EPOCH = 946684800                 # 2000-01-01T00:00:00Z in Unix time
UNALLOCATED = 0xFFFFFFFF

DISK_FIXED = 2
DISK_DYNAMIC = 3
DISK_DIFF = 4


def _record(name: str, size: int, *fields: "Tuple[int, str]") -> struct.Struct:
    """The Struct of a record given as (offset, format code) pairs in order."""
    codes = ">"
    for offset, code in fields:
        at = struct.calcsize(codes)
        if offset != at:
            raise AssertionError(f"{name}: a field is declared at {offset}, follows at {at}")
        codes += code
    if struct.calcsize(codes) != size:
        raise AssertionError(f"{name}: {struct.calcsize(codes)} bytes, not {size}")
    return struct.Struct(codes)


_CHECKSUM = struct.Struct(">I")       # the checksum field, rewritten once the rest is packed

# ---- footer (512 bytes, at offset 0 and at the end of data) ----
FOOTER_COOKIE = b"conectix"
FOOTER_FEATURES = 2
FOOTER_VERSION = 0x00010000
CREATOR_APP = b"tap\0"
CREATOR_VERSION = 0x00010003          # tap 1.3: has a batmap
CREATOR_OS = 0
F_COOKIE = 0
F_FEATURES = 8
F_VERSION = 12
F_DATA_OFFSET = 16
F_TIMESTAMP = 24
F_CREATOR_APP = 28
F_CREATOR_VERSION = 32
F_CREATOR_OS = 36
F_ORIG_SIZE = 40
F_CURR_SIZE = 48
F_GEOMETRY = 56                       # cylinders (16 bits), heads, sectors per track
F_HEADS = 58
F_SECTORS_PER_TRACK = 59
F_DISK_TYPE = 60
F_CHECKSUM = 64
F_UUID = 68
F_SAVED_STATE = 84
F_HIDDEN = 85                         # blktap's own field
F_RESERVED = 86
FOOTER = _record(
    "footer", FOOTER_SIZE,
    (F_COOKIE, "8s"), (F_FEATURES, "I"), (F_VERSION, "I"), (F_DATA_OFFSET, "Q"),
    (F_TIMESTAMP, "I"), (F_CREATOR_APP, "4s"), (F_CREATOR_VERSION, "I"), (F_CREATOR_OS, "I"),
    (F_ORIG_SIZE, "Q"), (F_CURR_SIZE, "Q"), (F_GEOMETRY, "H"), (F_HEADS, "B"),
    (F_SECTORS_PER_TRACK, "B"), (F_DISK_TYPE, "I"), (F_CHECKSUM, "I"), (F_UUID, "16s"),
    (F_SAVED_STATE, "B"), (F_HIDDEN, "B"), (F_RESERVED, "426s"))

# ---- parent locator entry (24 bytes; eight in the header) ----
L_CODE = 0
L_SPACE = 4
L_LENGTH = 8
L_RESERVED = 12
L_OFFSET = 16
LOCATOR_SIZE = 24
LOCATOR = _record("parent locator", LOCATOR_SIZE, (L_CODE, "I"), (L_SPACE, "I"),
                  (L_LENGTH, "I"), (L_RESERVED, "I"), (L_OFFSET, "Q"))
LOCATOR_COUNT = 8
PLAT_NONE = 0
PLAT_MACX = 0x4D616358                # "MacX": file:// URL, UTF-8
PLAT_W2KU = 0x57326B75                # "W2ku": absolute-or-relative, UTF-16LE
PLAT_W2RU = 0x57327275                # "W2ru": relative, UTF-16LE
SNAPSHOT_LOCATORS = (PLAT_MACX, PLAT_W2KU, PLAT_W2RU)

# ---- dynamic header (1024 bytes at footer.data_offset) ----
HEADER_COOKIE = b"cxsparse"
HEADER_VERSION = 0x00010000
H_COOKIE = 0
H_DATA_OFFSET = 8
H_TABLE_OFFSET = 16
H_VERSION = 24
H_MAX_BAT = 28
H_BLOCK_SIZE = 32
H_CHECKSUM = 36
H_PARENT_UUID = 40
H_PARENT_TIMESTAMP = 56
H_RESERVED = 60
H_PARENT_NAME = 64
PARENT_NAME_SIZE = 512
H_LOCATORS = 576
H_RESERVED2 = 768
HEADER = _record(
    "header", HEADER_SIZE,
    (H_COOKIE, "8s"), (H_DATA_OFFSET, "Q"), (H_TABLE_OFFSET, "Q"), (H_VERSION, "I"),
    (H_MAX_BAT, "I"), (H_BLOCK_SIZE, "I"), (H_CHECKSUM, "I"), (H_PARENT_UUID, "16s"),
    (H_PARENT_TIMESTAMP, "I"), (H_RESERVED, "I"), (H_PARENT_NAME, f"{PARENT_NAME_SIZE}s"),
    (H_LOCATORS, f"{LOCATOR_COUNT * LOCATOR_SIZE}s"), (H_RESERVED2, "256s"))

# ---- blktap batmap header (a sector right after the BAT) ----
BATMAP_COOKIE = b"tdbatmap"
BATMAP_VERSION = 0x00010002
B_COOKIE = 0
B_OFFSET = 8
B_SIZE = 16                           # in sectors
B_VERSION = 20
B_CHECKSUM = 24
B_RESERVED = 28
BATMAP_HEADER = _record("batmap header", SECTOR, (B_COOKIE, "8s"), (B_OFFSET, "Q"),
                        (B_SIZE, "I"), (B_VERSION, "I"), (B_CHECKSUM, "I"),
                        (B_RESERVED, "484s"))
BATMAP_MIN_CREATOR = 0x00010002       # tap >= 1.2 writes a batmap


def checksum(buf: bytes, field_offset: int) -> int:
    """One's complement of the byte sum, the 4-byte checksum field counted as 0."""
    total = sum(buf) - sum(buf[field_offset:field_offset + 4])
    return (~total) & 0xFFFFFFFF


def bytes_checksum(buf: bytes) -> int:
    """One's complement of the byte sum (batmap payload).

    Zero bytes add nothing, so they are dropped first (at C speed): a
    2 TiB image's batmap is 128 KiB, mostly zeros, and summing it byte by
    byte cost every open ~0.3 ms.
    """
    return (~sum(buf.translate(None, b"\0"))) & 0xFFFFFFFF


def _sealed(record: struct.Struct, csum_at: int, *values) -> "Tuple[bytes, int]":
    """The packed record with its checksum filled in, and that checksum."""
    buf = bytearray(record.pack(*values))
    value = checksum(buf, csum_at)
    _CHECKSUM.pack_into(buf, csum_at, value)
    return bytes(buf), value


def _verified(buf: bytes, size: int, cookie: bytes, csum_at: int, what: str, path: str,
              offset: int) -> int:
    """The stored checksum of a structure whose size, cookie and checksum are right."""
    if len(buf) < size:
        raise VHDError(path, offset, f"{what} truncated")
    if buf[:len(cookie)] != cookie:
        raise VHDError(path, offset, f"bad {what} cookie")
    (stored,) = _CHECKSUM.unpack_from(buf, csum_at)
    if stored != checksum(buf, csum_at):
        raise VHDError(path, offset, f"bad {what} checksum")
    return stored


def vhd_time(unix_time: float) -> int:
    """Seconds since the VHD epoch, clamped to the 32-bit field."""
    return max(0, min(int(unix_time) - VHD_EPOCH, 0xFFFFFFFF))


class Footer:
    __slots__ = ("disk_type", "current_size", "original_size", "uuid", "timestamp",
                 "data_offset", "hidden", "saved_state", "creator_app", "creator_version",
                 "creator_os", "features", "version", "geometry", "checksum")

    def __init__(self, disk_type: int, current_size: int, original_size: int, uuid: bytes,
                 timestamp: int, data_offset: int = HEADER_OFFSET, hidden: int = 0,
                 saved_state: int = 0, creator_app: bytes = CREATOR_APP,
                 creator_version: int = CREATOR_VERSION, creator_os: int = CREATOR_OS,
                 features: int = FOOTER_FEATURES, version: int = FOOTER_VERSION,
                 geometry: tuple = (0, 0, 0), checksum: int = 0) -> None:
        self.disk_type = disk_type
        self.current_size = current_size
        self.original_size = original_size
        self.uuid = uuid
        self.timestamp = timestamp
        self.data_offset = data_offset
        self.hidden = hidden
        self.saved_state = saved_state
        self.creator_app = creator_app
        self.creator_version = creator_version
        self.creator_os = creator_os
        self.features = features
        self.version = version
        self.geometry = geometry
        self.checksum = checksum

    def pack(self) -> bytes:
        cyl, heads, spt = self.geometry
        packed, self.checksum = _sealed(
            FOOTER, F_CHECKSUM, FOOTER_COOKIE, self.features, self.version, self.data_offset,
            self.timestamp, self.creator_app, self.creator_version, self.creator_os,
            self.original_size, self.current_size, cyl, heads, spt, self.disk_type, 0,
            self.uuid, self.saved_state, self.hidden, b"")
        return packed

    @classmethod
    def unpack(cls, buf: bytes, path: str, offset: int) -> "Footer":
        stored = _verified(buf, FOOTER_SIZE, FOOTER_COOKIE, F_CHECKSUM, "footer", path, offset)
        (_cookie, features, version, data_offset, timestamp, creator_app, creator_version,
         creator_os, orig, curr, cyl, heads, spt, disk_type, _csum, uuid, saved_state, hidden,
         _reserved) = FOOTER.unpack_from(buf)
        return cls(disk_type=disk_type, current_size=curr, original_size=orig, uuid=uuid,
                   timestamp=timestamp, data_offset=data_offset, hidden=hidden,
                   saved_state=saved_state, creator_app=creator_app,
                   creator_version=creator_version, creator_os=creator_os,
                   features=features, version=version, geometry=(cyl, heads, spt),
                   checksum=stored)

    @property
    def uuid_str(self) -> str:
        return uuid_text(self.uuid)


class Locator:
    __slots__ = ("code", "space", "length", "offset")

    def __init__(self, code: int = PLAT_NONE, space: int = 0, length: int = 0,
                 offset: int = 0) -> None:
        self.code = code
        self.space = space
        self.length = length
        self.offset = offset

    def pack(self) -> bytes:
        return LOCATOR.pack(self.code, self.space, self.length, 0, self.offset)

    @classmethod
    def unpack_from(cls, buf: bytes, at: int) -> "Locator":
        code, space, length, _reserved, offset = LOCATOR.unpack_from(buf, at)
        return cls(code, space, length, offset)


class Header:
    __slots__ = ("max_bat", "table_offset", "block_size", "parent_uuid", "parent_timestamp",
                 "parent_name", "locators", "data_offset", "version", "checksum")

    def __init__(self, max_bat: int, table_offset: int = TABLE_OFFSET,
                 block_size: int = BLOCK_SIZE, parent_uuid: bytes = bytes(16),
                 parent_timestamp: int = 0, parent_name: str = "",
                 locators: Optional[List[Locator]] = None,
                 data_offset: int = 0xFFFFFFFFFFFFFFFF, version: int = HEADER_VERSION,
                 checksum: int = 0) -> None:
        self.max_bat = max_bat
        self.table_offset = table_offset
        self.block_size = block_size
        self.parent_uuid = parent_uuid
        self.parent_timestamp = parent_timestamp
        self.parent_name = parent_name
        self.locators = locators if locators is not None else [
            Locator() for _ in range(LOCATOR_COUNT)]
        self.data_offset = data_offset
        self.version = version
        self.checksum = checksum

    def pack(self, path: str = "") -> bytes:
        name = self.parent_name.encode("utf-16-be")
        if len(name) > PARENT_NAME_SIZE:
            raise VHDError(path, HEADER_OFFSET + H_PARENT_NAME, "parent name too long")
        packed, self.checksum = _sealed(
            HEADER, H_CHECKSUM, HEADER_COOKIE, self.data_offset, self.table_offset,
            self.version, self.max_bat, self.block_size, 0, self.parent_uuid,
            self.parent_timestamp, 0, name, b"".join(loc.pack() for loc in self.locators), b"")
        return packed

    @classmethod
    def unpack(cls, buf: bytes, path: str, offset: int) -> "Header":
        stored = _verified(buf, HEADER_SIZE, HEADER_COOKIE, H_CHECKSUM, "header", path, offset)
        (_cookie, data_offset, table_offset, version, max_bat, block_size, _csum, parent_uuid,
         parent_timestamp, _reserved, raw_name, raw_locators, _reserved2) = HEADER.unpack_from(buf)
        if block_size == 0 or block_size % SECTOR or block_size & (block_size - 1):
            raise VHDError(path, offset + H_BLOCK_SIZE, f"bad block size {block_size}")
        if table_offset % SECTOR:
            raise VHDError(path, offset + H_TABLE_OFFSET, "BAT offset not sector-aligned")
        name = raw_name.decode("utf-16-be", errors="replace").split("\0", 1)[0]
        locators = [Locator.unpack_from(raw_locators, i * LOCATOR_SIZE)
                    for i in range(LOCATOR_COUNT)]
        return cls(max_bat=max_bat, table_offset=table_offset, block_size=block_size,
                   parent_uuid=parent_uuid, parent_timestamp=parent_timestamp,
                   parent_name=name, locators=locators, data_offset=data_offset,
                   version=version, checksum=stored)


class BatmapHeader:
    __slots__ = ("offset", "size", "checksum", "version")

    def __init__(self, offset: int, size: int, checksum: int = 0xFFFFFFFF,
                 version: int = BATMAP_VERSION) -> None:
        self.offset = offset          # byte offset of the batmap payload
        self.size = size              # payload size in sectors
        self.checksum = checksum
        self.version = version

    def pack(self) -> bytes:
        return BATMAP_HEADER.pack(BATMAP_COOKIE, self.offset, self.size, self.version,
                                  self.checksum, b"")

    @classmethod
    def unpack(cls, buf: bytes) -> "Optional[BatmapHeader]":
        """None when buf holds no batmap header (non-blktap images)."""
        if len(buf) < SECTOR or buf[B_COOKIE:B_COOKIE + 8] != BATMAP_COOKIE:
            return None
        _cookie, offset, size, version, csum, _reserved = BATMAP_HEADER.unpack_from(buf)
        return cls(offset=offset, size=size, checksum=csum, version=version)


def encode_locator(code: int, relpath: str) -> bytes:
    """Locator payload for a relative path ("./name" or "../dir/name")."""
    if code == PLAT_MACX:
        return ("file://" + relpath).encode("utf-8")
    return relpath.replace("/", "\\").encode("utf-16-le")


def decode_locator(code: int, data: bytes) -> Optional[str]:
    """The relative path a locator payload names, '/'-separated; None if unknown."""
    try:
        if code == PLAT_MACX:
            text = data.decode("utf-8")
            return text[len("file://"):] if text.startswith("file://") else text
        if code in (PLAT_W2KU, PLAT_W2RU):
            return data.decode("utf-16-le").replace("\\", "/")
    except UnicodeDecodeError:
        return None
    return None
