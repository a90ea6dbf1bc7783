"""vdi import / export / copy, raw and VHD, on a real FileSR.

Every driver call is a real drivers/FileSR process. The VHDs come from the
independent tools (qemu-img convert, blktap's vhd-util through the golden
images) and what we export is judged by them too: qemu-img compare reads
it, smlib.vhd.check applies blktap's rules, pyvhdi reads it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess

import pytest
from helpers.smctl_run import sparse_file
from helpers.xapi_standin import without_storage_facts

from smlib import vhd
from smlib.toolstack.db import VDIRecord
from smlib.toolstack.runner import ToolstackError
from smlib.toolstack.transfer import finish_vdi_import, vdi_copy, vdi_export, vdi_import

MiB = 1 << 20
# blktap's vhd-util images beside the checkout (../shared/vhd-golden), as tests/vhd finds them.
GOLDEN = os.environ.get("VHD_GOLDEN", os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                                   "shared", "vhd-golden"))
if not os.path.isdir(GOLDEN):
    GOLDEN = "/work/shared/vhd-golden"
needs_qemu = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


@pytest.fixture
def sr(ts, tmp_path):
    location = tmp_path / "sr"
    location.mkdir()
    return ts.sr_create("file", {"location": str(location)}, "local")


def data(seed: int, size: int) -> bytes:
    """Reproducible bytes, 4 KiB-aligned runs (pyvhdi judges some of them)."""
    run = hashlib.sha256(str(seed).encode()).digest() * 128
    return (run * (size // len(run) + 1))[:size]


def digest(blob: bytes) -> str:
    # Compared as hashes: pytest's diff of megabytes of bytes runs for minutes.
    return hashlib.sha256(blob).hexdigest()


def disk_bytes(ts, vdi, tmp_path) -> bytes:
    out = tmp_path / "disk.raw"
    vdi_export(ts, ts.db.get(VDIRecord, vdi.ref), str(out), force=True)
    return out.read_bytes()


def raw_file(tmp_path, name: str, chunks: dict[int, bytes], size: int) -> str:
    return sparse_file(tmp_path / name, chunks, size)


def expected(chunks: dict[int, bytes], size: int, under: bytes = b"") -> bytes:
    out = bytearray(under or bytes(size))
    for offset, blob in chunks.items():
        out[offset:offset + len(blob)] = blob
    return bytes(out)


# -- import of VHDs made by other tools ---------------------------------------


@needs_qemu
def test_import_a_qemu_img_dynamic_vhd(ts, sr, tmp_path):
    chunks = {0: data(1, 70 * 1024), 5 * MiB: data(2, 8192), 7 * MiB: data(3, 4096)}
    raw = raw_file(tmp_path, "src.raw", chunks, 8 * MiB)
    made = str(tmp_path / "src.vhd")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic",
                    raw, made], check=True)
    # qemu-img rounds the size up to a CHS geometry: a little over 8 MiB.
    assert os.path.getsize(made) > 0
    disk = ts.vdi_create(sr, 8 * MiB, "target")
    vdi_import(ts, disk, made, fmt="vhd")
    assert digest(disk_bytes(ts, disk, tmp_path)) == digest(expected(chunks, 8 * MiB))


@needs_qemu
def test_import_a_qemu_img_fixed_vhd(ts, sr, tmp_path):
    chunks = {MiB: data(4, 4096)}
    raw = raw_file(tmp_path, "src.raw", chunks, 4 * MiB)
    made = str(tmp_path / "fixed.vhd")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed",
                    raw, made], check=True)
    disk = ts.vdi_create(sr, 8 * MiB, "target")
    vdi_import(ts, disk, made, fmt="vhd")
    assert digest(disk_bytes(ts, disk, tmp_path)) == digest(expected(chunks, 8 * MiB))


def test_import_a_vhd_util_image_writes_its_allocated_blocks(ts, sr, tmp_path):
    # dyn-4M-filled.vhd: vhd-util create + fill, every block allocated (zeros).
    if not os.path.isdir(GOLDEN):
        pytest.skip("vhd-golden references not available")
    old = data(5, 6 * MiB)
    disk = ts.vdi_create(sr, 6 * MiB, "target")
    vdi_import(ts, disk, raw_file(tmp_path, "old.raw", {0: old}, 6 * MiB))
    vdi_import(ts, disk, os.path.join(GOLDEN, "dyn-4M-filled.vhd"), fmt="vhd")
    assert digest(disk_bytes(ts, disk, tmp_path)) == digest(bytes(4 * MiB) + old[4 * MiB:])


# -- export as VHD --------------------------------------------------------------


def judge_vhd(path: str, raw: str) -> None:
    """blktap's rules, then the independent readers."""
    vhd.check(path)
    with vhd.open_image(path) as img:
        assert img.footer.creator_app == b"tap\0" and img.disk_type == 3
    if shutil.which("qemu-img"):
        # qemu-img check has no checker for vpc (it exits 63 saying so): it
        # must not find corruption; compare reads every sector.
        checked = subprocess.run(["qemu-img", "check", "-f", "vpc", path],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert checked.returncode in (0, 63) and "corrupt" not in checked.stdout.lower()
        same = subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw", path, raw],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert same.returncode == 0, same.stdout


def test_export_vhd_passes_blktap_rules_and_qemu(ts, sr, tmp_path):
    chunks = {0: data(6, MiB), 3 * MiB: data(7, 4096), 9 * MiB + 4096: data(8, 8192)}
    disk = ts.vdi_create(sr, 10 * MiB, "source")
    raw = raw_file(tmp_path, "src.raw", chunks, 10 * MiB)
    vdi_import(ts, disk, raw)
    ts.vdi_snapshot(disk)  # the disk is now a differencing leaf: export reads its chain
    out = str(tmp_path / "out.vhd")
    vdi_export(ts, ts.db.get(VDIRecord, disk.ref), out, fmt="vhd")
    judge_vhd(out, raw)
    with vhd.open_image(out) as img:
        # Zero blocks stay unallocated: blocks 0, 1 and 4 hold data.
        assert img.allocated_blocks() == [0, 1, 4] and img.virtual_size == 10 * MiB
    pyvhdi = pytest.importorskip("pyvhdi")
    f = pyvhdi.file()
    f.open(out)
    try:
        assert digest(f.read_buffer(10 * MiB)) == digest(expected(chunks, 10 * MiB))
    finally:
        f.close()


def test_delta_export_holds_only_changed_blocks_and_applies_onto_a_copy_of_base(
        ts, sr, tmp_path):
    first = {0: data(9, 2 * MiB), 4 * MiB: data(10, 2 * MiB), 8 * MiB: data(11, MiB)}
    disk = ts.vdi_create(sr, 12 * MiB, "disk")
    vdi_import(ts, disk, raw_file(tmp_path, "a.raw", first, 12 * MiB))
    base = ts.vdi_snapshot(disk)
    # Change block 2 (a few sectors), zero block 4, leave 0 and 8 alone.
    change = {2 * MiB + 8192: data(12, 4096), 4 * MiB: bytes(2 * MiB)}
    leaf = expected(change, 12 * MiB, expected(first, 12 * MiB))
    vdi_import(ts, ts.db.get(VDIRecord, disk.ref), raw_file(tmp_path, "b.raw", {0: leaf},
                                                            12 * MiB))
    delta = str(tmp_path / "delta.vhd")
    vdi_export(ts, ts.db.get(VDIRecord, disk.ref), delta, fmt="vhd", base=base)
    vhd.check(delta)
    with vhd.open_image(delta) as img:
        assert img.allocated_blocks() == [1, 2]  # the changed ones, zeros included
    # xe's way: a copy of the base, the delta imported over it, equals the leaf.
    copy = vdi_copy(ts, base, ts.sr_of(base))
    # Against an unrelated disk (no shared image) with the base's contents: the
    # blocks are compared, and again only the changed ones are written.
    vdi_export(ts, ts.db.get(VDIRecord, disk.ref), delta, fmt="vhd", base=copy, force=True)
    with vhd.open_image(delta) as img:
        assert img.allocated_blocks() == [1, 2]
    vdi_import(ts, copy, delta, fmt="vhd")
    assert digest(disk_bytes(ts, copy, tmp_path)) == digest(leaf)
    # Against itself: an empty delta.
    vdi_export(ts, ts.db.get(VDIRecord, disk.ref), delta, fmt="vhd",
               base=ts.db.get(VDIRecord, disk.ref), force=True)
    with vhd.open_image(delta) as img:
        assert img.allocated_blocks() == []


def test_base_needs_vhd(ts, sr, tmp_path):
    disk = ts.vdi_create(sr, 2 * MiB, "disk")
    with pytest.raises(ToolstackError) as caught:
        vdi_export(ts, disk, str(tmp_path / "x.raw"), base=disk)
    assert "format=vhd" in str(caught.value)
    assert not (tmp_path / "x.raw").exists()


# -- damaged images: refused, nothing changed ------------------------------------


def _damaged(tmp_path, kind: str) -> str:
    path = str(tmp_path / f"{kind}.vhd")
    vhd.create(path, 4 * MiB)
    with vhd.open_image(path, writable=True) as img:
        img.write(0, data(24, 4 * MiB))
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if kind == "footer-checksum":      # both footer copies
            for at in (0, size - 512):
                f.seek(at + 64)
                f.write(b"\0\0\0\1")
        elif kind == "header-cookie":
            f.seek(512)
            f.write(b"xxxxxxxx")
        elif kind == "truncated":          # the last block's data cut off
            f.truncate(size - 1024 * 1024)
        elif kind == "bat-overlap":        # block 1 pointed into block 0
            f.seek(1536)
            first = struct.unpack(">I", f.read(4))[0]
            f.seek(1536 + 4)
            f.write(struct.pack(">I", first + 8))
    return path


@pytest.mark.parametrize("kind", ["footer-checksum", "header-cookie", "truncated",
                                  "bat-overlap", "differencing", "not-a-vhd"])
def test_damaged_vhd_is_refused_and_changes_nothing(ts, sr, tmp_path, kind):
    old = data(13, 4 * MiB)
    disk = ts.vdi_create(sr, 4 * MiB, "target")
    vdi_import(ts, disk, raw_file(tmp_path, "old.raw", {0: old}, 4 * MiB))
    before = ts.db.select(VDIRecord)
    if kind == "differencing":
        vhd.create(str(tmp_path / "parent.vhd"), 4 * MiB)
        path = str(tmp_path / "child.vhd")
        vhd.snapshot(path, str(tmp_path / "parent.vhd"))
    elif kind == "not-a-vhd":
        path = raw_file(tmp_path, "plain.raw", {0: data(14, 4096)}, MiB)
    else:
        path = _damaged(tmp_path, kind)
    with pytest.raises(ToolstackError) as caught:
        vdi_import(ts, disk, path, fmt="vhd", rollback=True)
    assert caught.value.name == "IMPORT_VHD_INVALID", caught.value
    assert path in str(caught.value)
    assert ts.db.select(VDIRecord) == before
    assert digest(disk_bytes(ts, disk, tmp_path)) == digest(old)


# -- short raw images, exact= ---------------------------------------------------------


def test_short_raw_import_keeps_the_rest_unless_exact(ts, sr, tmp_path):
    old = data(15, 8 * MiB)
    disk = ts.vdi_create(sr, 8 * MiB, "disk")
    vdi_import(ts, disk, raw_file(tmp_path, "old.raw", {0: old}, 8 * MiB))
    short = data(16, 24 * 1024)
    path = raw_file(tmp_path, "short.raw", {0: short}, len(short))
    vdi_import(ts, disk, path)
    assert digest(disk_bytes(ts, disk, tmp_path)) == digest(short + old[len(short):])
    vdi_import(ts, disk, path, exact=True)
    assert digest(disk_bytes(ts, disk, tmp_path)) == digest(short + bytes(8 * MiB - len(short)))


def test_exact_vhd_import_zeros_its_unallocated_blocks(ts, sr, tmp_path):
    old = data(17, 6 * MiB)
    disk = ts.vdi_create(sr, 6 * MiB, "disk")
    vdi_import(ts, disk, raw_file(tmp_path, "old.raw", {0: old}, 6 * MiB))
    image = str(tmp_path / "one.vhd")
    vhd.create(image, 6 * MiB)
    with vhd.open_image(image, writable=True) as img:
        img.write(2 * MiB, data(18, 4096))
    vdi_import(ts, disk, image, fmt="vhd", exact=True)
    assert digest(disk_bytes(ts, disk, tmp_path)) == digest(
        expected({2 * MiB: data(18, 4096)}, 6 * MiB))


# -- interrupted and refused transfers ---------------------------------------------


def _interrupt_after(limit: int):
    def progress(done: int, total: int) -> None:
        if done > limit:
            raise KeyboardInterrupt
    return progress


def test_interrupted_import_is_rolled_back(ts, sr, tmp_path):
    old = data(19, 16 * MiB)
    disk = ts.vdi_create(sr, 16 * MiB, "disk")
    vdi_import(ts, disk, raw_file(tmp_path, "old.raw", {0: old}, 16 * MiB))
    before = [without_storage_facts(v) for v in ts.db.select(VDIRecord, managed=True)]
    new = raw_file(tmp_path, "new.raw", {0: data(20, 16 * MiB)}, 16 * MiB)
    with pytest.raises(KeyboardInterrupt):
        vdi_import(ts, disk, new, _interrupt_after(6 * MiB), rollback=True)
    # The rollback snapshot is gone again (the disk's own base may be new).
    assert [without_storage_facts(v) for v in ts.db.select(VDIRecord, managed=True)] == before
    assert digest(disk_bytes(ts, disk, tmp_path)) == digest(old)


def test_interrupted_export_leaves_no_file_and_keeps_the_old_one(ts, sr, tmp_path):
    disk = ts.vdi_create(sr, 16 * MiB, "disk")
    vdi_import(ts, disk, raw_file(tmp_path, "in.raw", {0: data(21, 16 * MiB)}, 16 * MiB))
    target = tmp_path / "out" / "disk.vhd"
    target.parent.mkdir()
    target.write_bytes(b"an older export")
    for fmt in ("raw", "vhd"):
        with pytest.raises(KeyboardInterrupt):
            vdi_export(ts, disk, str(target), _interrupt_after(4 * MiB), fmt=fmt, force=True)
        assert os.listdir(target.parent) == ["disk.vhd"]  # no temporary left
        assert target.read_bytes() == b"an older export"


def test_export_needs_force_over_a_file_and_names_a_missing_directory(ts, sr, tmp_path):
    disk = ts.vdi_create(sr, 2 * MiB, "disk")
    target = tmp_path / "there.raw"
    target.write_bytes(b"keep me")
    with pytest.raises(ToolstackError) as caught:
        vdi_export(ts, disk, str(target))
    assert caught.value.name == "FILE_ALREADY_EXISTS" and "force=true" in str(caught.value)
    assert target.read_bytes() == b"keep me"
    vdi_export(ts, disk, str(target), force=True)
    assert target.read_bytes() == bytes(2 * MiB)
    umask = os.umask(0o022)
    os.umask(umask)
    # The mode a plain open() gives (the temporary file was made 0600).
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(ToolstackError) as caught:
        vdi_export(ts, disk, str(tmp_path / "no" / "dir" / "x.raw"))
    assert caught.value.name == "EXPORT_PATH_INVALID"
    assert "no such directory" in str(caught.value)


def test_copy_to_another_sr(ts, sr, tmp_path):
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = ts.sr_create("file", {"location": str(other_dir)}, "other")
    chunks = {MiB: data(22, 4096), 5 * MiB: data(23, MiB)}
    disk = ts.vdi_create(sr, 6 * MiB, "disk", "its description")
    vdi_import(ts, disk, raw_file(tmp_path, "in.raw", chunks, 6 * MiB))
    copy = vdi_copy(ts, ts.db.get(VDIRecord, disk.ref), other)
    assert (copy.sr_ref, copy.name_label, copy.name_description, copy.virtual_size) == (
        other.ref, "disk", "its description", 6 * MiB)
    assert copy.uuid != disk.uuid
    assert digest(disk_bytes(ts, copy, tmp_path)) == digest(expected(chunks, 6 * MiB))


@pytest.mark.parametrize("done", [False, True])
def test_finishing_a_killed_import(ts, sr, tmp_path, done):
    """What the next smctl does with a killed import's pending record: before the
    point of no return the disk goes back to the snapshot, after it it stays."""
    old, new = data(25, 4 * MiB), data(26, 4 * MiB)
    disk = ts.vdi_create(sr, 4 * MiB, "disk")
    vdi_import(ts, disk, raw_file(tmp_path, "old.raw", {0: old}, 4 * MiB))
    snap = ts.vdi_snapshot(disk)
    vdi_import(ts, ts.db.get(VDIRecord, disk.ref), raw_file(tmp_path, "new.raw", {0: new},
                                                            4 * MiB))
    said = finish_vdi_import(ts, {"disk": disk.ref, "snapshot": snap.ref, "done": done})
    assert said == ("completed" if done else "rolled back")
    assert ts.db.get(VDIRecord, snap.ref) is None
    assert digest(disk_bytes(ts, disk, tmp_path)) == digest(new if done else old)
