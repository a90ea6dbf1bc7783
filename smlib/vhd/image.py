"""Open VHD images: query, read and write through a chain, hidden, reparent, resize.

An image may sit in a container larger than itself (an LV, a block
device): its trailing footer is at the end of data, computed from the
header, BAT and locators. On a regular file the file ends with that footer.
"""

import bisect
import os
import sys
from array import array
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

from smlib.uuids import text as uuid_text

from . import format as fmt
from . import geometry as geo
from .errors import VHDError
from .rawio import RawFile
from .writer import Writer

Resolver = Callable[[str, str], str]

MAX_VIRTUAL_SIZE = geo.MAX_VIRTUAL_SIZE
# The largest table a disk of at most MAX_VIRTUAL_SIZE needs (4 MiB of BAT):
# a header asking for more is damaged or hostile, and is refused before any
# of it is read, so opening costs bounded memory whatever the header says.
MAX_BAT_ENTRIES = MAX_VIRTUAL_SIZE // geo.BLOCK_SIZE
MAX_BATMAP_BYTES = geo.batmap_bytes(MAX_BAT_ENTRIES)
MAX_LOCATOR_BYTES = 64 * 1024         # blktap writes 512; a path never needs more
_ZERO_BLOCK = bytes(fmt.BLOCK_SIZE)


def _no_overlap(path: str, extents: "List[Tuple[int, int, str]]", container: int) -> None:
    """No two structures share a byte and each lies inside the container."""
    reach, last = 0, ""
    for start, length, name in sorted(extents):
        if start + length > container:
            raise VHDError(path, start, f"{name} lies past the end of the file")
        if start < reach:
            raise VHDError(path, start, f"{name} overlaps the {last}")
        if start + length > reach:
            reach, last = start + length, name


def zeros(length: int) -> bytes:
    return _ZERO_BLOCK[:length] if length <= len(_ZERO_BLOCK) else bytes(length)


def default_resolver(child_path: str, locator: str) -> str:
    """The locator relative to the child's directory, refusing to leave it."""
    base = os.path.dirname(os.path.abspath(child_path))
    target = os.path.normpath(os.path.join(base, locator))
    if "\0" in locator or os.path.isabs(locator) or not target.startswith(base + os.sep):
        raise VHDError(child_path, None,
                       f"parent locator {locator!r} points outside {base}")
    return target


def open_image(path: str, writable: bool = False, *,
               resolver: Optional[Resolver] = None) -> "Image":
    return Image(path, writable, resolver=resolver)


def _bit_runs(bits: str, s0: int, s1: int) -> Iterator[Tuple[int, int, bool]]:
    """Runs [start, end) of equal bits in a '0'/'1' string, with their value."""
    pos = s0
    while pos < s1:
        present = bits[pos] == "1"
        nxt = bits.find("0" if present else "1", pos, s1)
        end = s1 if nxt < 0 else nxt
        yield pos, end, present
        pos = end


