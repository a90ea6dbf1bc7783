"""Parent locators: the relative name a child records for its parent."""

import os
from typing import Optional

from . import format as fmt
from . import geometry as geo
from .errors import VHDError
from .rawio import mtime


def relative_locator(child_path: str, parent_path: str,
                     parent_locator: Optional[str]) -> str:
    """The './name' form blktap writes; refuses what the locators cannot hold."""
    name = parent_locator
    if name is None:
        name = os.path.relpath(os.path.abspath(parent_path),
                               os.path.dirname(os.path.abspath(child_path)))
        if name.startswith(".."):
            raise VHDError(child_path, None,
                           f"parent {parent_path} is outside the child's directory")
    if not name or os.path.isabs(name):
        raise VHDError(child_path, None, f"bad parent locator {name!r}")
    rel = name if name.startswith(("./", "../")) else "./" + name
    for code in fmt.SNAPSHOT_LOCATORS:
        if len(fmt.encode_locator(code, rel)) > geo.LOCATOR_SPACE:
            raise VHDError(child_path, None,
                           f"parent locator {name!r} longer than the locator space")
    if len(os.path.basename(rel).encode("utf-16-be")) > fmt.PARENT_NAME_SIZE:
        raise VHDError(child_path, None, f"parent name {name!r} too long")
    return rel


def parent_fields(header: fmt.Header, parent_uuid: bytes, parent_path: str, rel: str,
                  locator_base: int) -> bytes:
    """Fill header's parent fields; return the three locator payload sectors."""
    header.parent_uuid = parent_uuid
    header.parent_timestamp = fmt.vhd_time(mtime(parent_path))
    header.parent_name = os.path.basename(rel)
    payload = bytearray()
    for i, code in enumerate(fmt.SNAPSHOT_LOCATORS):
        data = fmt.encode_locator(code, rel)
        header.locators[i] = fmt.Locator(code, geo.LOCATOR_SPACE, len(data),
                                         locator_base + len(payload))
        payload += data + bytes(geo.LOCATOR_SPACE - len(data))
    for i in range(len(fmt.SNAPSHOT_LOCATORS), fmt.LOCATOR_COUNT):
        header.locators[i] = fmt.Locator()
    return bytes(payload)
