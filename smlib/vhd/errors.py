"""The one exception the VHD library raises for a malformed or unreadable image."""

from typing import Optional


class VHDError(Exception):
    """What is wrong with which image, and where (byte offset) when known."""

    def __init__(self, path: str, offset: Optional[int], what: str) -> None:
        self.path = path
        self.offset = offset
        self.what = what
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{path}: {what}{where}")
