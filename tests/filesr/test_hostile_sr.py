"""A damaged or hostile FileSR (issue 10): the shared steps of
tests/helpers/hostile_scenarios.py, and what only a directory of files can suffer
(symlinks, FIFOs, directories where files belong, a full filesystem).
Every driver call runs the real executable.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from helpers import hostile_scenarios as hs
from helpers.hostile_corpus import CORPUS, DIFF_ONLY
from helpers.revert_scenarios import P1, P3, write_both

from smlib import vhd

# Every corpus entry applies to a file (DIFF_ONLY ones hit the differencing leaf).
assert DIFF_ONLY <= set(CORPUS)


def sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_bad_sr_uuid_refused(filesr):
    hs.bad_sr_uuid_refused(filesr)


def test_non_ascii_sizes_refused(filesr):
    hs.non_ascii_sizes_refused(filesr)


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_damaged_leaf_does_not_wedge(filesr, case):
    hs.damaged_leaf_does_not_wedge(filesr, case)


def test_gc_never_writes_through_a_damaged_parent(filesr):
    hs.gc_never_writes_through_a_damaged_parent(filesr)


def _metadata(sr) -> str:
    return os.path.join(sr.location, ".sm", "metadata.xml")


LOSSES = {
    "emptied": lambda sr: sr.edit_metadata(lambda _: b""),
    "foreign document": lambda sr: sr.edit_metadata(lambda _: b"<foo/>"),
    "deleted": lambda sr: os.unlink(_metadata(sr)),
}


@pytest.mark.parametrize("how", sorted(LOSSES))
def test_sr_delete_decides_from_volumes(filesr, how):
    hs.sr_delete_decides_from_volumes(filesr, LOSSES[how])


def test_gc_confirms_from_images(filesr):
    hs.gc_confirms_from_images(filesr)


@pytest.mark.parametrize("name", sorted(hs.BAD_RECORDS))
def test_bad_journal_record_is_181(filesr, name):
    hs.bad_journal_record_is_181(filesr, name)


def test_failing_replay_is_set_aside(filesr):
    hs.failing_replay_is_set_aside(filesr)


def test_metadata_record_without_volume(filesr):
    hs.metadata_record_without_volume(filesr)


def test_resize_past_limit_refused(filesr):
    hs.resize_past_limit_refused(filesr)


# ------------------------------------------------------- files only

def test_symlink_volume_is_never_written(filesr, tmp_path):
    """Item 4: <uuid>.vhd as a symlink to a VHD outside the SR is no volume:
    sr_scan does not adopt it as a disk, no command writes through it, and
    vdi_delete removes the link, not what it points at."""
    sr = filesr
    outside = str(tmp_path / "outside.vhd")
    vhd.create(outside, 16 << 20)
    with vhd.open_image(outside, writable=True) as img:
        img.write(0, P1)
    digest = sha(outside)
    link = "5e1f0000-0000-4000-8000-000000000000"
    os.symlink(outside, sr.path(link))
    sr.ok("sr_scan")
    listing = sr.vdis()
    assert listing[link]["damaged"], listing[link]
    for command in ("vdi_snapshot", "vdi_clone", "vdi_attach"):
        hs.assert_fault(sr.run(command, vdi_uuid=link, args=["true"]), 46)
    hs.assert_fault(sr.run("vdi_resize", vdi_uuid=link, args=[str(32 << 20)]), 46)
    assert sha(outside) == digest
    sr.ok("vdi_delete", vdi_uuid=link)
    assert not os.path.lexists(sr.path(link))
    assert sha(outside) == digest
    sr.check_all()


def test_symlinked_parent_is_never_followed(filesr, tmp_path):
    """Item 4: a base replaced by a symlink to a copy outside the SR: the
    child is damaged (its parent is no regular file); nothing writes outside."""
    sr = filesr
    t = sr.create()
    write_both(sr, t, P1)
    sr.snapshot(t)
    base = sr.vdis()[t]["parent"]
    outside = str(tmp_path / "outside.vhd")
    os.rename(sr.path(base), outside)
    os.symlink(outside, sr.path(base))
    digest = sha(outside)
    hs.assert_fault(sr.run("vdi_snapshot", vdi_uuid=t), 46)
    sr.ok("sr_scan")
    sr.ok("vdi_create", args=[str(16 << 20), "x"])
    assert sha(outside) == digest


def test_fifo_volume_never_hangs(filesr):
    """Item 6: a FIFO named like a volume: sr_scan answers (no open() that
    blocks while holding the SR lock), the FIFO is listed as damaged, and
    other commands work; vdi_delete removes it."""
    sr = filesr
    t = sr.create()
    fifo = "f1f00000-0000-4000-8000-000000000000"
    os.mkfifo(sr.path(fifo))
    run = sr.run("sr_scan", timeout=20)
    assert run.fault is None, run.fault
    assert sr.vdis()[fifo]["damaged"]
    sr.run("vdi_snapshot", vdi_uuid=t, timeout=20).ok()
    hs.assert_fault(sr.run("vdi_snapshot", vdi_uuid=fifo, timeout=20), 46)
    sr.run("vdi_delete", vdi_uuid=fifo, timeout=20).ok()
    assert not os.path.lexists(sr.path(fifo))


STRAYS = ("a directory", "junk", "empty", "dangling symlink", "/dev/zero symlink")


@pytest.mark.parametrize("what", STRAYS)
def test_unreadable_volume_does_not_fail_scan(filesr, tmp_path, what):
    """Item 9: one unreadable <uuid>.vhd (a directory, junk, an empty file, a
    dangling or /dev/zero symlink): sr_scan carries on and lists it as
    damaged; vdi_delete removes it; the other disks are untouched."""
    sr = filesr
    t = sr.create()
    sr.write(t, 0, P3)
    bad = "bad00000-0000-4000-8000-000000000000"
    path = sr.path(bad)
    if what == "a directory":
        os.mkdir(path)
    elif what == "junk":
        with open(path, "wb") as f:
            f.write(os.urandom(5000))
    elif what == "empty":
        open(path, "wb").close()
    elif what == "dangling symlink":
        os.symlink(str(tmp_path / "nowhere"), path)
    else:
        os.symlink("/dev/zero", path)
    sr.ok("sr_scan")
    listing = sr.vdis()
    assert listing[bad]["damaged"] and not listing[t]["damaged"]
    sr.ok("vdi_delete", vdi_uuid=bad)
    assert not os.path.lexists(path)
    assert sr.read(t, 0, len(P3)) == P3
    sr.check_all()


BAD_ENTRIES = {
    "a directory in journal/": lambda sm: os.mkdir(os.path.join(sm, "journal", "gc-x")),
    "journal is a file": lambda sm: (os.rmdir(os.path.join(sm, "journal")),
                                     open(os.path.join(sm, "journal"), "wb").close()),
    "metadata.xml is a directory": lambda sm: (os.unlink(os.path.join(sm, "metadata.xml")),
                                               os.mkdir(os.path.join(sm, "metadata.xml"))),
    "lock is a directory": lambda sm: (
        os.unlink(os.path.join(sm, "lock")) if os.path.exists(os.path.join(sm, "lock"))
        else None, os.mkdir(os.path.join(sm, "lock"))),
}
REPAIRS = {
    "a directory in journal/": lambda sm: os.rmdir(os.path.join(sm, "journal", "gc-x")),
    "journal is a file": lambda sm: (os.unlink(os.path.join(sm, "journal")),
                                     os.mkdir(os.path.join(sm, "journal"))),
    "metadata.xml is a directory": lambda sm: os.rmdir(os.path.join(sm, "metadata.xml")),
    "lock is a directory": lambda sm: os.rmdir(os.path.join(sm, "lock")),
}


@pytest.mark.parametrize("what", sorted(BAD_ENTRIES))
def test_bookkeeping_entry_of_the_wrong_kind_is_181(filesr, what):
    """Item 11: bookkeeping of the wrong file type: 181 naming the path on
    every command, nothing else changes; usable once the operator repairs it."""
    sr = filesr
    t = sr.create()
    sr.write(t, 0, P1)
    sm = os.path.join(sr.location, ".sm")
    BAD_ENTRIES[what](sm)
    for command, keys in (("vdi_list", {}), ("sr_scan", {}), ("vdi_snapshot", {"vdi_uuid": t})):
        text = hs.assert_fault(sr.run(command, **keys), 181)
        assert sm in text, text
    REPAIRS[what](sm)
    if what == "metadata.xml is a directory":
        sr.ok("sr_scan")      # the index is rebuilt from the images
    sr.ok("vdi_snapshot", vdi_uuid=t)
    assert sr.read(t, 0, len(P1)) == P1


def test_location_through_a_file_relative_or_occupied(tmp_path, harness_fns):
    """Items 11, 12: a location that passes through a regular file, a relative
    one, or an occupied directory: a coded fault that says what is there."""
    from helpers.filesr_helpers import FileSRHarness

    sr = FileSRHarness(str(tmp_path), harness_fns)
    with open(str(tmp_path / "plain"), "w") as f:
        f.write("x")
    through = str(tmp_path / "plain" / "sr")
    for command in ("sr_create", "sr_attach", "sr_scan", "vdi_list"):
        run = sr.run(command, device_config={"location": through})
        assert run.fault is not None and run.fault.faultCode in (47, 42), run.fault
    text = hs.assert_fault(sr.run("sr_create", device_config={"location": "relative/sr"}), 143)
    assert "absolute" in text
    assert not os.path.exists("relative")
    text = hs.assert_fault(sr.run("sr_create", device_config={"location": "/etc"}), 42)
    assert "passwd" in text or "entries" in text, text
    assert not os.path.exists("/etc/.sm")


# ------------------------------------------------------------- xapi

def _xapi_that(answer: bytes | None):
    """A Unix-socket server that reads a request and then sends ``answer``
    and closes, or (None) never answers; returns (path, stop)."""
    import socket
    import threading
    import uuid as uuidlib

    d = f"/tmp/smh{os.getpid()}{uuidlib.uuid4().hex[:8]}"   # no "_": XenAPI's URL form
    os.makedirs(d)
    path = os.path.join(d, "xapi")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)
    held = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)
            conn.recv(65536)
            if answer is not None:
                conn.sendall(answer)
                conn.close()

    threading.Thread(target=serve, daemon=True).start()

    def stop():
        srv.close()
        for conn in held:
            conn.close()
        os.unlink(path)
        os.rmdir(d)
    return path, stop


XAPI_ANSWERS = {
    "never answers": None,
    "garbage": b"garbage\r\n\r\n",
    "HTTP with a junk body": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "closes at once": b"",
}


@pytest.mark.parametrize("what", sorted(XAPI_ANSWERS))
def test_xapi_that_misbehaves_is_a_coded_fault(filesr, what):
    """Item 7: vdi_revert with an OpaqueRef target against an xapi that never
    answers, or answers garbage: a coded fault (202) within the bound, and
    nothing changed."""
    import time

    sr = filesr
    t = sr.create()
    s = sr.snapshot(t)
    path, stop = _xapi_that(XAPI_ANSWERS[what])
    before = sr.fingerprint()
    try:
        started = time.monotonic()
        run = sr.run("vdi_revert", vdi_uuid=s, args=["OpaqueRef:1b2c3d4e"],
                     env={"SMLIB_XAPI_SOCKET": path, "SMLIB_XAPI_TIMEOUT": "2"}, timeout=30)
        assert time.monotonic() - started < 20
    finally:
        stop()
    text = hs.assert_fault(run, 202)
    assert "xapi" in text
    assert sr.fingerprint() == before


# ------------------------------------------------------------ a full filesystem

@pytest.fixture
def small_fs(tmp_path):
    """A 64 MiB tmpfs (a filesystem that can fill up); skipped where mount is
    not allowed."""
    import subprocess

    mnt = tmp_path / "fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {proc.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_to(directory: str, leave: int) -> str:
    """A filler file taking all but ``leave`` bytes of the filesystem."""
    path = os.path.join(directory, "filler")
    st = os.statvfs(directory)
    take = st.f_bavail * st.f_frsize - leave
    with open(path, "ab", buffering=0) as f:
        chunk = bytes(1 << 20)
        while take > 0:
            try:
                f.write(chunk[:min(take, len(chunk))])
            except OSError:
                break
            take -= len(chunk)
    return path


def test_gc_skips_without_space(small_fs, harness_fns):
    from helpers.filesr_helpers import FileSRHarness

    sr = FileSRHarness(small_fs, harness_fns)
    sr.ok("sr_create")
    filler = os.path.join(small_fs, "filler")
    hs.gc_skips_without_space(sr, lambda sr: fill_to(small_fs, 4 << 20),
                              lambda sr: os.unlink(filler))


def test_delete_needs_no_free_space(small_fs, harness_fns):
    """Item 10: at 0 bytes free, vdi_delete still deletes (it frees space);
    what needs space is refused with 44, never 1200 or 46."""
    from helpers.filesr_helpers import FileSRHarness

    sr = FileSRHarness(small_fs, harness_fns)
    sr.ok("sr_create")
    t = sr.create()
    for offset in range(0, 8 << 20, 2 << 20):
        sr.write(t, offset, P1)
    u = sr.create()
    sr.write(u, 0, P3)
    filler = fill_to(small_fs, 0)
    with open(filler, "ab", buffering=0) as f:        # the last few bytes too
        try:
            while True:
                f.write(b"x" * 512)
        except OSError:
            pass
    assert os.statvfs(small_fs).f_bavail == 0
    hs.assert_fault(sr.run("vdi_create", args=[str(16 << 20), "x"]), 44)
    hs.assert_fault(sr.run("vdi_snapshot", vdi_uuid=u), 44)
    sr.ok("vdi_delete", vdi_uuid=t)
    assert t not in sr.volumes() and t not in sr.vdis()
    assert sr.journal_keys() == []
    os.unlink(filler)
    sr.ok("vdi_snapshot", vdi_uuid=u)
    assert sr.read(u, 0, len(P3)) == P3
    sr.check_all()
