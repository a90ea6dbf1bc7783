"""Operations over a whole chain: listing, coalesce, raw export and import."""

from __future__ import annotations

from typing import BinaryIO, List, Optional

from . import format as fmt
from .errors import VHDError
from .image import Image, Resolver, zeros


def chain(path: str, *, resolver: Optional[Resolver] = None) -> List[str]:
    """Paths of the image and its ancestors, leaf first (parents checked)."""
    paths = []
    with Image(path, resolver=resolver) as leaf:
        img: Optional[Image] = leaf
        while img is not None:
            paths.append(img.path)
            img = img.parent()
    return paths


def depth(path: str, *, resolver: Optional[Resolver] = None) -> int:
    return len(chain(path, resolver=resolver))


def coalesce(child_path: str, *, resolver: Optional[Resolver] = None) -> None:
    """Copy the child's allocated sectors into its parent (the child is unchanged)."""
    with Image(child_path, resolver=resolver) as child:
        if child.parent() is None:
            raise VHDError(child_path, fmt.F_DISK_TYPE, "not a differencing image")
        with Image(child.parent_path(), writable=True, resolver=resolver) as parent:
            if parent.block_size != child.block_size:
                raise VHDError(child_path, None, "parent has a different block size")
            if parent.virtual_size < child.virtual_size:
                parent.resize(child.virtual_size)
            buf = bytearray(child.block_size)     # reused: no page faults per block
            for block in child.allocated_blocks():
                for s0, s1, present in child._own_runs(block, 0, child.spb):
                    if present:
                        parent.write_own(block, s0, s1, child.read_own_into(block, s0, s1, buf))


def export_raw(path: str, out: BinaryIO, *, resolver: Optional[Resolver] = None) -> None:
    """Write the chain's visible contents (virtual_size bytes) to out."""
    with Image(path, resolver=resolver) as img:
        size = img.virtual_size
        step = img.block_size
        for offset in range(0, size, step):
            out.write(img.read(offset, min(step, size - offset)))


def _chain_has_block(img: Optional[Image], offset: int) -> bool:
    while img is not None:
        if offset < img.virtual_size:
            block = offset // img.block_size
            if block < img.header.max_bat and img.bat[block] != fmt.UNALLOCATED:
                return True
        img = img.parent()
    return False


def import_raw(path: str, inp: BinaryIO, *, resolver: Optional[Resolver] = None) -> None:
    """Make the leaf's visible contents the raw stream; zero blocks stay unallocated."""
    with Image(path, writable=True, resolver=resolver) as img:
        size = img.virtual_size
        # One reused buffer: fresh 2 MiB objects per block cost page faults.
        buf = bytearray(img.block_size)
        offset = 0
        while offset < size:
            want = min(len(buf), size - offset)
            view = memoryview(buf)[:want]
            got = 0
            while got < want:
                n = inp.readinto(view[got:])
                if not n:
                    break
                got += n
            if not got:
                break
            chunk = view[:got]
            if chunk != zeros(got) or _chain_has_block(img, offset):
                img.write(offset, chunk)
            offset += got
            if got < want:
                break
        if inp.read(1):
            raise VHDError(path, size, "raw stream longer than the virtual size")
