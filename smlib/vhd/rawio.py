"""The only module doing raw file I/O for VHD images.

Plain file objects with seek + read/write: pyfakefs fakes these, but not
os.pread/pwrite/fallocate/mmap (DESIGN section 7), and a fake descriptor
number may belong to a real file, so nothing here touches descriptors.
"""

import os
import stat
from typing import Union

from .errors import VHDError


class RawFile:
    """An open image file or container (block device)."""

    def __init__(self, path: str, writable: bool = False, create: bool = False) -> None:
        self.path = path
        self.writable = writable or create
        mode = "w+b" if create else ("r+b" if writable else "rb")
        try:
            # Unbuffered: we always read and write whole runs ourselves.
            self._f = open(path, mode, buffering=0)  # noqa: SIM115
        except OSError as exc:
            raise VHDError(path, None, f"cannot open: {exc.strerror or exc}",
                           exc.errno) from exc
        try:
            self.regular = stat.S_ISREG(os.fstat(self._f.fileno()).st_mode)
        except (OSError, ValueError):
            self.regular = True
        self.dirty = False

    def size(self) -> int:
        """Bytes in the file or container (works for block devices too)."""
        try:
            return self._f.seek(0, os.SEEK_END)
        except OSError as exc:
            raise VHDError(self.path, None, f"cannot size: {exc.strerror or exc}") from exc

    def read_at(self, offset: int, length: int) -> bytes:
        """Exactly length bytes at offset, or VHDError (short read / I/O error)."""
        try:
            self._f.seek(offset)
            data = self._f.read(length)
            while data is not None and len(data) < length:
                more = self._f.read(length - len(data))
                if not more:
                    break
                data += more
        except OSError as exc:
            raise VHDError(self.path, offset, f"read error: {exc.strerror or exc}") from exc
        if data is None or len(data) != length:
            raise VHDError(self.path, offset, f"short read ({length} bytes wanted)")
        return data

    def read_into(self, offset: int, view: "memoryview") -> None:
        """Fill view from offset exactly (a reused buffer: no fresh allocation)."""
        try:
            self._f.seek(offset)
            got = 0
            while got < len(view):
                n = self._f.readinto(view[got:])
                if not n:
                    raise VHDError(self.path, offset, f"short read ({len(view)} bytes wanted)")
                got += n
        except OSError as exc:
            raise VHDError(self.path, offset, f"read error: {exc.strerror or exc}") from exc

    def write_at(self, offset: int, data: "Union[bytes, bytearray, memoryview]") -> None:
        try:
            self._f.seek(offset)
            view = memoryview(data)
            while len(view):
                done = self._f.write(view)
                if not done:
                    raise VHDError(self.path, offset, "short write")
                view = view[done:]
        except OSError as exc:
            raise VHDError(self.path, offset, f"write error: {exc.strerror or exc}",
                           exc.errno) from exc
        self.dirty = True

    def truncate(self, size: int) -> None:
        """Set a regular file's size; containers keep theirs."""
        if self.regular:
            try:
                self._f.truncate(size)
            except OSError as exc:
                raise VHDError(self.path, size, f"truncate: {exc.strerror or exc}",
                           exc.errno) from exc
            self.dirty = True

    def sync(self) -> None:
        if self.dirty:
            try:
                self._f.flush()
                os.fsync(self._f.fileno())
            except OSError as exc:
                raise VHDError(self.path, None, f"fsync: {exc.strerror or exc}",
                           exc.errno) from exc
            self.dirty = False

    def close(self) -> None:
        try:
            self.sync()
        finally:
            self._f.close()


def mtime(path: str) -> float:
    """A file's modification time (the parent timestamp of a snapshot)."""
    try:
        return os.stat(path).st_mtime
    except OSError as exc:
        raise VHDError(path, None, f"cannot stat: {exc.strerror or exc}") from exc
