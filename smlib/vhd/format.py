"""VHD on-disk structures (blktap dialect): constants, pack and unpack.

Every integer is big-endian. Field offsets are named so the layout can be
read against the specification; nothing here does I/O. The structures are
plain classes with ``__slots__``: ``dataclasses`` costs every driver call
about 5 ms of import (it pulls in ``inspect``).
"""

import struct
from typing import List, Optional

from smlib.uuids import text as uuid_text

from .errors import VHDError

SECTOR = 512
BLOCK_SIZE = 2 * 1024 * 1024          # blktap always writes 2 MiB blocks
SECTORS_PER_BLOCK = BLOCK_SIZE // SECTOR
DATA_ALIGN = 4096                     # block data starts 4 KiB-aligned
VHD_EPOCH = 946684800                 # 2000-01-01T00:00:00Z in Unix time
UNALLOCATED = 0xFFFFFFFF

DISK_FIXED = 2
DISK_DYNAMIC = 3
DISK_DIFF = 4

# ---- footer (512 bytes, at offset 0 and at the end of data) ----
FOOTER_SIZE = 512
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
F_GEOMETRY = 56
F_DISK_TYPE = 60
F_CHECKSUM = 64
F_UUID = 68
F_SAVED_STATE = 84
F_HIDDEN = 85                         # blktap's own field

# ---- dynamic header (1024 bytes at footer.data_offset) ----
HEADER_OFFSET = 512
HEADER_SIZE = 1024
TABLE_OFFSET = HEADER_OFFSET + HEADER_SIZE
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
H_PARENT_NAME = 64
PARENT_NAME_SIZE = 512
H_LOCATORS = 576
LOCATOR_COUNT = 8
LOCATOR_SIZE = 24

# ---- parent locator entry (24 bytes) ----
L_CODE = 0
L_SPACE = 4
L_LENGTH = 8
L_OFFSET = 16
PLAT_NONE = 0
PLAT_MACX = 0x4D616358                # "MacX": file:// URL, UTF-8
PLAT_W2KU = 0x57326B75                # "W2ku": absolute-or-relative, UTF-16LE
PLAT_W2RU = 0x57327275                # "W2ru": relative, UTF-16LE
LOCATOR_SPACE = SECTOR                # blktap: one sector each, space in bytes
SNAPSHOT_LOCATORS = (PLAT_MACX, PLAT_W2KU, PLAT_W2RU)

# ---- blktap batmap header (512 bytes right after the BAT) ----
BATMAP_COOKIE = b"tdbatmap"
BATMAP_VERSION = 0x00010002
B_COOKIE = 0
B_OFFSET = 8
B_SIZE = 16                           # in sectors
B_VERSION = 20
B_CHECKSUM = 24
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


def _verified(buf: bytes, size: int, cookie: bytes, csum_at: int, what: str, path: str,
              offset: int) -> int:
    """The stored checksum of a structure whose size, cookie and checksum are right."""
    if len(buf) < size:
        raise VHDError(path, offset, f"{what} truncated")
    if buf[:len(cookie)] != cookie:
        raise VHDError(path, offset, f"bad {what} cookie")
    stored = struct.unpack_from(">I", buf, csum_at)[0]
    if stored != checksum(buf, csum_at):
        raise VHDError(path, offset, f"bad {what} checksum")
    return stored


