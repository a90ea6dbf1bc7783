"""Open VHD images: query, read and write through a chain, hidden, reparent, resize.

An image may sit in a container larger than itself (an LV, a block
device): its trailing footer is at the end of data, computed from the
header, BAT and locators. On a regular file the file ends with that footer.
"""

import os
import sys
from array import array
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple, Union

from smlib.uuids import text as uuid_text

from . import format as fmt
from .errors import VHDError
from .locators import parent_fields, relative_locator
from .rawio import RawFile

Resolver = Callable[[str, str], str]
Buffer = Union[bytes, bytearray, memoryview]

MAX_VIRTUAL_SIZE = 2 * 1024 ** 4      # 2 TiB: blktap's practical limit
_ZERO_BLOCK = bytes(fmt.BLOCK_SIZE)
FLUSH_EVERY = 16          # blocks allocated by one write before metadata is written


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


def round_size(virtual_size: int) -> int:
    """Virtual size rounded up to whole 2 MiB blocks, as vhd-util create does."""
    return fmt.round_up(virtual_size, fmt.BLOCK_SIZE)


def check_size(path: str, size: int) -> None:
    if size <= 0 or size > MAX_VIRTUAL_SIZE:
        raise VHDError(path, None, f"virtual size {size} out of range (1 .. {MAX_VIRTUAL_SIZE})")


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


