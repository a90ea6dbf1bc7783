"""A stand-in xapi for driver tests: the toolstack's own XenAPI server.

``StandIn`` runs smlib.toolstack.server.XapiServer in this process, over a
real SQLite record store (the toolstack's database) on a real Unix socket;
the drivers run as programs and reach it through ``SMLIB_XAPI_SOCKET`` with the
session it issued, exactly as they reach xapi through /var/lib/xcp/xapi.
``XapiFileSR`` is a FileSR harness whose calls carry the keys xapi's sm_exec
builds from that store: the SR's ref, the session, and for a VDI its ref,
uuid and location from the record.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from typing import Optional

from helpers.filesr_helpers import FileSRHarness
from smlib.toolstack.db import Database, SRRecord, VDIRecord
from smlib.toolstack.record import replace
from smlib.toolstack.server import XapiServer


def without_storage_facts(rec: VDIRecord) -> VDIRecord:
    """A record less what its driver refreshes as the chain and the bytes
    change (physical_utilisation, sm_config's vhd-parent): an operation that
    was undone leaves a new base under a disk, and writes grow it, without
    changing what the record says about the disk."""
    return replace(rec, physical_utilisation=0, sm_config={})


class StandIn:
    def __init__(self, directory: str) -> None:
        self.db = Database(os.path.join(directory, "xapi.db"))
        self.server = XapiServer(self.db.path)
        self.path = self.server.start()
        self.session = self.server.new_session()

    def close(self) -> None:
        self.server.stop()
        self.db.close()

    @property
    def env(self) -> dict:
        return {"SMLIB_XAPI_SOCKET": self.path}

    @property
    def calls(self) -> list[str]:
        return self.server.api.calls

    def add_sr(self, sr_type: str, sr_uuid: str, device_config: dict) -> SRRecord:
        return self.db.insert(SRRecord(f"OpaqueRef:{uuidlib.uuid4()}", sr_uuid, sr_type,
                                       device_config=dict(device_config)))

    def sr(self, sr_uuid: str) -> SRRecord:
        return self.db.by_uuid(SRRecord, sr_uuid)

    def vdi(self, uuid: str) -> Optional[VDIRecord]:
        return self.db.by_uuid(VDIRecord, uuid)

    def vdis(self, sr_uuid: str) -> dict[str, VDIRecord]:
        return {v.uuid: v for v in self.db.select(VDIRecord, sr_ref=self.sr(sr_uuid).ref)}


class XapiFileSR(FileSRHarness):
    """A FileSR known to the stand-in; calls as sm_exec makes them."""

    def __init__(self, root: str, fns: tuple, standin: StandIn) -> None:
        super().__init__(root, fns)
        self.xapi = standin
        self.record = standin.add_sr("file", self.sr_uuid, self.dc)

    def params(self, command: str, **keys) -> dict:
        keys.setdefault("sr_ref", self.record.ref)
        keys.setdefault("session_ref", self.xapi.session)
        vdi = keys.get("vdi_uuid")
        rec = self.xapi.vdi(vdi) if vdi and command != "vdi_create" else None
        if rec is not None:
            keys.setdefault("vdi_ref", rec.ref)
            keys.setdefault("vdi_location", rec.location)
            keys.setdefault("vdi_type", rec.type)
        return super().params(command, **keys)

    def run(self, command: str, *, env: Optional[dict] = None, **keys):
        return super().run(command, env={**self.xapi.env, **(env or {})}, **keys)

    def records(self) -> dict[str, VDIRecord]:
        return self.xapi.vdis(self.sr_uuid)
