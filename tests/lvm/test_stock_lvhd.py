"""LVMSR pointed at a stock LVHD SR: every command refused, not one byte written.

A stock LVHD SR (sm's LVHDSR) uses the very names ours does: the VG
``VG_XenStorage-<sr>``, volumes ``VHD-<uuid>``, an ``MGT`` volume, but
holds sm's own metadata format in MGT (libs/sm/srmetadata.py: a header
sector ``XSSM:<length>:1:2``, then XML fragments a sector each). Built here
with real lvm2 on a loop device (metadata-only, as every tests/lvm test),
MGT written in sm's format by ``stock_mgt`` below, one VHD volume holding an
image as vhd-util writes it (smlib.vhd.create, byte-checked against
vhd-util's in tests/vhd/test_golden.py). Every command of drivers/LVMSR run
as a program must fail with a coded fault naming the reason, and the PV's
bytes must be identical afterwards.
"""

import hashlib
import os
import uuid as uuidlib

import pytest
from helpers.loop_pvs import _lvm

from smlib import vhd
from smlib.stores.lvm import lvm2 as lvm

pytestmark = pytest.mark.lvm
MiB = 1024 * 1024
SECTOR = 512


def _sector(data: bytes) -> bytes:
    assert len(data) <= SECTOR
    return data + b" " * (SECTOR - len(data))  # sm pads each sector with spaces


def stock_mgt(sr_uuid: str, vdis: "list[dict]") -> bytes:
    """MGT bytes as sm's LVMMetadataHandler.writeMetadata lays them out:
    4 SR sectors (header, uuid + allocation, name_label, name_description),
    then 2 sectors per VDI; the header holds the used length."""
    body = _sector(b'<?xml version="1.0" ?><uuid>%s</uuid><allocation>thick</allocation>'
                   % sr_uuid.encode())
    body += _sector(b"<name_label>Local storage</name_label>")
    body += _sector(b"<name_description>stock LVHD</name_description>")
    for vdi in vdis:
        body += _sector(b"<vdi><name_label>%s</name_label><name_description></name_description>"
                        % vdi["name_label"].encode())
        rest = "".join(f"<{k}>{v}</{k}>" for k, v in vdi.items() if k != "name_label")
        body += _sector((rest + "<deleted>0</deleted></vdi>").encode())
    length = SECTOR + len(body)
    header = _sector(b"XSSM:%-10d:1:2" % length)
    return header + body