class Image:
    """An open VHD image (dynamic or differencing). Use as a context manager."""

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
        except BaseException:
            self._raw.close()
            raise

    # ---------------------------------------------------------------- loading
    def _try_footer(self, offset: int) -> Optional[fmt.Footer]:
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
        copy = self._try_footer(0)
        tail_at = container - fmt.FOOTER_SIZE
        tail = self._try_footer(tail_at) if self._raw.regular else None
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
        self.bitmap_bytes = fmt.round_up(-(-self.spb // 8), fmt.SECTOR)
        self._full = (1 << self.spb) - 1
        self.max_bat_entries = h.max_bat
        if h.table_offset + fmt.bat_bytes(h.max_bat) > container:
            raise VHDError(self.path, hoff + fmt.H_TABLE_OFFSET, "BAT extends past end of file")
        self._load_batmap(base, container)
        self.footer = base
        self.disk_type = base.disk_type
        self.trailing_ok = True
        if tail is not None:
            self.footer_pos = tail_at
        else:
            # Container, or a regular file whose trailing footer is damaged:
            # the trailing footer belongs at the end of data.
            self.footer_pos = self._data_end()
            found = self._try_footer(self.footer_pos) if (
                self.footer_pos + fmt.FOOTER_SIZE <= container) else None
            self.footer = found or copy
            self.trailing_ok = found is not None
        if self.footer.current_size > h.max_bat * h.block_size:
            raise VHDError(self.path, hoff + fmt.H_MAX_BAT, "BAT too small for the virtual size")

    def _load_batmap(self, base: fmt.Footer, container: int) -> None:
        """The batmap header; the payload is read on first use (``_batmap``):
        a 2 TiB image's is 128 KiB that opening to query or snapshot never needs."""
        self.batmap_header: Optional[fmt.BatmapHeader] = None
        self.batmap_header_offset = self.header.table_offset + fmt.bat_bytes(self.header.max_bat)
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
                bh.size * fmt.SECTOR * 8 < self.header.max_bat:
            raise VHDError(self.path, at, "batmap outside the file or too small")
        self.batmap_header = bh

    @property
    def _batmap(self) -> "Optional[bytearray]":
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
        return self._batmap is not None and self._batmap_stale

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
            self._bat = bat
            if raw != b"\xff" * len(raw):
                limit = self._raw.size() if not self._raw.regular else max(
                    self._raw.size() - fmt.FOOTER_SIZE, 0)
                span = self.bitmap_bytes + self.block_size
                for i, entry in enumerate(bat):
                    if entry != fmt.UNALLOCATED and entry * fmt.SECTOR + span > limit:
                        raise VHDError(self.path, h.table_offset + 4 * i,
                                       f"BAT entry {i} points past the end of the file")
        return self._bat

    def _metadata_end(self) -> int:
        h = self.header
        end = max(self.header_offset + fmt.HEADER_SIZE, h.table_offset + fmt.bat_bytes(h.max_bat))
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
            if loc.length > max(loc.space, fmt.LOCATOR_SPACE) or \
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
        if self._bat is not None:
            return self._bat.count(fmt.UNALLOCATED) == len(self._bat)
        raw = self._raw.read_at(self.header.table_offset, self.header.max_bat * 4)
        return raw == b"\xff" * len(raw)

    # ---------------------------------------------------------------- blocks
    def _block_data_offset(self, block: int) -> int:
        return self.bat[block] * fmt.SECTOR + self.bitmap_bytes

    def batmap_bit(self, block: int) -> bool:
        if self._batmap is None:
            return False
        return bool(self._batmap[block >> 3] & (0x80 >> (block & 7)))

    def bitmap(self, block: int) -> int:
        """The block's sector bitmap as an int, sector 0 = most significant bit."""
        bm = self._bitmaps.get(block)
        if bm is None:
            if self.batmap_bit(block):
                bm = self._full   # blktap trusts the batmap: block fully written
            else:
                off = self.bat[block] * fmt.SECTOR
                raw = self._raw.read_at(off, self.bitmap_bytes)
                bm = int.from_bytes(raw, "big") >> (self.bitmap_bytes * 8 - self.spb)
            self._bitmaps[block] = bm
        return bm

    def _mask(self, s0: int, s1: int) -> int:
        return ((1 << (s1 - s0)) - 1) << (self.spb - s1)

    def _own_runs(self, block: int, s0: int, s1: int) -> Iterator[Tuple[int, int, bool]]:
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
            for r0, r1, present in self._own_runs(block, s0, s1):
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

    # ---------------------------------------------------------------- writing
    def _require_writable(self) -> None:
        if not self.writable:
            raise VHDError(self.path, None, "image opened read-only")

    def _write_footers(self, copy_too: bool) -> None:
        packed = self.footer.pack()
        if copy_too:
            self._raw.write_at(0, packed)
        self._raw.write_at(self.footer_pos, packed)
        self._raw.truncate(self.footer_pos + fmt.FOOTER_SIZE)
        if self._raw.regular:
            self.container_size = self.footer_pos + fmt.FOOTER_SIZE

    def _allocate(self, block: int) -> None:
        """Place a new block at the end (4 KiB-aligned data); metadata follows in flush()."""
        bm_at = fmt.round_up(self.footer_pos + self.bitmap_bytes, fmt.DATA_ALIGN) \
            - self.bitmap_bytes
        new_end = bm_at + self.bitmap_bytes + self.block_size
        if not self._raw.regular and new_end + fmt.FOOTER_SIZE > self.container_size:
            raise VHDError(self.path, new_end, "container too small for another block")
        if bm_at // fmt.SECTOR >= fmt.UNALLOCATED:
            raise VHDError(self.path, bm_at, "image too large for 32-bit BAT entries")
        self.footer_pos = new_end
        self.bat[block] = bm_at // fmt.SECTOR
        self._pending_bat.add(block)
        self._bitmaps[block] = 0

    def write_own(self, block: int, s0: int, s1: int, data: Buffer) -> None:
        """Write whole sectors [s0, s1) of a block into this image (no chain).

        New blocks' BAT entries and the footer are written by flush(), every
        FLUSH_EVERY allocations, and by close().
        """
        if self.bat[block] == fmt.UNALLOCATED:
            if len(self._pending_bat) >= FLUSH_EVERY:
                self.flush()
            self._allocate(block)
        self._raw.write_at(self._block_data_offset(block) + s0 * fmt.SECTOR, data)
        old = self.bitmap(block)
        new = old | self._mask(s0, s1)
        if new != old:
            pad = self.bitmap_bytes * 8 - self.spb
            self._raw.write_at(self.bat[block] * fmt.SECTOR,
                               (new << pad).to_bytes(self.bitmap_bytes, "big"))
            self._bitmaps[block] = new
            if new == self._full and self._batmap is not None and not self.batmap_bit(block):
                self._batmap[block >> 3] |= 0x80 >> (block & 7)
                self._pending_batmap.add(block)

    def flush(self) -> None:
        """Write the metadata that block writes left pending.

        Order: data and bitmaps are already on their way; then the trailing
        footer at the new end, then the BAT entries (a crash before them only
        orphans the new blocks), then the batmap.
        """
        if self._pending_bat:
            self._write_footers(copy_too=False)
            lo, hi = min(self._pending_bat), max(self._pending_bat) + 1
            entries = array("I", self.bat[lo:hi])
            if sys.byteorder == "little":
                entries.byteswap()
            self._raw.write_at(self.header.table_offset + 4 * lo, entries.tobytes())
            self._pending_bat.clear()
        bh = self.batmap_header
        stale = self._raw.dirty and self._stale_batmap()   # a write repairs it too
        if (self._pending_batmap or stale) and bh is not None and self._batmap is not None:
            if stale:
                bh.checksum = fmt.bytes_checksum(self._batmap)
                self._batmap_stale = False
            else:
                for block in self._pending_batmap:
                    # Each bit went from 0 to 1: the byte sum grew by its value.
                    bh.checksum = (bh.checksum - (0x80 >> (block & 7))) & 0xFFFFFFFF
            for at in sorted({(b >> 3) // fmt.SECTOR * fmt.SECTOR for b in self._pending_batmap}):
                self._raw.write_at(bh.offset + at, bytes(self._batmap[at:at + fmt.SECTOR]))
            self._raw.write_at(self.batmap_header_offset, bh.pack())
        self._pending_batmap.clear()

    def write(self, offset: int, data: Buffer) -> None:
        """Write bytes at any offset into this image (the chain's leaf)."""
        self._require_writable()
        length = len(data)
        if offset < 0 or offset + length > self.virtual_size:
            raise VHDError(self.path, offset, f"write of {length} bytes outside the disk")
        if length == 0:
            return
        first = offset // fmt.SECTOR
        last = -(-(offset + length) // fmt.SECTOR)
        head = offset - first * fmt.SECTOR
        tail = last * fmt.SECTOR - (offset + length)
        if head or tail:
            # Partial sectors: merge with what the chain shows there now.
            buf = bytearray()
            if head:
                buf += self._read_sectors(first, 1)[:head]
            buf += data
            if tail:
                buf += self._read_sectors(last - 1, 1)[fmt.SECTOR - tail:]
            view = memoryview(bytes(buf))
        else:
            view = memoryview(data)
        sector = first
        pos = 0
        while sector < last:
            block, s0 = divmod(sector, self.spb)
            s1 = min(self.spb, s0 + last - sector)
            nbytes = (s1 - s0) * fmt.SECTOR
            try:
                self.write_own(block, s0, s1, view[pos:pos + nbytes])
            except BaseException:
                self.flush()     # keep what was written consistent
                raise
            pos += nbytes
            sector += s1 - s0
        self.flush()

    # ------------------------------------------------------------- metadata
    def _write_header(self) -> None:
        self._raw.write_at(self.header_offset, self.header.pack(self.path))

    def set_hidden(self, hidden: bool) -> None:
        self._require_writable()
        self.footer.hidden = int(bool(hidden))
        self._write_footers(copy_too=True)

    def reparent(self, parent_path: str, parent_locator: Optional[str] = None) -> None:
        """Point this differencing image at another parent; rewrites the locators."""
        self._require_writable()
        if self.disk_type != fmt.DISK_DIFF:
            raise VHDError(self.path, fmt.F_DISK_TYPE, "not a differencing image")
        rel = relative_locator(self.path, parent_path, parent_locator)
        slots = sorted(loc.offset for loc in self.header.locators
                       if loc.code != fmt.PLAT_NONE and loc.space >= fmt.LOCATOR_SPACE)
        if len(slots) < len(fmt.SNAPSHOT_LOCATORS) or any(
                b - a < fmt.LOCATOR_SPACE for a, b in zip(slots, slots[1:])):
            raise VHDError(self.path, self.header_offset + fmt.H_LOCATORS,
                           "no room for the parent locators")
        with Image(parent_path) as parent:
            header = self.header
            payload = parent_fields(header, parent.footer.uuid, parent.path, rel, 0)
        for i, at in enumerate(slots[:len(fmt.SNAPSHOT_LOCATORS)]):
            header.locators[i].offset = at
            chunk = payload[i * fmt.LOCATOR_SPACE:(i + 1) * fmt.LOCATOR_SPACE]
            self._raw.write_at(at, chunk)
        self._write_header()
        if self._parent is not None:
            self._parent.close()
            self._parent = None

    def resize(self, new_virtual_size: int) -> None:
        """Grow the virtual size, using BAT room first, else a larger BAT after the data."""
        self._require_writable()
        self.flush()
        size = round_size(new_virtual_size)
        check_size(self.path, size)
        if size < self.virtual_size:
            raise VHDError(self.path, None, "shrinking is not supported")
        if size == self.virtual_size:
            return
        need = -(-size // self.block_size)
        if need > self.header.max_bat:
            bh = self.batmap_header
            if fmt.bat_bytes(need) == fmt.bat_bytes(self.header.max_bat) and (
                    bh is None or bh.size * fmt.SECTOR * 8 >= need):
                self._extend_bat_in_place(need)
            else:
                self._grow_bat(need)
        self.footer.current_size = size
        self.footer.geometry = fmt.geometry(size)
        self._write_footers(copy_too=True)

    def _extend_bat_in_place(self, max_bat: int) -> None:
        """More entries in the BAT's own padding: mark them free, then raise max_bat."""
        old = self.header.max_bat
        self._raw.write_at(self.header.table_offset + 4 * old, b"\xff" * (4 * (max_bat - old)))
        self.header.max_bat = max_bat
        self._write_header()
        self.bat.extend([fmt.UNALLOCATED] * (max_bat - old))
        self.max_bat_entries = max_bat

    def _grow_bat(self, max_bat: int) -> None:
        """Give the image a larger BAT without moving any data block.

        The new BAT, batmap and locators are written after the end of data
        (behind the current trailing footer, which stays valid), then one
        header write switches to them: a crash before that write leaves the
        old image intact, after it the new one. The old metadata becomes
        unused space.
        """
        h = self.header
        table_at = self.footer_pos + fmt.FOOTER_SIZE
        bat = array("I", self.bat)
        bat.extend([fmt.UNALLOCATED] * (max_bat - len(bat)))
        swapped = array("I", bat)
        if sys.byteorder == "little":
            swapped.byteswap()
        blob = bytearray(swapped.tobytes())
        blob += bytes(fmt.bat_bytes(max_bat) - len(blob))
        batmap_header = None
        if self.batmap_header is not None:
            batmap = bytes(self._batmap or b"")
            batmap += bytes(fmt.batmap_bytes(max_bat) - len(batmap))
            batmap_header = fmt.BatmapHeader(offset=table_at + len(blob) + fmt.SECTOR,
                                             size=len(batmap) // fmt.SECTOR,
                                             checksum=fmt.bytes_checksum(batmap))
            blob += batmap_header.pack() + batmap
        locators = []
        for loc in h.locators:
            if loc.code != fmt.PLAT_NONE:
                payload = self._raw.read_at(loc.offset, loc.space)
                locators.append(fmt.Locator(loc.code, loc.space, loc.length,
                                            table_at + len(blob)))
                blob += payload
            else:
                locators.append(fmt.Locator())
        new_end = table_at + len(blob)
        if not self._raw.regular and new_end + fmt.FOOTER_SIZE > self.container_size:
            raise VHDError(self.path, new_end, "container too small to grow the BAT")
        self._raw.write_at(table_at, bytes(blob))
        self.footer_pos = new_end
        self._write_footers(copy_too=False)
        self._raw.sync()                   # the new metadata is durable before the switch
        h.table_offset, h.max_bat, h.locators = table_at, max_bat, locators
        self._write_header()
        self._bat = bat
        self.max_bat_entries = max_bat
        self.batmap_header_offset = table_at + fmt.bat_bytes(max_bat)
        if batmap_header is not None:
            self.batmap_header = batmap_header
            self._batmap_bytes = bytearray(batmap)
            self._batmap_stale = False

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