class Image(Writer):
    """An open VHD image (dynamic or differencing). Use as a context manager.
    Opening, queries and reads are here; writes come from ``Writer``."""

    def __init__(self, path: str, writable: bool = False, *,
                 resolver: Optional[Resolver] = None,
                 _seen: Optional[Set[str]] = None) -> None:
        self.path = path
        self.writable = writable
        self._resolver = resolver or default_resolver
        self._seen = set(_seen or ()) | {os.path.realpath(path)}
        self._parent: Optional[Image] = None
        self._bat: Optional[array] = None
        self._bitmaps: Dict[int, int] = {}
        self._pending_bat: Set[int] = set()       # allocated, BAT entry not yet written
        self._pending_batmap: Set[int] = set()    # batmap bit set, not yet written
        self._raw = RawFile(path, writable)
        try:
            self._load()
            if writable:
                # Checked before any write can land: a BAT entry pointing into
                # the metadata would have a block write overwrite the header.
                _ = self.bat
        except BaseException:
            self._raw.close()
            raise

    # ---------------------------------------------------------------- loading
    def read_footer(self, offset: int) -> Optional[fmt.Footer]:
        """The footer stored at ``offset``, or None when it is not a valid one."""
        try:
            return fmt.Footer.unpack(self._raw.read_at(offset, fmt.FOOTER_SIZE),
                                     self.path, offset)
        except VHDError:
            return None

    def _load(self) -> None:
        container = self._raw.size()
        self.container_size = container
        if container < fmt.FOOTER_SIZE:
            raise VHDError(self.path, 0, "file too small for a VHD footer")
        copy = self.read_footer(0)
        tail_at = container - fmt.FOOTER_SIZE
        tail = self.read_footer(tail_at) if self._raw.regular else None
        base = tail or copy
        if base is None:
            # Report the copy's own problem (cookie / checksum) at offset 0.
            fmt.Footer.unpack(self._raw.read_at(0, fmt.FOOTER_SIZE), self.path, 0)
            raise VHDError(self.path, 0, "no valid footer")
        if base.disk_type not in (fmt.DISK_DYNAMIC, fmt.DISK_DIFF):
            raise VHDError(self.path, fmt.F_DISK_TYPE,
                           f"unsupported disk type {base.disk_type}")
        hoff = base.data_offset
        if hoff % fmt.SECTOR or hoff + fmt.HEADER_SIZE > container:
            raise VHDError(self.path, fmt.F_DATA_OFFSET, "header offset outside the file")
        self.header = fmt.Header.unpack(self._raw.read_at(hoff, fmt.HEADER_SIZE),
                                        self.path, hoff)
        self.header_offset = hoff
        h = self.header
        self.block_size = h.block_size
        self.spb = h.block_size // fmt.SECTOR
        self.bitmap_bytes = geo.round_up(-(-self.spb // 8), fmt.SECTOR)
        self.full_bitmap = (1 << self.spb) - 1
        self.max_bat_entries = h.max_bat
        if h.max_bat > MAX_BAT_ENTRIES or h.max_bat * h.block_size > MAX_VIRTUAL_SIZE:
            raise VHDError(self.path, hoff + fmt.H_MAX_BAT,
                           f"a BAT of {h.max_bat} entries of {h.block_size} bytes cannot belong"
                           f" to a disk of at most {MAX_VIRTUAL_SIZE} bytes")
        if h.table_offset + geo.bat_bytes(h.max_bat) > container:
            raise VHDError(self.path, hoff + fmt.H_TABLE_OFFSET, "BAT extends past end of file")
        self._load_batmap(base, container)
        self._metadata = self._metadata_extents()
        _no_overlap(self.path, self._metadata, container)
        self.footer = base
        self.disk_type = base.disk_type
        self.trailing_ok = True
        if tail is not None:
            self.footer_pos = tail_at
        else:
            # Container, or a regular file whose trailing footer is damaged:
            # the trailing footer belongs at the end of data.
            self.footer_pos = self._data_end()
            found = self.read_footer(self.footer_pos) if (
                self.footer_pos + fmt.FOOTER_SIZE <= container) else None
            self.footer = found or copy
            self.trailing_ok = found is not None
        if self.footer.current_size > h.max_bat * h.block_size:
            raise VHDError(self.path, hoff + fmt.H_MAX_BAT, "BAT too small for the virtual size")

    def _load_batmap(self, base: fmt.Footer, container: int) -> None:
        """The batmap header; the payload is read on first use (``batmap``):
        a 2 TiB image's is 128 KiB that opening to query or snapshot never needs."""
        self.batmap_header: Optional[fmt.BatmapHeader] = None
        self.batmap_header_offset = self.header.table_offset + geo.bat_bytes(self.header.max_bat)
        self._batmap_bytes: Optional[bytearray] = None
        self._batmap_stale = False
        if base.creator_app != fmt.CREATOR_APP or base.creator_version < fmt.BATMAP_MIN_CREATOR:
            return
        at = self.batmap_header_offset
        if at + fmt.SECTOR > container:
            return
        bh = fmt.BatmapHeader.unpack(self._raw.read_at(at, fmt.SECTOR))
        if bh is None:
            return
        if bh.offset % fmt.SECTOR or bh.offset + bh.size * fmt.SECTOR > container or \
                bh.size * fmt.SECTOR * 8 < self.header.max_bat or \
                bh.size * fmt.SECTOR > MAX_BATMAP_BYTES:
            raise VHDError(self.path, at, "batmap outside the file or too small")
        self.batmap_header = bh

    @property
    def batmap(self) -> "Optional[bytearray]":
        """The batmap payload (None without a batmap), read on first use."""
        bh = self.batmap_header
        if self._batmap_bytes is None and bh is not None:
            self._batmap_bytes = bytearray(self._raw.read_at(bh.offset, bh.size * fmt.SECTOR))
            # A crash between a batmap sector and its header leaves a stale
            # checksum; check() reports it, the next flush() of a write rewrites it.
            self._batmap_stale = bh.checksum != fmt.bytes_checksum(self._batmap_bytes)
        return self._batmap_bytes

    def _stale_batmap(self) -> bool:
        """Whether the stored batmap checksum is stale (reads the batmap)."""
        return self.batmap is not None and self._batmap_stale

    @property
    def bat(self) -> array:
        """The BAT (sector offsets), loaded on first use and checked against the file."""
        if self._bat is None:
            h = self.header
            raw = self._raw.read_at(h.table_offset, h.max_bat * 4)
            bat = array("I")
            bat.frombytes(raw)
            if bat.itemsize != 4:
                raise VHDError(self.path, h.table_offset, "platform has no 32-bit array")
            if sys.byteorder == "little":
                bat.byteswap()
            if raw != b"\xff" * len(raw):
                self._check_bat(bat)
            self._bat = bat
        return self._bat

    def _check_bat(self, bat: array) -> None:
        """Every allocated block lies inside the file, clear of the metadata
        and of every other block (else a write to it would overwrite them)."""
        h = self.header
        limit = self._raw.size() if not self._raw.regular else max(
            self._raw.size() - fmt.FOOTER_SIZE, 0)
        span = self.bitmap_bytes + self.block_size
        blocks = sorted((entry, i) for i, entry in enumerate(bat) if entry != fmt.UNALLOCATED)
        for entry, i in blocks:
            if entry * fmt.SECTOR + span > limit:
                raise VHDError(self.path, h.table_offset + 4 * i,
                               f"BAT entry {i} points past the end of the file")
        for (a, i), (b, j) in zip(blocks, blocks[1:]):
            if b * fmt.SECTOR < a * fmt.SECTOR + span:
                raise VHDError(self.path, h.table_offset + 4 * j,
                               f"BAT entry {j} overlaps block {i}")
        starts = [entry for entry, _ in blocks]
        for start, length, name in self._metadata:
            # The last block starting before the structure's end must end before it starts.
            k = bisect.bisect_left(starts, -(-(start + length) // fmt.SECTOR))
            if k and starts[k - 1] * fmt.SECTOR + span > start:
                i = blocks[k - 1][1]
                raise VHDError(self.path, h.table_offset + 4 * i,
                               f"BAT entry {i} overlaps the {name}")

    def _metadata_extents(self) -> "List[Tuple[int, int, str]]":
        """(offset, length, name) of every structure but the blocks and the
        trailing footer."""
        h = self.header
        out = [(0, fmt.FOOTER_SIZE, "footer copy"),
               (self.header_offset, fmt.HEADER_SIZE, "header"),
               (h.table_offset, geo.bat_bytes(h.max_bat), "BAT")]
        bh = self.batmap_header
        if bh is not None:
            out.append((self.batmap_header_offset, fmt.SECTOR, "batmap header"))
            out.append((bh.offset, bh.size * fmt.SECTOR, "batmap"))
        for loc in h.locators:
            if loc.code != fmt.PLAT_NONE:
                if loc.space > MAX_LOCATOR_BYTES or loc.length > MAX_LOCATOR_BYTES:
                    raise VHDError(self.path, self.header_offset + fmt.H_LOCATORS,
                                   f"parent locator of {max(loc.space, loc.length)} bytes")
                out.append((loc.offset, loc.space, "parent locator"))
        return out

    def _metadata_end(self) -> int:
        h = self.header
        end = max(self.header_offset + fmt.HEADER_SIZE, h.table_offset + geo.bat_bytes(h.max_bat))
        if self.batmap_header is not None:
            end = max(end, self.batmap_header.offset + self.batmap_header.size * fmt.SECTOR)
        for loc in h.locators:
            if loc.code != fmt.PLAT_NONE:
                end = max(end, loc.offset + loc.space)
        return end

    def _data_end(self) -> int:
        end = self._metadata_end()
        span = self.bitmap_bytes + self.block_size
        last = max((e for e in self.bat if e != fmt.UNALLOCATED), default=None)
        if last is not None:
            end = max(end, last * fmt.SECTOR + span)
        return end

    # ------------------------------------------------------------ properties
    @property
    def virtual_size(self) -> int:
        return self.footer.current_size

    @property
    def physical_size(self) -> int:
        return self.footer_pos + fmt.FOOTER_SIZE

    @property
    def uuid(self) -> str:
        return self.footer.uuid_str

    @property
    def hidden(self) -> bool:
        return bool(self.footer.hidden)

    @property
    def parent_uuid(self) -> Optional[str]:
        if self.disk_type != fmt.DISK_DIFF:
            return None
        return uuid_text(self.header.parent_uuid)

    @property
    def parent_locator(self) -> Optional[str]:
        """The parent's name as the locators give it (without a leading './')."""
        if self.disk_type != fmt.DISK_DIFF:
            return None
        by_code = {loc.code: loc for loc in self.header.locators}
        for code in fmt.SNAPSHOT_LOCATORS:
            loc = by_code.get(code)
            if loc is None or loc.length == 0:
                continue
            if loc.length > min(max(loc.space, geo.LOCATOR_SPACE), MAX_LOCATOR_BYTES) or \
                    loc.offset + loc.length > self.container_size:
                raise VHDError(self.path, loc.offset, "parent locator outside the file")
            rel = fmt.decode_locator(code, self._raw.read_at(loc.offset, loc.length))
            if rel:
                return rel[2:] if rel.startswith("./") else rel
        raise VHDError(self.path, self.header_offset + fmt.H_LOCATORS,
                       "differencing image without a usable parent locator")

    def parent_path(self) -> Optional[str]:
        loc = self.parent_locator
        return None if loc is None else self._resolver(self.path, loc)

    def parent(self) -> "Optional[Image]":
        """The open parent image (read-only), checked: present, uuid, no loop."""
        if self.disk_type != fmt.DISK_DIFF:
            return None
        if self._parent is None:
            ppath = self.parent_path()
            if ppath is None:
                return None
            if os.path.realpath(ppath) in self._seen:
                raise VHDError(self.path, self.header_offset + fmt.H_LOCATORS,
                               f"parent loop through {ppath}")
            if not os.path.exists(ppath):
                raise VHDError(self.path, self.header_offset + fmt.H_LOCATORS,
                               f"parent {ppath} missing")
            parent = Image(ppath, resolver=self._resolver, _seen=self._seen)
            if parent.footer.uuid != self.header.parent_uuid:
                parent.close()
                raise VHDError(self.path, self.header_offset + fmt.H_PARENT_UUID,
                               f"parent uuid mismatch: {ppath} is {parent.uuid},"
                               f" expected {self.parent_uuid}")
            self._parent = parent
        return self._parent

    def allocated_blocks(self) -> List[int]:
        return [i for i, e in enumerate(self.bat) if e != fmt.UNALLOCATED]

    def is_empty(self) -> bool:
        """No allocated block. Answered from the image's size when no block can
        fit (no 4 MiB BAT read for an empty 2 TiB snapshot); else from the BAT."""
        if not geo.may_hold_data(self.virtual_size, self.physical_size):
            return True
        if self._bat is not None:
            return self._bat.count(fmt.UNALLOCATED) == len(self._bat)
        raw = self._raw.read_at(self.header.table_offset, self.header.max_bat * 4)
        return raw == b"\xff" * len(raw)

    def read_raw(self, offset: int, length: int) -> bytes:
        """Bytes of the image file itself (not of the virtual disk)."""
        return self._raw.read_at(offset, length)

    def file_size(self) -> int:
        """The container's size now (a regular file's, or the device's)."""
        return self._raw.size()

    @property
    def in_regular_file(self) -> bool:
        """Whether the image is a regular file (else a block device or an LV)."""
        return self._raw.regular

    # ---------------------------------------------------------------- blocks
    def _block_data_offset(self, block: int) -> int:
        return self.bat[block] * fmt.SECTOR + self.bitmap_bytes

    def batmap_bit(self, block: int) -> bool:
        if self.batmap is None:
            return False
        return bool(self.batmap[block >> 3] & (0x80 >> (block & 7)))

    def bitmap(self, block: int) -> int:
        """The block's sector bitmap as an int, sector 0 = most significant bit."""
        bm = self._bitmaps.get(block)
        if bm is None:
            if self.batmap_bit(block):
                bm = self.full_bitmap   # blktap trusts the batmap: block fully written
            else:
                off = self.bat[block] * fmt.SECTOR
                raw = self._raw.read_at(off, self.bitmap_bytes)
                bm = int.from_bytes(raw, "big") >> (self.bitmap_bytes * 8 - self.spb)
            self._bitmaps[block] = bm
        return bm

    def _mask(self, s0: int, s1: int) -> int:
        return ((1 << (s1 - s0)) - 1) << (self.spb - s1)

    def own_runs(self, block: int, s0: int, s1: int) -> Iterator[Tuple[int, int, bool]]:
        """Runs of sectors [s0, s1) of a block this image holds (True) or not."""
        if block >= self.header.max_bat or self.bat[block] == fmt.UNALLOCATED:
            yield s0, s1, False
            return
        bm = self.bitmap(block)
        mask = self._mask(s0, s1)
        if bm & mask == mask:
            yield s0, s1, True
        elif bm & mask == 0:
            yield s0, s1, False
        else:
            yield from _bit_runs(format(bm, f"0{self.spb}b"), s0, s1)

    def read_own(self, block: int, s0: int, s1: int) -> bytes:
        """Raw sectors of an allocated block of this image (no chain)."""
        return self._raw.read_at(self._block_data_offset(block) + s0 * fmt.SECTOR,
                                 (s1 - s0) * fmt.SECTOR)

    def read_own_into(self, block: int, s0: int, s1: int, buf: "bytearray") -> "memoryview":
        """Like read_own, into buf (at least a block long); returns the filled view."""
        view = memoryview(buf)[:(s1 - s0) * fmt.SECTOR]
        self._raw.read_into(self._block_data_offset(block) + s0 * fmt.SECTOR, view)
        return view

    def _read_sectors(self, sector: int, count: int) -> bytes:
        """Sectors through the chain; past this image's size they read as zeros."""
        out = []
        end = sector + count
        limit = self.virtual_size // fmt.SECTOR
        while sector < end:
            block, s0 = divmod(sector, self.spb)
            s1 = min(self.spb, s0 + end - sector)
            if sector >= limit:
                out.append(zeros((end - sector) * fmt.SECTOR))
                break
            s1 = min(s1, s0 + limit - sector)
            for r0, r1, present in self.own_runs(block, s0, s1):
                if present:
                    out.append(self.read_own(block, r0, r1))
                else:
                    parent = self.parent()
                    abs0 = block * self.spb + r0
                    out.append(parent._read_sectors(abs0, r1 - r0) if parent
                               else zeros((r1 - r0) * fmt.SECTOR))
            sector = block * self.spb + s1
        return b"".join(out)

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of the virtual disk, through the chain."""
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise VHDError(self.path, offset, f"read of {length} bytes outside the disk")
        if length == 0:
            return b""
        first = offset // fmt.SECTOR
        last = -(-(offset + length) // fmt.SECTOR)
        data = self._read_sectors(first, last - first)
        skip = offset - first * fmt.SECTOR
        return data[skip:skip + length] if skip or len(data) != length else data

    # ---------------------------------------------------------------- closing
    def close(self) -> None:
        try:
            if self._pending_bat or self._pending_batmap or (
                    self._raw.dirty and self._stale_batmap()):
                self.flush()
        finally:
            if self._parent is not None:
                self._parent.close()
                self._parent = None
            self._raw.close()

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
