"""LVMSR test helpers: an SR on a loop device driven like xapi drives it.

``LVMSRHarness.run`` executes drivers/LVMSR as a program with xapi-shaped
XML; ``inproc`` sends the same XML through smlib.smapi.handle in this
process (to set scenarios up quickly). Contents are judged by pyvhdi
(libvhdi), an independent reader: the images of a chain are copied out of
their LVs (each up to its physical size, so the trailing footer ends the
copy) into files named as the parent locators name them, and pyvhdi opens
them from there. Writes stay 4 KiB-aligned (pyvhdi's bitmap limitation).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid as uuidlib
import xmlrpc.client
from typing import Optional

from smlib import vhd
from smlib.drivers.lvm import LVMSR
from smlib.stores import lvm
from smlib.stores.lvmstore import LV_PREFIX, MGT_LV, VG_PREFIX, LVMStore

MiB = 1 << 20
KiB = 1 << 10
DISK = 16 * MiB


def pattern(tag: str, length: int = 64 * KiB) -> bytes:
    """A recognisable 4 KiB-aligned pattern."""
    unit = (tag.encode() * 4096)[:4096]
    return unit * (length // 4096)


def pyvhdi_chain_read(directory: str, leaf_file: str, offset: int, length: int) -> bytes:
    import pyvhdi

    chain = [os.path.join(directory, leaf_file)]
    while True:
        f = pyvhdi.file()
        f.open(chain[-1])
        parent = f.get_parent_filename() if f.get_disk_type() == 4 else None
        f.close()
        if not parent:
            break
        chain.append(os.path.join(directory, os.path.basename(parent)))
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


class LVMSRHarness:
    """One LVMSR on ``device``; ``fns`` = (run_driver, xapi_params, dispatch)."""

    def __init__(self, device: str, fns: tuple, sr_uuid: Optional[str] = None) -> None:
        self.fns = fns
        self.device = device
        self.sr_uuid = sr_uuid or str(uuidlib.uuid4())
        self.vg = VG_PREFIX + self.sr_uuid
        self.dc = {"device": device}

    def params(self, command: str, **keys) -> dict:
        return self.fns[1](command, device_config=self.dc, sr_uuid=self.sr_uuid, **keys)

    def run(self, command: str, *, env: Optional[dict] = None, **keys):
        return self.fns[0]("LVMSR", self.params(command, **keys), env=env)

    def ok(self, command: str, **keys):
        r = self.run(command, **keys)
        assert r.returncode == 0, r.stderr
        return r.ok()

    def fault(self, command: str, **keys) -> xmlrpc.client.Fault:
        r = self.run(command, **keys)
        assert r.returncode == 0, r.stderr
        assert r.fault is not None, f"{command} succeeded: {r.result}"
        return r.fault

    def inproc(self, command: str, **keys):
        return self.fns[2](LVMSR, command, device_config=self.dc, sr_uuid=self.sr_uuid, **keys)

    # ------------------------------------------------------------ helpers

    def store(self) -> LVMStore:
        return LVMStore(dict(self.dc), self.sr_uuid)

    def create(self, size: int = DISK, name: str = "disk", call=None) -> str:
        call = call or self.inproc
        return call("vdi_create", args=[str(size), name, "", "", "false", "", "", "false"])["uuid"]

    def write(self, uuid: str, offset: int, data: bytes, call=None) -> None:
        """Write as a guest would: attach (writable), activate, write at the
        path vdi_attach returned, deactivate, detach."""
        call = call or self.inproc
        path = call("vdi_attach", vdi_uuid=uuid, args=["true"])["params"]
        call("vdi_activate", vdi_uuid=uuid, args=["true"])
        with vhd.open_image(path, writable=True) as img:
            img.write(offset, data)
        call("vdi_deactivate", vdi_uuid=uuid)
        call("vdi_detach", vdi_uuid=uuid)

    def read(self, uuid: str, offset: int = 0, length: int = 64 * KiB) -> bytes:
        """The VDI's bytes as pyvhdi reads its chain, copied out of the LVs."""
        store = self.store()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                name: Optional[str] = uuid
                while name:
                    path = store.activate(name)
                    with vhd.open_image(path) as img:
                        size, loc = img.physical_size, img.parent_locator
                    with open(path, "rb") as src, \
                            open(os.path.join(tmp, LV_PREFIX + name), "wb") as dst:
                        dst.write(src.read(size))
                    name = store.name_of_locator(loc) if loc else None
                return pyvhdi_chain_read(tmp, LV_PREFIX + uuid, offset, length)
        finally:
            store.close()

    def vdis(self, call=None) -> dict[str, dict]:
        call = call or self.inproc
        return {v["uuid"]: v for v in call("vdi_list")}

    def lvs(self) -> dict[str, int]:
        """LV name -> size, from a fresh lvm2 report."""
        found = lvm.layout(self.vg)
        return {} if found is None else {n: lv.size for n, lv in found.lvs.items()}

    def hashes(self, skip: tuple = ()) -> dict[str, tuple[int, str]]:
        """Every LV (MGT included, ``skip`` left out) -> (size, sha256 of
        all its bytes)."""
        store = self.store()
        out = {}
        try:
            for lv, size in self.lvs().items():
                if lv in skip:
                    continue
                path = store._activate_lv(lv)
                with open(path, "rb") as f:
                    out[lv] = (size, hashlib.sha256(f.read()).hexdigest())
        finally:
            store.close()
        return out

    def check_all(self) -> None:
        """Every VHD passes the check through its chain; no transient LV, no
        journal record, MGT present."""
        store = self.store()
        try:
            names = self.lvs()
            assert MGT_LV in names
            for lv in names:
                if lv == MGT_LV:
                    continue
                assert lv.startswith(LV_PREFIX), f"stray LV {lv}"
                name = lv[len(LV_PREFIX):]
                assert "." not in name, f"transient LV {lv} left behind"
                vhd.check(store.activate(name), resolver=store.resolver)
            assert store.journal_items() == {}
        finally:
            store.close()
