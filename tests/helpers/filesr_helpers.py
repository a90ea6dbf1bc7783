"""FileSR test helpers: an SR in a temporary directory driven like xapi drives it.

The calls (``run`` as a program, ``inproc`` in this process, for long
scenarios), the test data and the pyvhdi chain reader are shared with the
LVMSR tests (tests/helpers/sr_harness.py). Contents are judged by pyvhdi (libvhdi),
an independent reader that finds the parents from the images' own headers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid as uuidlib

from helpers.sr_harness import DISK, KiB, MiB, SRHarness, pattern, pyvhdi_chain_read
from smlib import vhd
from smlib.drivers.file import FileSR

__all__ = ["DISK", "KiB", "MiB", "FileSRHarness", "pattern", "pyvhdi_read", "tree_hashes"]


def pyvhdi_read(path: str, offset: int, length: int) -> bytes:
    """Read through a chain with pyvhdi, parents found from each header's
    parent name (relative to the child's directory), opened base first."""
    return pyvhdi_chain_read(os.path.dirname(path), os.path.basename(path), offset, length)


def tree_hashes(root: str) -> dict[str, str]:
    """Every file under root (the SR dir, bookkeeping included) -> sha256."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


class FileSRHarness(SRHarness):
    """One FileSR in ``root``/sr; every call runs the real executable unless
    the test says otherwise."""

    DRIVER = "FileSR"
    DRIVER_CLASS = FileSR

    def __init__(self, root: str, fns: tuple) -> None:
        self.location = os.path.join(root, "sr")
        super().__init__(fns, str(uuidlib.uuid4()), {"location": self.location})

    def setup(self, command: str, **keys):
        return self.ok(command, **keys)

    # -------------------------------------------------------- helpers

    def path(self, uuid: str) -> str:
        return os.path.join(self.location, uuid + ".vhd")

    def write(self, uuid: str, offset: int, data: bytes, call=None) -> None:
        """Write as a guest would: attach (writable), write at the path
        vdi_attach returned, detach."""
        call = call or self.setup
        params = call("vdi_attach", vdi_uuid=uuid, args=["true"])["params"]
        assert params == self.path(uuid)
        with vhd.open_image(params, writable=True) as img:
            img.write(offset, data)
        call("vdi_detach", vdi_uuid=uuid)

    def read(self, uuid: str, offset: int = 0, length: int = 64 * KiB) -> bytes:
        return pyvhdi_read(self.path(uuid), offset, length)

    def fingerprint(self) -> dict[str, str]:
        return tree_hashes(self.location)

    def files(self) -> list[str]:
        return sorted(os.listdir(self.location))

    def check_all(self) -> None:
        """Every image passes the VHD check; no journal, no leftovers."""
        for name in self.files():
            if name.endswith(".vhd"):
                vhd.check(os.path.join(self.location, name))
            else:
                assert name == ".sm", f"stray file {name}"
        assert os.listdir(os.path.join(self.location, ".sm", "journal")) == []

    def volume_facts(self) -> dict[str, tuple[str, bool, str]]:
        facts = {}
        for name in self.files():
            if name.endswith(".vhd"):
                with vhd.open_image(os.path.join(self.location, name)) as img:
                    loc = img.parent_locator
                    facts[name[:-4]] = (loc[:-4] if loc else "", img.hidden,
                                        str(img.virtual_size))
        return facts

    # ---------------------------------------- behind the driver's back

    def volume_hashes(self) -> dict[str, object]:
        return {name[:-4]: digest for name, digest in self.fingerprint().items()
                if name.endswith(".vhd") and os.sep not in name}

    def damage(self, uuid: str, how) -> None:
        how(self.path(uuid))

    def edit_metadata(self, edit) -> None:
        path = os.path.join(self.location, ".sm", "metadata.xml")
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(edit(data))

    def put_journal(self, key: str, data: bytes) -> None:
        with open(os.path.join(self.location, ".sm", "journal", key), "wb") as f:
            f.write(data)

    def drop_journal(self, key: str) -> None:
        os.unlink(os.path.join(self.location, ".sm", "journal", key))

    def journal_keys(self) -> list[str]:
        return sorted(os.listdir(os.path.join(self.location, ".sm", "journal")))

    def volumes(self) -> list[str]:
        return sorted(f[:-4] for f in self.files() if f.endswith(".vhd"))

    def drop_volume(self, uuid: str) -> None:
        os.unlink(self.path(uuid))

    def copy_to(self, dest_root: str) -> FileSRHarness:
        """A copy of this SR (same uuid) under dest_root."""
        other = FileSRHarness(dest_root, self.fns)
        other.sr_uuid = self.sr_uuid
        shutil.copytree(self.location, other.location)
        return other