def _write_lv(vg: str, lv: str, data: bytes) -> None:
    """Write `data` at the start of an LV, through the PV at the LV's extents."""
    layout = lvm.layout(vg)
    (_, run), = layout.lvs[lv].segments
    offset = layout.pvs[run.pv].pe_start + run.start * layout.extent_size
    fd = os.open(run.pv, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _data_digest(path: str) -> "list[tuple]":
    """(start, stop, sha256, bytes if small) of every data extent of a sparse
    file: its bytes, without reading 16 GiB of holes."""
    os.sync()  # writes through the loop devices reach the backing file
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        pos = 0
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break  # no data after pos
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            h = hashlib.sha256()
            for chunk in range(start, stop, 4 * MiB):
                h.update(os.pread(fd, min(4 * MiB, stop - chunk), chunk))
            # Small extents (labels, headers) kept whole: a failure shows the bytes.
            small = os.pread(fd, stop - start, start) if stop - start <= 64 * 1024 else b""
            out.append((start, stop, h.hexdigest(), small))
            pos = stop
    finally:
        os.close(fd)
    return out


@pytest.fixture
def stock_sr(loop_pv, tmp_path, monkeypatch):
    monkeypatch.setenv("SMLIB_LVM_LOCK_DIR", str(tmp_path / "locks"))
    dev = loop_pv()
    sr_uuid, vdi_uuid = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    vg = "VG_XenStorage-" + sr_uuid
    for args in (("pvcreate", "-ff", "-y", dev), ("vgcreate", vg, dev),
                 ("lvcreate", "-Zn", "-Wn", "-L", "4m", "-n", "MGT", vg),
                 ("lvcreate", "-Zn", "-Wn", "-L", "8m", "-n", "VHD-" + vdi_uuid, vg)):
        proc = _lvm(*args)
        assert proc.returncode == 0, proc.stderr
    _write_lv(vg, "MGT", stock_mgt(sr_uuid, [{
        "name_label": "stock disk", "uuid": vdi_uuid, "is_a_snapshot": "0",
        "snapshot_of": "", "snapshot_time": "", "type": "user", "vdi_type": "vhd",
        "read_only": "0", "managed": "1", "metadata_of_pool": ""}]))
    image = str(tmp_path / "stock.vhd")
    vhd.create(image, 4 * MiB)
    with open(image, "rb") as f:
        _write_lv(vg, "VHD-" + vdi_uuid, f.read())
    return dev, loop_pv.live[dev], sr_uuid, vdi_uuid


def test_stock_mgt_layout():
    """The helper writes what sm's parser reads: header sector, then XML sectors."""
    mgt = stock_mgt("s", [{"name_label": "d", "uuid": "u"}])
    assert mgt[:20] == b"XSSM:3072      :1:2 " and len(mgt) == 3072  # 4 + 2 sectors
    assert mgt[512:512 + 22] == b'<?xml version="1.0" ?>'
    assert mgt[2048:2053] == b"<vdi>" and mgt[2560:].rstrip().endswith(b"</vdi>")


def test_every_command_is_refused_and_nothing_is_written(stock_sr, run_driver, xapi_params):
    dev, backing, sr_uuid, vdi_uuid = stock_sr
    before = _data_digest(backing)
    assert any(extent[0] == 0 for extent in before)  # the PV label is in there

    def call(command, **keys):
        return run_driver("LVMSR", xapi_params(
            command, device_config={"device": dev}, sr_uuid=sr_uuid, **keys))

    size = str(4 * MiB)
    commands = [
        ("sr_attach", {}), ("sr_scan", {}), ("sr_update", {}), ("sr_detach", {}),
        ("sr_delete", {}),
        ("vdi_create", {"args": [size, "new", "", "", "false", "", "", "false"]}),
        ("vdi_introduce", {"new_uuid": vdi_uuid, "vdi_location": vdi_uuid}),
        ("vdi_list", {}),
    ] + [(c, {"vdi_uuid": vdi_uuid}) for c in (
        "vdi_delete", "vdi_detach", "vdi_activate", "vdi_deactivate",
        "vdi_snapshot", "vdi_clone", "vdi_update")] + [
        ("vdi_attach", {"vdi_uuid": vdi_uuid, "args": ["true"]}),
        ("vdi_resize", {"vdi_uuid": vdi_uuid, "args": [str(8 * MiB)]}),
        ("vdi_revert", {"vdi_uuid": vdi_uuid, "args": [str(uuidlib.uuid4())]}),
    ]
    for command, keys in commands:
        run = call(command, **keys)
        assert run.returncode == 0 and run.fault is not None, (command, run.stdout, run.stderr)
        assert run.fault.faultCode == 181, (command, run.fault)  # MetadataError
        assert "stock storage manager" in run.fault.faultString, (command, run.fault)
        assert sr_uuid in run.fault.faultString

    # sr_create on the stock VG's PV: refused before lvm2 is asked to change anything.
    run = call("sr_create")
    assert run.fault is not None and run.fault.faultCode == 42, run  # SRExists
    assert "VG_XenStorage-" + sr_uuid in run.fault.faultString

    assert _data_digest(backing) == before
    assert sorted(lvm.layout("VG_XenStorage-" + sr_uuid).lvs) == ["MGT", "VHD-" + vdi_uuid]


@pytest.mark.parametrize("content, verdict", [
    (b"", "empty"),                                   # freshly formatted: zero headers
    (None, "stock"),                                  # sm's MGT
    (b"\x7fELF" + bytes(60), "foreign"),              # anything else
])
def test_mgt_load_tells_ours_from_others(tmp_path, content, verdict):
    """mgt.load on a plain file standing for the MGT volume (8 MiB, 2 slots)."""
    from smlib.protocol.errors import SRError
    from smlib.stores.lvm import mgt

    path = str(tmp_path / "MGT")
    size = 8 * MiB
    with open(path, "wb") as f:
        f.truncate(size)
        f.write(stock_mgt("s", []) if content is None else content)
    if verdict == "empty":
        state = mgt.load(path, size, "s")
        assert state.metadata is None and state.journal == {}
        mgt.save(path, size, "s", mgt.State(metadata=b"<sr/>"))
        assert mgt.load(path, size, "s").metadata == b"<sr/>"
        return
    with pytest.raises(SRError) as caught:
        mgt.load(path, size, "s")
    assert caught.value.code == 181
    expected = "stock storage manager" if verdict == "stock" else "smlib did not write"
    assert expected in str(caught.value)
