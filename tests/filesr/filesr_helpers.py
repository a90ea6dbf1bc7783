"""FileSR test helpers: an SR in a temporary directory driven like xapi drives it.

``FileSRHarness.run`` executes drivers/FileSR as a program with xapi-shaped
XML (tests/conftest.py builds it); ``FileSRHarness.inproc`` sends the same
XML through smlib.smapi.handle in this process (for long scenarios).
Contents are judged by pyvhdi (libvhdi), an independent reader that finds
the parents from the images' own headers; writes stay 4 KiB-aligned
because pyvhdi mis-decodes sub-4-KiB bitmaps.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid as uuidlib
import xmlrpc.client
from typing import Optional

from smlib import vhd
from smlib.drivers.file import FileSR

MiB = 1 << 20
KiB = 1 << 10
DISK = 16 * MiB  # default test disk: 8 VHD blocks


def pattern(tag: str, length: int = 64 * KiB) -> bytes:
    """A recognisable 4 KiB-aligned pattern."""
    unit = (tag.encode() * 4096)[:4096]
    return unit * (length // 4096)


def tree_hashes(root: str) -> dict[str, str]:
    """Every file under root (the SR dir, bookkeeping included) -> sha256."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def pyvhdi_read(path: str, offset: int, length: int) -> bytes:
    """Read through a chain with pyvhdi, parents found from each header's
    parent name (relative to the child's directory), opened base first."""
    import pyvhdi

    chain = [path]
    while True:
        f = pyvhdi.file()
        f.open(chain[-1])
        parent_name = f.get_parent_filename() if f.get_disk_type() == 4 else None
        f.close()
        if not parent_name:
            break
        chain.append(os.path.join(os.path.dirname(path), os.path.basename(parent_name)))
    files = []
    try:
        for p in reversed(chain):
            f = pyvhdi.file()
            f.open(p)
            if files:
                f.set_parent(files[-1])
            files.append(f)
        return files[-1].read_buffer_at_offset(length, offset)
    finally:
        for f in reversed(files):
            f.close()


class FileSRHarness:
    """One SR; run_driver / xapi_params / dispatch are the shared fixtures'
    functions (tests/conftest.py)."""

    def __init__(self, root: str, fns: tuple) -> None:
        self.fns = fns
        self.location = os.path.join(root, "sr")
        self.sr_uuid = str(uuidlib.uuid4())
        self.dc = {"location": self.location}

    def params(self, command: str, **keys) -> dict:
        keys = {"device_config": self.dc, "sr_uuid": self.sr_uuid, **keys}
        return self.fns[1](command, **keys)

    def run(self, command: str, *, env: Optional[dict] = None, **keys):
        """The real executable; returns the DriverRun."""
        return self.fns[0]("FileSR", self.params(command, **keys), env=env)

    def ok(self, command: str, **keys):
        r = self.run(command, **keys)
        assert r.returncode == 0, r.stderr
        return r.ok()

    def inproc(self, command: str, **keys):
        """Same XML, in this process (raises xmlrpc.client.Fault)."""
        return self.fns[2](FileSR, command, device_config=self.dc, sr_uuid=self.sr_uuid, **keys)

    def fault(self, command: str, **keys) -> xmlrpc.client.Fault:
        r = self.run(command, **keys)
        assert r.returncode == 0, r.stderr
        assert r.fault is not None, f"{command} succeeded: {r.result}"
        return r.fault

    # -------------------------------------------------------- helpers

    def path(self, uuid: str) -> str:
        return os.path.join(self.location, uuid + ".vhd")

    def create(self, size: int = DISK, name: str = "disk", call=None) -> str:
        call = call or self.ok
        return call("vdi_create", args=[str(size), name, "", "", "false", "", "", "false"])["uuid"]

    def write(self, uuid: str, offset: int, data: bytes, call=None) -> None:
        """Write as a guest would: attach (writable), write at the path
        vdi_attach returned, detach."""
        call = call or self.ok
        params = call("vdi_attach", vdi_uuid=uuid, args=["true"])["params"]
        assert params == self.path(uuid)
        with vhd.open_image(params, writable=True) as img:
            img.write(offset, data)
        call("vdi_detach", vdi_uuid=uuid)

    def read(self, uuid: str, offset: int = 0, length: int = 64 * KiB) -> bytes:
        return pyvhdi_read(self.path(uuid), offset, length)

    def vdis(self, call=None) -> dict[str, dict]:
        call = call or self.ok
        return {v["uuid"]: v for v in call("vdi_list")}

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

    def check_consistent(self, call=None) -> dict[str, dict]:
        """After GC: no volume the metadata does not know (and the reverse),
        no base without children, metadata parents / hidden flags / sizes
        as the images say, every image valid, no journal. Returns vdi_list."""
        listing = self.vdis()
        on_disk = sorted(f[:-4] for f in self.files() if f.endswith(".vhd"))
        assert on_disk == sorted(listing)
        parents = {v["parent"] for v in listing.values()}
        for uuid, v in listing.items():
            if v["hidden"]:
                assert uuid in parents, f"leaked base {uuid}"
            with vhd.open_image(self.path(uuid)) as img:
                loc = img.parent_locator
                assert (loc[:-4] if loc else "") == v["parent"]
                assert img.hidden == v["hidden"]
                assert str(img.virtual_size) == v["virtual_size"]
        self.check_all()
        return listing

    def copy_to(self, dest_root: str) -> FileSRHarness:
        """A copy of this SR (same uuid) under dest_root."""
        other = FileSRHarness(dest_root, self.fns)
        other.sr_uuid = self.sr_uuid
        shutil.copytree(self.location, other.location)
        return other
