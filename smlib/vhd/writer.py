"""Writing into an open VHD image: blocks, then the metadata that follows them.

``Writer`` is the write half of ``image.Image`` (a mixin: it uses the
image's state, ``_raw``, ``bat``, ``header``, ``footer``...). Block writes
leave BAT entries, footer and batmap pending until ``flush()``; hidden,
reparent and resize rewrite metadata in place, each crash-safe on its own.
"""

import sys
from array import array
from typing import Optional, Union

from . import format as fmt
from . import geometry as geo
from .errors import VHDError
from .locators import parent_fields, relative_locator

Buffer = Union[bytes, bytearray, memoryview]
FLUSH_EVERY = 16          # blocks allocated by one write before metadata is written


def check_size(path: str, size: int) -> None:
    if size <= 0 or size > geo.MAX_VIRTUAL_SIZE:
        raise VHDError(path, None,
                       f"virtual size {size} out of range (1 .. {geo.MAX_VIRTUAL_SIZE})")


class Writer:
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
        bm_at = geo.round_up(self.footer_pos + self.bitmap_bytes, geo.DATA_ALIGN) \
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
            if new == self.full_bitmap and self.batmap is not None and not self.batmap_bit(block):
                self.batmap[block >> 3] |= 0x80 >> (block & 7)
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
        if (self._pending_batmap or stale) and bh is not None and self.batmap is not None:
            if stale:
                bh.checksum = fmt.bytes_checksum(self.batmap)
                self._batmap_stale = False
            else:
                for block in self._pending_batmap:
                    # Each bit went from 0 to 1: the byte sum grew by its value.
                    bh.checksum = (bh.checksum - (0x80 >> (block & 7))) & 0xFFFFFFFF
            for at in sorted({(b >> 3) // fmt.SECTOR * fmt.SECTOR for b in self._pending_batmap}):
                self._raw.write_at(bh.offset + at, bytes(self.batmap[at:at + fmt.SECTOR]))
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
                       if loc.code != fmt.PLAT_NONE and loc.space >= geo.LOCATOR_SPACE)
        if len(slots) < len(fmt.SNAPSHOT_LOCATORS) or any(
                b - a < geo.LOCATOR_SPACE for a, b in zip(slots, slots[1:])):
            raise VHDError(self.path, self.header_offset + fmt.H_LOCATORS,
                           "no room for the parent locators")
        with type(self)(parent_path) as parent:
            header = self.header
            payload = parent_fields(header, parent.footer.uuid, parent.path, rel, 0)
        for i, at in enumerate(slots[:len(fmt.SNAPSHOT_LOCATORS)]):
            header.locators[i].offset = at
            chunk = payload[i * geo.LOCATOR_SPACE:(i + 1) * geo.LOCATOR_SPACE]
            self._raw.write_at(at, chunk)
        self._write_header()
        if self._parent is not None:
            self._parent.close()
            self._parent = None

    def resize(self, new_virtual_size: int) -> None:
        """Grow the virtual size, using BAT room first, else a larger BAT after the data."""
        self._require_writable()
        self.flush()
        size = geo.round_size(new_virtual_size)
        check_size(self.path, size)
        if size < self.virtual_size:
            raise VHDError(self.path, None, "shrinking is not supported")
        if size == self.virtual_size:
            return
        need = -(-size // self.block_size)
        if need > self.header.max_bat:
            bh = self.batmap_header
            if geo.bat_bytes(need) == geo.bat_bytes(self.header.max_bat) and (
                    bh is None or bh.size * fmt.SECTOR * 8 >= need):
                self._extend_bat_in_place(need)
            else:
                self._grow_bat(need)
        self.footer.current_size = size
        self.footer.geometry = geo.chs(size)
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
        blob += bytes(geo.bat_bytes(max_bat) - len(blob))
        batmap_header = None
        if self.batmap_header is not None:
            batmap = bytes(self.batmap or b"")
            batmap += bytes(geo.batmap_bytes(max_bat) - len(batmap))
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
        self.batmap_header_offset = table_at + geo.bat_bytes(max_bat)
        if batmap_header is not None:
            self.batmap_header = batmap_header
            self._batmap_bytes = bytearray(batmap)
            self._batmap_stale = False
