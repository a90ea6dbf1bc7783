"""Making new images: dynamic (create) and differencing (snapshot), in blktap's layout."""

import os
import time
from typing import Optional

from smlib.uuids import random_bytes

from . import format as fmt
from . import geometry as geo
from .errors import VHDError
from .geometry import round_size
from .image import Image, Resolver, open_image
from .locators import parent_fields, relative_locator
from .rawio import RawFile
from .writer import check_size

_UNALLOCATED_RUN = 1 << 20      # bytes of 0xFF written per BAT write
_unallocated: "Optional[memoryview]" = None


def _unallocated_run() -> "memoryview":
    """1 MiB of 0xFF (free BAT entries), made once per process and only when
    an image is made: a 2 TiB image's BAT is 4 MiB of them."""
    global _unallocated
    if _unallocated is None:
        _unallocated = memoryview(b"\xff" * _UNALLOCATED_RUN)
    return _unallocated


def _new_image(path: str, size: int, max_bat: int, hidden: bool,
               parent: Optional[Image] = None, rel: Optional[str] = None) -> None:
    """Write a fresh dynamic or differencing image in blktap's layout.

    Written piece by piece at increasing offsets (footer copy and header,
    the BAT from a reused 0xFF run, then batmap, locators and footer), so a
    large BAT is never built or joined in memory.
    """
    footer = fmt.Footer(disk_type=fmt.DISK_DIFF if parent else fmt.DISK_DYNAMIC,
                        current_size=size, original_size=size,
                        uuid=random_bytes(), timestamp=fmt.vhd_time(time.time()),
                        hidden=int(hidden), geometry=geo.chs(size))
    header = fmt.Header(max_bat=max_bat)
    batmap_hdr_at = fmt.TABLE_OFFSET + geo.bat_bytes(max_bat)
    batmap_size = geo.batmap_bytes(max_bat)
    # An all-zero batmap sums to 0: its checksum is ~0.
    batmap_hdr = fmt.BatmapHeader(offset=batmap_hdr_at + fmt.SECTOR,
                                  size=batmap_size // fmt.SECTOR, checksum=0xFFFFFFFF)
    locators = b""
    if parent is not None:
        locators = parent_fields(header, parent.footer.uuid, parent.path, rel or "",
                                 batmap_hdr.offset + batmap_size)
    foot = footer.pack()
    head = foot + header.pack(path)                     # offsets 0 and HEADER_OFFSET
    tail = b"".join((bytes(batmap_hdr_at - fmt.TABLE_OFFSET - 4 * max_bat),  # BAT padding
                     batmap_hdr.pack(), bytes(batmap_size), locators, foot))
    existing = os.path.exists(path)
    raw = RawFile(path, writable=existing, create=not existing)
    try:
        raw.write_at(0, head)
        run = _unallocated_run()
        at, end = fmt.TABLE_OFFSET, fmt.TABLE_OFFSET + 4 * max_bat
        while at < end:
            n = min(len(run), end - at)
            raw.write_at(at, run[:n])
            at += n
        raw.write_at(end, tail)
        raw.truncate(end + len(tail))
    finally:
        raw.close()


def create(path: str, virtual_size: int, *, prealloc_size: Optional[int] = None,
           hidden: bool = False) -> None:
    """A new empty dynamic image; prealloc_size sizes the BAT for future growth."""
    size = round_size(virtual_size)
    check_size(path, size)
    room = max(size, round_size(prealloc_size or 0))
    check_size(path, room)
    _new_image(path, size, room // fmt.BLOCK_SIZE, hidden)


def snapshot(path: str, parent_path: str, *, parent_locator: Optional[str] = None,
             hidden: bool = False, resolver: Optional[Resolver] = None) -> None:
    """A new empty differencing child of parent_path.

    resolver is accepted so callers can pass the same arguments everywhere;
    the parent is named by parent_path, so nothing needs resolving here.
    """
    del resolver
    if os.path.exists(path) and os.path.samefile(path, parent_path):
        raise VHDError(path, None, "a snapshot cannot replace its own parent")
    rel = relative_locator(path, parent_path, parent_locator)
    with open_image(parent_path) as parent:
        size = parent.virtual_size
        _new_image(path, size, -(-size // fmt.BLOCK_SIZE), hidden, parent, rel)
