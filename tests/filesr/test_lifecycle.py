"""The rest of the SMAPIv1 lifecycle through the real executable."""

from __future__ import annotations

import os
import uuid as uuidlib
import xml.etree.ElementTree as ET

from helpers.filesr_helpers import DISK, FileSRHarness, pattern, tree_hashes

from smlib import vhd

LIST_KEYS = {"uuid", "location", "virtual_size", "physical_utilisation", "parent", "hidden",
             "read_only", "is_a_snapshot", "snapshot_of", "name_label", "attached",
             "damaged"}


def test_sr_create_adopts_only_an_empty_directory(tmp_path, harness_fns):
    sr = FileSRHarness(str(tmp_path), harness_fns)
    os.makedirs(sr.location)
    assert sr.ok("sr_create") is None  # adopts the empty directory
    assert os.path.isdir(os.path.join(sr.location, ".sm"))
    other = FileSRHarness(str(tmp_path / "b"), harness_fns)
    os.makedirs(other.location)
    with open(os.path.join(other.location, "precious.txt"), "w") as f:
        f.write("keep me")
    assert other.fault("sr_create").faultCode == 42
    assert os.listdir(other.location) == ["precious.txt"]
    missing = FileSRHarness(str(tmp_path / "c"), harness_fns)
    assert missing.fault("sr_attach").faultCode == 47
    r = missing.run("sr_create", device_config={})
    assert r.fault.faultCode == 94


def test_probe_attach_detach_update_scan(filesr):
    sr = filesr
    found = ET.fromstring(sr.ok("sr_probe"))
    assert [e.text for e in found.iter("UUID")] == [sr.sr_uuid]
    for command in ("sr_attach", "sr_update", "sr_scan", "sr_detach"):
        assert sr.ok(command) is None
    info = sr.ok("sr_get_driver_info")
    assert "VDI_REVERT" in info["capabilities"] and "VDI_SNAPSHOT" in info["capabilities"]


def test_vdi_create_records_its_arguments(filesr):
    sr = filesr
    src = str(uuidlib.uuid4())
    res = sr.ok("vdi_create", args=[str(DISK - 1000), "my disk", "a description", "",
                                    "true", "20260101T00:00:00Z", src, "true"])
    assert res["virtual_size"] == str(DISK)  # rounded up to whole 2 MiB blocks
    v = sr.vdis()[res["uuid"]]
    assert set(v) == LIST_KEYS
    assert (v["name_label"], v["is_a_snapshot"], v["snapshot_of"], v["read_only"]) == \
        ("my disk", True, src, True)
    assert v["location"] == res["uuid"] == res["location"]
    assert v["parent"] == "" and v["hidden"] is False and v["attached"] is False
    assert v["damaged"] == ""


def test_attach_activate_state(filesr):
    sr = filesr
    t = sr.create()
    att = sr.ok("vdi_attach", vdi_uuid=t, args=["true"])
    assert att["params"] == sr.path(t)
    assert sr.vdis()[t]["attached"] is True
    sr.ok("vdi_activate", vdi_uuid=t, args=["true"])
    assert sr.fault("vdi_delete", vdi_uuid=t).faultCode == 24
    sr.ok("vdi_deactivate", vdi_uuid=t)
    sr.ok("vdi_detach", vdi_uuid=t)
    assert sr.vdis()[t]["attached"] is False
    assert sr.ok("vdi_update", vdi_uuid=t) is None
    assert sr.ok("vdi_delete", vdi_uuid=t) is None
    assert sr.files() == [".sm"]


def test_introduce_and_scan_adopt_existing_images(filesr):
    sr = filesr
    stray = str(uuidlib.uuid4())
    vhd.create(sr.path(stray), DISK)
    with vhd.open_image(sr.path(stray), writable=True) as img:
        img.write(0, pattern("X"))
    res = sr.ok("vdi_introduce", vdi_location=stray, new_uuid=stray,
                vdi_sm_config={"name_label": "found"})
    assert res["uuid"] == stray
    assert sr.vdis()[stray]["name_label"] == "found"
    assert sr.fault("vdi_introduce", vdi_location=stray, new_uuid=stray).faultCode == 43
    nothing = str(uuidlib.uuid4())
    assert sr.fault("vdi_introduce", vdi_location=nothing, new_uuid=nothing).faultCode == 144
    # sr_scan adopts an image it finds, and forgets a record whose image is gone.
    other = str(uuidlib.uuid4())
    vhd.create(sr.path(other), DISK)
    os.unlink(sr.path(stray))
    sr.ok("sr_scan")
    assert sorted(sr.vdis()) == [other]
    assert sr.read(other) == bytes(64 * 1024)


def test_delete_of_single_snapshot_parent_hides_it(filesr):
    sr = filesr
    t = sr.create()
    sr.write(t, 0, pattern("A"))
    single = sr.ok("vdi_snapshot", vdi_uuid=t, driver_params={"type": "single"})["uuid"]
    sr.write(t, 0, pattern("B"))
    sr.ok("vdi_delete", vdi_uuid=single)
    listing = sr.vdis()
    assert listing[single]["hidden"] is True  # still T's parent
    assert sr.read(t) == pattern("B")
    sr.ok("vdi_delete", vdi_uuid=t)
    assert sr.files() == [".sm"]  # GC pruned the base once nothing needed it
    # The bookkeeping that sr_delete must remove is there before it runs.
    assert ".sm/metadata.xml" in tree_hashes(sr.location)
    assert sr.ok("sr_delete") is None
    assert os.listdir(sr.location) == []
