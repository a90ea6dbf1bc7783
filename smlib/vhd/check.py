"""Consistency check of an image and its chain (like `vhd-util check -p -b`)."""

import os
from typing import Optional, Set

from . import format as fmt
from . import geometry as geo
from .errors import VHDError
from .image import Image, Resolver


def _check_one(img: Image) -> None:
    path = img.path
    copy = img.read_footer(0)
    if copy is None:
        fmt.Footer.unpack(img.read_raw(0, fmt.FOOTER_SIZE), path, 0)
    if not img.trailing_ok:
        raise VHDError(path, img.footer_pos, "trailing footer missing or damaged")
    trailing = img.read_raw(img.footer_pos, fmt.FOOTER_SIZE)
    if trailing != img.read_raw(0, fmt.FOOTER_SIZE):
        raise VHDError(path, img.footer_pos, "footer copies differ")
    if img.in_regular_file and img.file_size() != img.footer_pos + fmt.FOOTER_SIZE:
        raise VHDError(path, img.footer_pos, "file does not end with the footer")
    h = img.header
    # Every structure's byte range, labelled; no two may overlap.
    extents = [(0, fmt.FOOTER_SIZE, "footer copy"),
               (img.header_offset, fmt.HEADER_SIZE, "header"),
               (h.table_offset, geo.bat_bytes(h.max_bat), "BAT"),
               (img.footer_pos, fmt.FOOTER_SIZE, "trailing footer")]
    if img.batmap_header is not None:
        extents.append((img.batmap_header_offset, fmt.SECTOR, "batmap header"))
        extents.append((img.batmap_header.offset, img.batmap_header.size * fmt.SECTOR, "batmap"))
    for loc in h.locators:
        if loc.code != fmt.PLAT_NONE:
            extents.append((loc.offset, loc.space, "parent locator"))
    span = img.bitmap_bytes + img.block_size
    blocks = [b for b, entry in enumerate(img.bat)    # loading the BAT checks "past the end"
              if entry != fmt.UNALLOCATED]
    extents += [(img.bat[b] * fmt.SECTOR, span, f"block {b}") for b in blocks]
    extents.sort()
    reach, last = 0, ""
    for start, length, name in extents:
        if start + length > img.footer_pos + fmt.FOOTER_SIZE:
            raise VHDError(path, start, f"{name} lies past the trailing footer")
        if start < reach:
            raise VHDError(path, start, f"{name} overlaps {last}")
        if start + length > reach:
            reach, last = start + length, name
    if img.batmap_header is not None:
        bh = img.batmap_header
        if bh.checksum != fmt.bytes_checksum(img.batmap or b""):
            raise VHDError(path, img.batmap_header_offset, "bad batmap checksum")
    for block in blocks:
        # Read the on-disk bitmap itself, not the batmap shortcut.
        raw = img.read_raw(img.bat[block] * fmt.SECTOR, img.bitmap_bytes)
        bits = int.from_bytes(raw, "big") >> (img.bitmap_bytes * 8 - img.spb)
        if img.batmap_bit(block) and bits != img.full_bitmap:
            raise VHDError(path, img.bat[block] * fmt.SECTOR,
                           f"batmap marks block {block} full but its bitmap is not")
    if img.disk_type == fmt.DISK_DIFF:
        _ = img.parent_locator   # decodes the locators or raises


def check(path: str, *, resolver: Optional[Resolver] = None, parents: bool = True) -> None:
    """Raise VHDError for the first problem found in the image (and its parents)."""
    seen: Set[str] = set()
    with Image(path, resolver=resolver) as leaf:
        img: Optional[Image] = leaf
        while img is not None:
            real = os.path.realpath(img.path)
            if real in seen:
                raise VHDError(img.path, None, "parent loop")
            seen.add(real)
            _check_one(img)
            if not parents:
                break
            img = img.parent()
