"""What a vdi import reads: a raw file, a fixed VHD or a dynamic VHD, checked
whole before the disk is touched (transfer.py writes it through the driver).

A ``Source`` gives the byte ranges it holds contents for (``covered``) and
those contents as (offset, data) extents, in disk order.
"""

import os
from typing import TYPE_CHECKING, Iterator, List, Tuple

from smlib.toolstack.runner import ToolstackError

if TYPE_CHECKING:  # imported where used: the VHD library is not needed to list or revert
    from smlib.vhd import Image

FORMATS = ("raw", "vhd")
BLOCK = 2 * 1024 * 1024   # one VHD block: reads and writes stay block-aligned
SECTOR = 512

Extent = Tuple[int, bytes]   # (byte offset in the disk, data)


def file_error(path: str, exc: OSError) -> ToolstackError:
    """xe's names for an image that cannot be read."""
    import errno

    name = "FILE_NOT_FOUND" if exc.errno == errno.ENOENT else "IMPORT_FILE_INVALID"
    return ToolstackError(name, f"{path}: {exc.strerror}")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ToolstackError("FORMAT_UNKNOWN", f"format {fmt!r}: use raw or vhd")


def _runs(bits: int, count: int) -> Iterator[Tuple[int, int]]:
    """Runs [s0, s1) of set bits in a count-bit map, bit 0 the most significant."""
    text = format(bits, f"0{count}b")
    pos = text.find("1")
    while pos >= 0:
        end = text.find("0", pos)
        end = count if end < 0 else end
        yield pos, end
        pos = text.find("1", end)


class Source:
    """An image to import: its extents, how many bytes they hold, what they cover."""

    virtual_size = 0
    data_bytes = 0

    def extents(self) -> Iterator[Extent]:
        raise NotImplementedError

    def covered(self) -> "List[Tuple[int, int]]":
        """Byte ranges [start, end) the image gives contents for, sorted."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class RawSource(Source):
    def __init__(self, path: str) -> None:
        try:
            self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
            self.virtual_size = self.data_bytes = os.fstat(self._f.fileno()).st_size
        except OSError as exc:
            raise file_error(path, exc) from None

    def extents(self) -> Iterator[Extent]:
        done = 0
        while done < self.data_bytes:
            data = self._f.read(min(BLOCK, self.data_bytes - done))
            if not data:
                raise ToolstackError("IMPORT_FILE_INVALID",
                                     f"{self._f.name} shrank while it was read")
            yield done, data
            done += len(data)

    def covered(self) -> "List[Tuple[int, int]]":
        return [(0, self.data_bytes)]

    def close(self) -> None:
        self._f.close()


class FixedVHDSource(RawSource):
    """A fixed VHD: the raw disk followed by a footer."""

    def __init__(self, path: str, size: int) -> None:
        super().__init__(path)
        self.virtual_size = self.data_bytes = size


class DynamicVHDSource(Source):
    """A dynamic VHD (blktap's, qemu's or vhd-util's): its allocated sectors."""

    def __init__(self, image: "Image") -> None:
        self.image = image
        self.virtual_size = image.virtual_size
        self._runs = []
        for block in image.allocated_blocks():
            for s0, s1 in _runs(image.bitmap(block), image.spb):
                start = block * image.block_size + s0 * SECTOR
                end = min(block * image.block_size + s1 * SECTOR, self.virtual_size)
                if start < end:
                    self._runs.append((block, s0, start, end))
        self.data_bytes = sum(end - start for _b, _s, start, end in self._runs)

    def extents(self) -> Iterator[Extent]:
        for block, s0, start, end in self._runs:
            data = self.image.read_own(block, s0, s0 + -(-(end - start) // SECTOR))
            yield start, data[:end - start]

    def covered(self) -> "List[Tuple[int, int]]":
        return [(start, end) for _b, _s, start, end in self._runs]

    def close(self) -> None:
        self.image.close()


def open_source(path: str, fmt: str) -> Source:
    """The image to import, checked whole: a damaged one raises before anything changes."""
    check_format(fmt)
    if fmt == "raw":
        return RawSource(path)
    from smlib import vhd
    from smlib.vhd import format as vfmt

    def invalid(what: str) -> ToolstackError:
        return ToolstackError("IMPORT_VHD_INVALID", f"{path}: {what}")

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < vfmt.FOOTER_SIZE:
                raise invalid("too small for a VHD footer")
            f.seek(size - vfmt.FOOTER_SIZE)
            tail = f.read(vfmt.FOOTER_SIZE)
    except OSError as exc:
        raise file_error(path, exc) from None
    try:
        footer = vfmt.Footer.unpack(tail, path, size - vfmt.FOOTER_SIZE)
    except vhd.VHDError:
        footer = None  # a dynamic VHD may still have its copy at 0: check() decides
    if footer is not None and footer.disk_type == vfmt.DISK_FIXED:
        if footer.current_size != size - vfmt.FOOTER_SIZE:
            raise invalid(f"fixed VHD of {footer.current_size} bytes in a file of {size}")
        return FixedVHDSource(path, footer.current_size)
    try:
        vhd.check(path, parents=False)
        image = vhd.open_image(path)
    except vhd.VHDError as exc:
        raise invalid(exc.what + (f" at offset {exc.offset}" if exc.offset is not None
                                  else "")) from None
    if image.disk_type != vfmt.DISK_DYNAMIC:
        image.close()
        raise invalid("a differencing VHD: import needs a whole disk (export it without a"
                      " parent, or import the parent first)")
    try:
        return DynamicVHDSource(image)
    except vhd.VHDError as exc:
        image.close()
        raise invalid(exc.what) from None
