"""Operations over a whole chain: listing, coalesce, raw export and import."""

from typing import BinaryIO, List, Optional

from . import format as fmt
from .errors import VHDError
from .image import Image, Resolver, zeros

IMPORT_BLOCKS = 16        # blocks read from the stream at a time


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
                for s0, s1, present in child.own_runs(block, 0, child.spb):
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


def _read_full(inp: BinaryIO, view: "memoryview") -> int:
    got = 0
    while got < len(view):
        n = inp.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def import_raw(path: str, inp: BinaryIO, *, resolver: Optional[Resolver] = None) -> None:
    """Make the leaf's visible contents the raw stream; zero blocks stay unallocated.

    A stream shorter than the disk leaves the rest of the disk as it was; a
    longer one raises VHDError once the disk is full.
    """
    with Image(path, writable=True, resolver=resolver) as img:
        size, step = img.virtual_size, img.block_size
        # One reused buffer of several blocks: fresh 2 MiB objects cost page
        # faults, and one write() per run of blocks writes the metadata once.
        buf = bytearray(step * IMPORT_BLOCKS)
        offset = 0
        while offset < size:
            want = min(len(buf), size - offset)
            got = _read_full(inp, memoryview(buf)[:want])
            if not got:
                break
            chunk = memoryview(buf)[:got]
            run = None          # start (within chunk) of the pending run to write
            for at in range(0, len(chunk), step):
                piece = chunk[at:at + step]
                skip = piece == zeros(len(piece)) and not _chain_has_block(img, offset + at)
                if skip and run is not None:
                    img.write(offset + run, chunk[run:at])
                    run = None
                elif not skip and run is None:
                    run = at
            if run is not None:
                img.write(offset + run, chunk[run:])
            offset += got
            if got < want:
                break
        if inp.read(1):
            raise VHDError(path, size, "raw stream longer than the virtual size")