def round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def geometry(size: int) -> tuple:
    """CHS geometry by the Microsoft VHD algorithm (rounding down)."""
    total = size // SECTOR
    total = min(total, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


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
        buf = bytearray(FOOTER_SIZE)
        buf[F_COOKIE:F_COOKIE + 8] = FOOTER_COOKIE
        struct.pack_into(">II", buf, F_FEATURES, self.features, self.version)
        struct.pack_into(">QI", buf, F_DATA_OFFSET, self.data_offset, self.timestamp)
        buf[F_CREATOR_APP:F_CREATOR_APP + 4] = self.creator_app
        struct.pack_into(">II", buf, F_CREATOR_VERSION, self.creator_version, self.creator_os)
        struct.pack_into(">QQ", buf, F_ORIG_SIZE, self.original_size, self.current_size)
        cyl, heads, spt = self.geometry
        struct.pack_into(">HBBI", buf, F_GEOMETRY, cyl, heads, spt, self.disk_type)
        buf[F_UUID:F_UUID + 16] = self.uuid
        buf[F_SAVED_STATE] = self.saved_state
        buf[F_HIDDEN] = self.hidden
        self.checksum = checksum(buf, F_CHECKSUM)
        struct.pack_into(">I", buf, F_CHECKSUM, self.checksum)
        return bytes(buf)

    @classmethod
    def unpack(cls, buf: bytes, path: str, offset: int) -> "Footer":
        stored = _verified(buf, FOOTER_SIZE, FOOTER_COOKIE, F_CHECKSUM, "footer", path, offset)
        features, version = struct.unpack_from(">II", buf, F_FEATURES)
        data_offset, timestamp = struct.unpack_from(">QI", buf, F_DATA_OFFSET)
        creator_version, creator_os = struct.unpack_from(">II", buf, F_CREATOR_VERSION)
        orig, curr = struct.unpack_from(">QQ", buf, F_ORIG_SIZE)
        cyl, heads, spt, disk_type = struct.unpack_from(">HBBI", buf, F_GEOMETRY)
        return cls(disk_type=disk_type, current_size=curr, original_size=orig,
                   uuid=bytes(buf[F_UUID:F_UUID + 16]), timestamp=timestamp,
                   data_offset=data_offset, hidden=buf[F_HIDDEN],
                   saved_state=buf[F_SAVED_STATE],
                   creator_app=bytes(buf[F_CREATOR_APP:F_CREATOR_APP + 4]),
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

    def pack_into(self, buf: "bytearray", at: int) -> None:
        struct.pack_into(">IIII", buf, at + L_CODE, self.code, self.space, self.length, 0)
        struct.pack_into(">Q", buf, at + L_OFFSET, self.offset)

    @classmethod
    def unpack_from(cls, buf: bytes, at: int) -> "Locator":
        code, space, length, _ = struct.unpack_from(">IIII", buf, at + L_CODE)
        (offset,) = struct.unpack_from(">Q", buf, at + L_OFFSET)
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
        buf = bytearray(HEADER_SIZE)
        buf[H_COOKIE:H_COOKIE + 8] = HEADER_COOKIE
        struct.pack_into(">QQIII", buf, H_DATA_OFFSET, self.data_offset, self.table_offset,
                         self.version, self.max_bat, self.block_size)
        buf[H_PARENT_UUID:H_PARENT_UUID + 16] = self.parent_uuid
        struct.pack_into(">I", buf, H_PARENT_TIMESTAMP, self.parent_timestamp)
        name = self.parent_name.encode("utf-16-be")
        if len(name) > PARENT_NAME_SIZE:
            raise VHDError(path, HEADER_OFFSET + H_PARENT_NAME, "parent name too long")
        buf[H_PARENT_NAME:H_PARENT_NAME + len(name)] = name
        for i, loc in enumerate(self.locators):
            loc.pack_into(buf, H_LOCATORS + i * LOCATOR_SIZE)
        self.checksum = checksum(buf, H_CHECKSUM)
        struct.pack_into(">I", buf, H_CHECKSUM, self.checksum)
        return bytes(buf)

    @classmethod
    def unpack(cls, buf: bytes, path: str, offset: int) -> "Header":
        stored = _verified(buf, HEADER_SIZE, HEADER_COOKIE, H_CHECKSUM, "header", path, offset)
        data_offset, table_offset, version, max_bat, block_size = struct.unpack_from(
            ">QQIII", buf, H_DATA_OFFSET)
        if block_size == 0 or block_size % SECTOR or block_size & (block_size - 1):
            raise VHDError(path, offset + H_BLOCK_SIZE, f"bad block size {block_size}")
        if table_offset % SECTOR:
            raise VHDError(path, offset + H_TABLE_OFFSET, "BAT offset not sector-aligned")
        raw_name = bytes(buf[H_PARENT_NAME:H_PARENT_NAME + PARENT_NAME_SIZE])
        name = raw_name.decode("utf-16-be", errors="replace").split("\0", 1)[0]
        locators = [Locator.unpack_from(buf, H_LOCATORS + i * LOCATOR_SIZE)
                    for i in range(LOCATOR_COUNT)]
        return cls(max_bat=max_bat, table_offset=table_offset, block_size=block_size,
                   parent_uuid=bytes(buf[H_PARENT_UUID:H_PARENT_UUID + 16]),
                   parent_timestamp=struct.unpack_from(">I", buf, H_PARENT_TIMESTAMP)[0],
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
        buf = bytearray(SECTOR)
        buf[B_COOKIE:B_COOKIE + 8] = BATMAP_COOKIE
        struct.pack_into(">QIII", buf, B_OFFSET, self.offset, self.size, self.version,
                         self.checksum)
        return bytes(buf)

    @classmethod
    def unpack(cls, buf: bytes) -> "Optional[BatmapHeader]":
        """None when buf holds no batmap header (non-blktap images)."""
        if len(buf) < SECTOR or buf[B_COOKIE:B_COOKIE + 8] != BATMAP_COOKIE:
            return None
        offset, size, version, csum = struct.unpack_from(">QIII", buf, B_OFFSET)
        return cls(offset=offset, size=size, checksum=csum, version=version)


def bat_bytes(max_bat: int) -> int:
    """Bytes the BAT occupies on disk (padded to a sector)."""
    return round_up(max_bat * 4, SECTOR)


def batmap_bytes(max_bat: int) -> int:
    """Bytes the batmap payload occupies on disk (padded to a sector)."""
    return round_up(-(-max_bat // 8), SECTOR)


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
