"""The one exception the VHD library raises for a malformed or unreadable image."""

from typing import Optional


class VHDError(Exception):
    """What is wrong with which image, and where (byte offset) when known."""

    def __init__(self, path: str, offset: Optional[int], what: str,
                 errno: Optional[int] = None) -> None:
        self.path = path
        self.offset = offset
        self.what = what
        self.errno = errno        # the OSError's, when an I/O call failed (ENOSPC: no space)
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{path}: {what}{where}")
