"""LVMSR keeps xapi's database as sm's LVHD driver does (real lvm2 on a loop
device). The same change-set code as FileSR's (smlib/drivers/tree_sr.py ->
smlib/xapi/db.py), with the LVM store's sizes and utilisation; the records
live in the stand-in xapi (tests/helpers/xapi_standin.py) served in this
process, the driver runs in process too (lvm2 makes driver processes slow).
"""

from __future__ import annotations

from helpers.sr_harness import DISK
from helpers.xapi_standin import StandIn

CREATE = [str(DISK), "data", "", "OpaqueRef:NULL", "false", "", "OpaqueRef:NULL", "false"]


def test_lvmsr_keeps_xapis_database(lvmsr, tmp_path, monkeypatch):
    xapi = StandIn(str(tmp_path / "xapi"))
    try:
        sr = xapi.add_sr("lvm", lvmsr.sr_uuid, lvmsr.dc)
        monkeypatch.setenv("SMLIB_XAPI_SOCKET", xapi.path)
        keys = dict(sr_ref=sr.ref, session_ref=xapi.session)

        def vdi_keys(uuid):
            rec = xapi.vdi(uuid)
            return dict(vdi_uuid=uuid, vdi_ref=rec.ref, vdi_location=rec.location, **keys)

        disk = lvmsr.inproc("vdi_create", args=CREATE, **keys)["uuid"]
        rec = xapi.vdi(disk)
        assert rec.virtual_size == DISK and rec.managed and rec.physical_utilisation > 0
        snap = lvmsr.inproc("vdi_snapshot", **vdi_keys(disk))["uuid"]
        recs = xapi.vdis(lvmsr.sr_uuid)
        base = recs[disk].sm_config["vhd-parent"]
        assert not recs[base].managed and recs[base].read_only
        assert recs[snap].sm_config == {"vhd-parent": base}
        srec = xapi.sr(lvmsr.sr_uuid)
        assert srec.physical_size > srec.physical_utilisation > 0
        lvmsr.inproc("vdi_resize", args=[str(2 * DISK)], **vdi_keys(disk))
        assert xapi.vdi(disk).virtual_size == 2 * DISK
        lvmsr.inproc("vdi_delete", **vdi_keys(snap))
        listed = {v["uuid"] for v in lvmsr.inproc("vdi_list", **keys)}
        assert set(xapi.vdis(lvmsr.sr_uuid)) == listed and snap not in listed
        xapi.db.update(xapi.vdi(disk), virtual_size=1)
        lvmsr.inproc("sr_scan", **keys)
        assert xapi.vdi(disk).virtual_size == 2 * DISK
    finally:
        xapi.close()
