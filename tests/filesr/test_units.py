"""The tree's smaller parts on their own: metadata, lock, journal, xapi lookup."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from helpers.filesr_helpers import pyvhdi_read

from smlib.protocol.errors import SRError
from smlib.stores.file import FileStore
from smlib.tree.journal import Journal
from smlib.tree.lock import SRLock
from smlib.tree.metadata import Metadata, VolumeRecord
from smlib.xapi import session as xapi


def test_metadata_round_trip():
    meta = Metadata("sr-1")
    meta.vdis["a"] = VolumeRecord(uuid="a", name_label="x <&> \"y\"", virtual_size=1 << 41,
                               hidden=True, read_only=True)
    meta.vdis["b"] = VolumeRecord(uuid="b", parent="a", is_a_snapshot=True, snapshot_of="c")
    again = Metadata.parse(meta.serialise())
    assert again.sr_uuid == "sr-1"
    assert again.vdis == meta.vdis
    assert again.children("a") == ["b"] and again.depth("b") == 2


@pytest.mark.parametrize("doc", [b"<sr", b"<sr><vdi uuid='a' virtual_size='x'/></sr>"])
def test_metadata_unreadable_is_181(doc):
    with pytest.raises(SRError) as info:
        Metadata.parse(doc)
    assert info.value.code == 181


def test_unknown_record_field_is_a_programming_error():
    with pytest.raises(TypeError):
        VolumeRecord(uuid="a", colour="red")


def test_lock_excludes_other_processes(tmp_path):
    path = str(tmp_path / "lock")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from smlib.tree.lock import SRLock\n"
         f"l = SRLock({path!r}); l.acquire(); print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(SRError) as info:
            SRLock(path, timeout=0.3).acquire()
        assert info.value.code == 37
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()
    with SRLock(path, timeout=5):  # the holder's death released it
        pass


def test_torn_journal_record_is_reported(tmp_path):
    store = FileStore({"location": str(tmp_path / "sr")}, None)
    store.sr_create()
    store.journal_put("x", b"{not json")
    with pytest.raises(SRError) as info:
        Journal(store).pending()
    assert info.value.code == 181


def test_xapi_lookup_errors(tmp_path, monkeypatch):
    with pytest.raises(SRError) as info:
        xapi.vdi_uuid(None, "OpaqueRef:x")
    assert info.value.code == 143
    monkeypatch.setenv("SMLIB_XAPI_SOCKET", "/tmp/no_such_dir/xapi")
    with pytest.raises(SRError) as info:
        xapi.vdi_uuid("OpaqueRef:s", "OpaqueRef:x")
    # A path with "_" is reached as it is (XenAPI's own transport could not).
    assert info.value.code == 202 and "/tmp/no_such_dir/xapi" in str(info.value)
    missing = f"/tmp/smxmissing{os.getpid()}/xapi"
    monkeypatch.setenv("SMLIB_XAPI_SOCKET", missing)
    with pytest.raises(SRError) as info:
        xapi.vdi_uuid("OpaqueRef:s", "OpaqueRef:x")
    assert info.value.code == 202 and "cannot reach xapi" in str(info.value)


@pytest.mark.parametrize("text,uuid,volume", [
    ("6d1c6f1f-4d8b-4f0e-8a44-0c1e2a3b4c5d", True, True),
    ("6d1c6f1f-4d8b-4f0e-8a44-0c1e2a3b4c5d.new", False, True),
    ("6D1C6F1F-4d8b-4f0e-8a44-0c1e2a3b4c5d", False, False),
    ("6d1c6f1f-4d8b-4f0e-8a44-0c1e2a3b4c5d.", False, False),
    ("6d1c6f1f-4d8b-4f0e-8a44-0c1e2a3b4c5d.n3w", False, False),
    ("6d1c6f1f-4d8b-4f0e-8a44-0c1e2a3b4c5d/..", False, False),
    ("6d1c6f1f04d8b-4f0e-8a44-0c1e2a3b4c5d", False, False),
    ("../../etc/passwd", False, False),
    ("", False, False),
])
def test_volume_names(text, uuid, volume):
    from smlib.stores.base import is_uuid, is_volume_name

    assert is_uuid(text) is uuid
    assert is_volume_name(text) is volume


def test_xapi_default_is_the_local_socket(monkeypatch):
    if os.path.exists(xapi.DEFAULT_SOCKET):
        pytest.skip("a real xapi socket exists here")
    for name in ("SMLIB_XAPI_SOCKET", "SM_XAPI_SOCKET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SRError) as info:
        xapi.vdi_uuid("OpaqueRef:s", "OpaqueRef:x")
    assert info.value.code == 202 and xapi.DEFAULT_SOCKET in str(info.value)


@pytest.mark.parametrize("size", [2 << 20, 1 << 30, 2 << 40])
@pytest.mark.parametrize("written", [None, 0, "last"])
def test_is_empty_by_size_agrees_with_the_bat(tmp_path, size, written):
    from smlib import vhd

    path = str(tmp_path / "a.vhd")
    vhd.create(path, size)
    if written is not None:
        with vhd.open_image(path, writable=True) as img:
            img.write(0 if written == 0 else size - 4096, b"x" * 4096)
    vhd.snapshot(str(tmp_path / "b.vhd"), path)
    for p in (path, str(tmp_path / "b.vhd")):
        with vhd.open_image(p) as img:
            # Answered from the size where no block fits; the BAT says the same.
            assert img.is_empty() == (img.allocated_blocks() == [])
    with vhd.open_image(path) as img:
        assert img.is_empty() is (written is None)
    # The written 4 KiB (the disk's last when "last") read back, through the
    # child too, by the library and by pyvhdi; the 4 KiB beside them are zeros.
    at = 0 if written in (None, 0) else size - 4096
    want = bytes(4096) if written is None else b"x" * 4096
    beside = at + 4096 if at == 0 else at - 4096
    for p in (path, str(tmp_path / "b.vhd")):
        with vhd.open_image(p) as img:
            assert img.read(at, 4096) == want and img.read(beside, 4096) == bytes(4096)
        assert pyvhdi_read(p, at, 4096) == want
        assert pyvhdi_read(p, beside, 4096) == bytes(4096)


def test_scan_removes_leftovers_of_interrupted_writes(filesr):
    sr = filesr
    t = sr.create()
    leftovers = [f"{sr.location}/{t}.vhd.part", f"{sr.location}/.sm/metadata.xml.part",
                 f"{sr.location}/.sm/journal/{t}.part"]
    for path in leftovers:
        with open(path, "wb") as f:
            f.write(b"torn")
    sr.ok("sr_scan")
    assert not any(os.path.exists(p) for p in leftovers)
    assert sorted(sr.vdis()) == [t]
