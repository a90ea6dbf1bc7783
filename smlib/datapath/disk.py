"""The served disk: a VHD chain read and written the way a live server must.

``LiveImage`` is the leaf of a chain opened by the NBD server (the nbdkit
plugin, smlib/datapath/plugin.py). It reads through the chain straight
into the caller's buffer and writes into the leaf with every new block
allocated so that a process killed at any instant leaves an image that
passes ``vhd.check`` (golden rules kept), each step a single write:

1. the trailing footer at the new end of data (a regular file then still
   ends with a valid footer, a copy of the one at offset 0; the old
   trailing footer is never overwritten, so in a container the BAT still
   finds one where it expects it);
2. the block's data; 3. its sector bitmap (data before the bits that
   expose it); 4. the BAT entry, which makes the block part of the image.

A kill before step 4 leaves unreferenced space and the old contents. The
blktap batmap is not updated here: a clear bit only means "read the
bitmap", so it is always consistent, while setting one takes two writes
(payload, then the header's checksum) that a kill could separate.
Durability is ``flush()`` = fsync of the leaf; nothing is ever pending in
memory between requests.
"""

import os
from typing import Callable, Dict, List, Optional

from smlib.vhd import format as fmt
from smlib.vhd import geometry as geo
from smlib.vhd.image import Image

Buffer = memoryview


def chain_resolver(paths: "List[str]") -> "Callable[[str, str], str]":
    """A resolver that gives each image of ``paths`` (leaf first) the next
    one as its parent, whatever the locator says: the driver resolved the
    locators already (an LV's parent is another device node, not a file
    beside it)."""
    parent_of: Dict[str, str] = {}
    for child, parent in zip(paths, paths[1:]):
        parent_of[os.path.realpath(child)] = parent

    def resolve(child_path: str, locator: str) -> str:
        try:
            return parent_of[os.path.realpath(child_path)]
        except KeyError:
            from smlib.vhd import VHDError

            raise VHDError(child_path, None,
                           f"no parent given for locator {locator!r}") from None
    return resolve


class LiveImage(Image):
    """A chain's leaf opened for serving (see the module docstring)."""

    def __init__(self, path: str, writable: bool = False, *,
                 resolver: "Optional[Callable[[str, str], str]]" = None) -> None:
        super().__init__(path, writable, resolver=resolver)
        self.chain: List[Image] = []
        img: Optional[Image] = self
        while img is not None:
            self.chain.append(img)
            img = img.parent()
        _ = [i.bat for i in self.chain]        # load every BAT now: requests never wait on one

    # ----------------------------------------------------------- reading
    def read_into(self, offset: int, view: Buffer) -> None:
        """Fill ``view`` with the disk's bytes at ``offset`` (sector-aligned or not)."""
        _read_chain(self.chain, 0, offset, view)

    def allocated_anywhere(self, block: int) -> bool:
        """Whether any image of the chain holds sectors of ``block``."""
        for img in self.chain:
            if block < img.header.max_bat and img.bat[block] != fmt.UNALLOCATED:
                return True
        return False

    # ----------------------------------------------------------- writing
    def _allocate(self, block: int) -> None:
        """Step 1 and the placement (Image.write_own calls it, then writes the
        data and the bitmap: steps 2 and 3; write_own below adds step 4)."""
        # The new bitmap sector starts after the old trailing footer (never
        # over it) and the data after it is 4 KiB-aligned.
        bm_at = geo.round_up(self.footer_pos + geo.FOOTER_SIZE + self.bitmap_bytes,
                             geo.DATA_ALIGN) - self.bitmap_bytes
        new_end = bm_at + self.bitmap_bytes + self.block_size
        if not self._raw.regular and new_end + geo.FOOTER_SIZE > self.container_size:
            from smlib.vhd import VHDError

            raise VHDError(self.path, new_end, "container too small for another block")
        self._raw.write_at(new_end, self.footer.pack())                # 1. footer
        self.footer_pos = new_end
        if self._raw.regular:
            self.container_size = new_end + geo.FOOTER_SIZE
        self.bat[block] = bm_at // geo.SECTOR
        self._pending_bat.add(block)
        self._bitmaps[block] = 0

    def write_own(self, block: int, s0: int, s1: int, data: "Buffer") -> None:
        """Sectors [s0, s1) of ``block`` into the leaf, in the crash-safe order."""
        fresh = self.bat[block] == fmt.UNALLOCATED
        super().write_own(block, s0, s1, data)          # (1.) 2. data, 3. bitmap
        if fresh:
            self._raw.write_at(self.header.table_offset + 4 * block,
                               self.bat[block].to_bytes(4, "big"))          # 4. BAT
            self._pending_bat.discard(block)
        # A block the write filled gets its batmap bit in memory only (see above).
        self._pending_batmap.clear()

    def write(self, offset: int, data: "Buffer") -> None:
        super().write(offset, data)     # splits by block, merges partial sectors

    def flush(self) -> None:
        """Nothing is pending between requests (see write_own); batmap untouched."""
        return None

    def sync(self) -> None:
        """Make every acknowledged write durable (NBD flush)."""
        self._raw.dirty = True
        self._raw.sync()

    def zero(self, offset: int, length: int) -> None:
        """Zeros over a range; blocks that no image of the chain holds already are."""
        end = offset + length
        pos = offset
        while pos < end:
            block = pos // self.block_size
            stop = min(end, (block + 1) * self.block_size)
            if self.allocated_anywhere(block):
                self.write(pos, memoryview(_zeros(stop - pos)))
            pos = stop

    def close(self) -> None:
        self.sync()
        super().close()


_ZERO = bytes(geo.BLOCK_SIZE)


def _zeros(length: int) -> bytes:
    return _ZERO[:length] if length <= len(_ZERO) else bytes(length)


def _read_chain(chain: "List[Image]", level: int, offset: int, view: Buffer) -> None:
    """Fill view from image chain[level] at offset, falling through to parents."""
    img = chain[level]
    length = len(view)
    pos = 0
    while pos < length:
        at = offset + pos
        block, within = divmod(at, img.block_size)
        take = min(length - pos, img.block_size - within)
        part = view[pos:pos + take]
        if at >= img.virtual_size:
            part[:] = _zeros(take)
        elif block >= img.header.max_bat or img.bat[block] == fmt.UNALLOCATED:
            _below(chain, level, at, part)
        else:
            _read_block(chain, level, block, within, part)
        pos += take


def _below(chain: "List[Image]", level: int, offset: int, view: Buffer) -> None:
    if level + 1 < len(chain):
        _read_chain(chain, level + 1, offset, view)
    else:
        view[:] = _zeros(len(view))


def _read_block(chain: "List[Image]", level: int, block: int, within: int,
                view: Buffer) -> None:
    """Bytes of an allocated block: runs this image holds, the rest from below."""
    img = chain[level]
    s0 = within // geo.SECTOR
    s1 = -(-(within + len(view)) // geo.SECTOR)
    base = block * img.block_size
    data_at = img.bat[block] * geo.SECTOR + img.bitmap_bytes
    for r0, r1, present in img.own_runs(block, s0, s1):
        lo = max(r0 * geo.SECTOR, within) - within
        hi = min(r1 * geo.SECTOR, within + len(view)) - within
        part = view[lo:hi]
        if present:
            img._raw.read_into(data_at + within + lo, part)
        else:
            _below(chain, level, base + within + lo, part)
