"""LVMSR test helpers: an SR on a loop device driven like xapi drives it.

The calls (``run`` as a program; ``inproc`` in this process, to set
scenarios up quickly), the test data and the pyvhdi chain reader are shared
with the FileSR tests (tests/helpers/sr_harness.py). Contents are judged by pyvhdi
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
from typing import Optional

from helpers.sr_harness import DISK, KiB, MiB, SRHarness, pattern, pyvhdi_chain_read
from smlib import vhd
from smlib.drivers.lvm import LVMSR
from smlib.stores.lvm import lvm2 as lvm
from smlib.stores.lvm.store import LV_PREFIX, MGT_LV, VG_PREFIX, LVMStore

__all__ = ["DISK", "KiB", "MiB", "LVMSRHarness", "pattern"]


class LVMSRHarness(SRHarness):
    """One LVMSR on ``device``; set-up calls run in process."""

    DRIVER = "LVMSR"
    DRIVER_CLASS = LVMSR

    def __init__(self, device: str, fns: tuple, sr_uuid: Optional[str] = None) -> None:
        super().__init__(fns, sr_uuid or str(uuidlib.uuid4()), {"device": device})
        self.device = device
        self.vg = VG_PREFIX + self.sr_uuid

    def setup(self, command: str, **keys):
        return self.inproc(command, **keys)

    # ------------------------------------------------------------ helpers

    def store(self) -> LVMStore:
        return LVMStore(dict(self.dc), self.sr_uuid)

    def write(self, uuid: str, offset: int, data: bytes, call=None) -> None:
        """Write as a guest would: attach (writable), activate, write at the
        path vdi_attach returned, deactivate, detach."""
        call = call or self.setup
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

    def lvs(self) -> dict[str, int]:
        """LV name -> size, from a fresh lvm2 report."""
        found = lvm.layout(self.vg)
        return {} if found is None else {n: lv.size for n, lv in found.lvs.items()}

    def fingerprint(self) -> dict[str, tuple[int, str]]:
        return self.hashes()

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

    def volume_facts(self) -> dict[str, tuple[str, bool, str]]:
        store = self.store()
        facts = {}
        try:
            for lv in self.lvs():
                if lv == MGT_LV:
                    continue
                name = lv[len(LV_PREFIX):] if lv.startswith(LV_PREFIX) else lv
                with vhd.open_image(store.activate(name)) as img:
                    loc = img.parent_locator
                    facts[name] = (store.name_of_locator(loc) if loc else "", img.hidden,
                                   str(img.virtual_size))
        finally:
            store.close()
        return facts

    def check_consistent(self, call=None) -> dict[str, dict]:
        """As for every SR (SRHarness.check_consistent), and no LV of a
        volume that is not attached holds more than one extent beyond its
        image (bases and detached leaves are deflated: no space leaks)."""
        listing = super().check_consistent(call)
        store = self.store()
        try:
            extent = store.layout().extent_size
            sizes = self.lvs()
            for uuid, v in listing.items():
                if v["attached"]:
                    continue
                with vhd.open_image(store.activate(uuid), resolver=store.resolver) as img:
                    need = img.physical_size
                assert sizes[LV_PREFIX + uuid] < need + extent, f"{uuid}: LV not deflated"
        finally:
            store.close()
        return listing

    # ---------------------------------------- behind the driver's back

    def volume_hashes(self) -> dict[str, object]:
        return {lv[len(LV_PREFIX):]: digest for lv, digest in self.hashes(skip=(MGT_LV,)).items()}

    def damage(self, uuid: str, how) -> None:
        store = self.store()
        try:
            how(store.activate(uuid))
        finally:
            store.close()

    def _bookkeeping(self, change) -> None:
        """Change the MGT state through a store of its own (the driver's
        format, written as the driver writes it)."""
        store = self.store()
        try:
            change(store)
        finally:
            store.close()

    def edit_metadata(self, edit) -> None:
        self._bookkeeping(lambda s: s.write_metadata(edit(s.read_metadata() or b"")))

    def put_journal(self, key: str, data: bytes) -> None:
        self._bookkeeping(lambda s: s.journal_put(key, data))

    def drop_journal(self, key: str) -> None:
        self._bookkeeping(lambda s: s.journal_remove(key))

    def journal_keys(self) -> list[str]:
        keys: list[str] = []
        self._bookkeeping(lambda s: keys.extend(sorted(s.journal_items())))
        return keys

    def volumes(self) -> list[str]:
        return sorted(lv[len(LV_PREFIX):] for lv in self.lvs() if lv.startswith(LV_PREFIX))

    def drop_volume(self, uuid: str) -> None:
        lvm.lvremove(self.vg, [LV_PREFIX + uuid])
