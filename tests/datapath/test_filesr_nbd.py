"""FileSR disks served over NBD by nbdkit, judged by real NBD clients.

Every call runs the real FileSR executable with xapi-shaped XML; the disk
is written and read by qemu-io, qemu-img, nbdinfo and nbdcopy over the
socket vdi_attach names, and afterwards by the VHD library, pyvhdi and
vhd.check on the files themselves.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

from helpers.filesr_helpers import MiB, pyvhdi_read
from helpers.nbd_clients import copy_in, copy_out, info, qemu_io, split

from smlib import vhd

DISK = 64 * MiB


def attach(sr, uuid: str, writable: bool = True) -> dict:
    return sr.ok("vdi_attach", vdi_uuid=uuid, args=["true" if writable else "false"])


def activate(sr, uuid: str, writable: bool = True) -> None:
    sr.ok("vdi_activate", vdi_uuid=uuid, args=["true" if writable else "false"])


def server_pid(sr, uuid: str) -> int:
    """The pid of the nbdkit the record names (it must be running)."""
    from smlib.datapath import server

    rec = server.find(sr.sr_uuid, uuid)
    assert rec is not None and rec["backend"] == "nbdkit", rec
    return int(rec["pid"])


def gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.01)
    return False


def lib_read(path: str, offset: int, length: int) -> bytes:
    with vhd.open_image(path) as img:
        return img.read(offset, length)


def golden_rules(path: str) -> None:
    """What blktap's writer does (DESIGN section 5), beyond vhd.check: every
    block's data 4 KiB-aligned after its one-sector bitmap, creator "tap",
    the file ending with the footer."""
    from smlib.vhd import format as fmt
    from smlib.vhd import geometry as geo

    vhd.check(path)
    with vhd.open_image(path) as img:
        assert img.footer.creator_app == fmt.CREATOR_APP
        for block in img.allocated_blocks():
            assert (img.bat[block] * geo.SECTOR + img.bitmap_bytes) % geo.DATA_ALIGN == 0
        assert os.path.getsize(path) == img.physical_size


def test_attach_answers_sm_struct(filesr):
    uuid = filesr.create(DISK)
    res = attach(filesr, uuid)
    link = os.path.join(os.environ["SMLIB_NBD_DIR"], filesr.sr_uuid, uuid)
    assert res["params_nbd"] == f"nbd:unix:{link}:exportname={uuid}"
    assert res["params"] == filesr.path(uuid)
    assert res["o_direct"] is True and res["o_direct_reason"] == "SR_NOT_SUPPORTED"
    xs = res["xenstore_data"]
    assert xs["vdi-uuid"] == uuid and xs["storage-type"] == "ext"
    assert set(xs) >= {"scsi/0x12/0x80", "scsi/0x12/0x83"}
    assert not os.path.lexists(link)          # attach serves nothing yet
    assert attach(filesr, uuid) == res        # idempotent
    filesr.ok("vdi_detach", vdi_uuid=uuid)


def test_write_read_through_nbd_and_library(filesr):
    uuid = filesr.create(DISK)
    nbd = attach(filesr, uuid)["params_nbd"]
    activate(filesr, uuid)
    sock, export = split(nbd)
    assert os.path.islink(sock) and export == uuid
    meta = info(nbd)
    assert meta["export-size"] == DISK and meta["is_read_only"] is False
    qemu_io(nbd, "write -P 0xa1 0 4M", "write -P 0xb2 9M 1M", "write -P 0xc3 63M 1M", "flush")
    qemu_io(nbd, "read -P 0xa1 0 4M", "read -P 0xb2 9M 1M", "read -P 0 4M 5M",
            "read -P 0xc3 63M 1M")
    pid = server_pid(filesr, uuid)
    filesr.ok("vdi_deactivate", vdi_uuid=uuid)
    assert gone(pid) and not os.path.lexists(sock)
    path = filesr.path(uuid)
    golden_rules(path)
    assert lib_read(path, 0, 4 * MiB) == b"\xa1" * (4 * MiB)
    assert lib_read(path, 9 * MiB, MiB) == b"\xb2" * MiB
    assert pyvhdi_read(path, 63 * MiB, MiB) == b"\xc3" * MiB
    expect = bytearray(DISK)
    for at, length, byte in ((0, 4, 0xA1), (9, 1, 0xB2), (63, 1, 0xC3)):
        expect[at * MiB:(at + length) * MiB] = bytes([byte]) * (length * MiB)
    raw = path + ".raw"
    with open(raw, "wb") as f:
        f.write(expect)
    # qemu-img reads dynamic VHDs on its own: an independent judge of the file.
    subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw", path, raw], check=True,
                   capture_output=True)
    os.remove(raw)
    filesr.ok("vdi_detach", vdi_uuid=uuid)
    assert not os.path.exists(os.path.join(os.environ["SMLIB_DATAPATH_DIR"], filesr.sr_uuid))


def test_chain_read_and_copy_with_qemu_img_and_nbdcopy(filesr, tmp_path):
    """A snapshot's child served: reads fall through to the base, writes stay in the leaf."""
    uuid = filesr.create(DISK)
    rng = random.Random(12)
    first = rng.randbytes(DISK)
    src = tmp_path / "first.raw"
    src.write_bytes(first)
    nbd = attach(filesr, uuid)["params_nbd"]
    activate(filesr, uuid)
    copy_in(str(src), nbd)
    filesr.ok("vdi_deactivate", vdi_uuid=uuid)
    filesr.ok("vdi_detach", vdi_uuid=uuid)
    snap = filesr.snapshot(uuid)
    nbd = attach(filesr, uuid)["params_nbd"]
    activate(filesr, uuid)
    qemu_io(nbd, "write -P 0x5e 3M 2101248", "write -P 0x6f 33M 512", "flush")
    expect = bytearray(first)
    expect[3 * MiB:5 * MiB + 4096] = b"\x5e" * (2 * MiB + 4096)
    expect[33 * MiB:33 * MiB + 512] = b"\x6f" * 512
    out = tmp_path / "out.raw"
    copy_out(nbd, str(out))
    assert out.read_bytes() == bytes(expect)
    converted = tmp_path / "conv.raw"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", nbd, str(converted)],
                   check=True, capture_output=True)
    assert converted.read_bytes() == bytes(expect)
    filesr.ok("vdi_deactivate", vdi_uuid=uuid)
    filesr.ok("vdi_detach", vdi_uuid=uuid)
    for vdi, want in ((uuid, bytes(expect)), (snap, first)):
        golden_rules(filesr.path(vdi))
        assert lib_read(filesr.path(vdi), 0, DISK) == want
    filesr.check_consistent()


def test_read_only_attach_serves_read_only(filesr):
    uuid = filesr.create(DISK)
    filesr.write(uuid, 0, b"\x11" * MiB)
    nbd = attach(filesr, uuid, writable=False)["params_nbd"]
    filesr.ok("vdi_activate", vdi_uuid=uuid, args=[])   # mode from the attach
    assert info(nbd)["is_read_only"] is True
    qemu_io(nbd, "read -P 0x11 0 1M", readonly=True)
    proc = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x22 0 1M", nbd],
                          capture_output=True, text=True)
    assert "0x22" not in qemu_io(nbd, "read -v 0 512", readonly=True)
    assert proc.returncode != 0 or "error" in (proc.stdout + proc.stderr).lower()
    before = open(filesr.path(uuid), "rb").read()
    filesr.ok("vdi_deactivate", vdi_uuid=uuid)
    filesr.ok("vdi_detach", vdi_uuid=uuid)
    assert open(filesr.path(uuid), "rb").read() == before


def test_repeated_activate_and_stale_server_replaced(filesr):
    uuid = filesr.create(DISK)
    nbd = attach(filesr, uuid)["params_nbd"]
    activate(filesr, uuid)
    pid = server_pid(filesr, uuid)
    activate(filesr, uuid)
    assert server_pid(filesr, uuid) == pid          # the same server
    qemu_io(nbd, "write -P 0x42 1M 1M", "flush")
    os.kill(pid, signal.SIGKILL)                    # a crash leaves socket and record
    assert gone(pid)
    sock = os.readlink(split(nbd)[0])
    assert os.path.exists(sock)
    activate(filesr, uuid)                          # found stale, replaced
    assert server_pid(filesr, uuid) != pid
    qemu_io(nbd, "read -P 0x42 1M 1M")
    filesr.ok("vdi_deactivate", vdi_uuid=uuid)
    filesr.ok("vdi_deactivate", vdi_uuid=uuid)      # idempotent
    filesr.ok("vdi_detach", vdi_uuid=uuid)
    filesr.ok("vdi_detach", vdi_uuid=uuid)
    vhd.check(filesr.path(uuid))


def test_revert_refused_while_served_then_snapshot_served(filesr):
    uuid = filesr.create(DISK)
    filesr.write(uuid, 0, b"\x01" * (2 * MiB))
    snap = filesr.snapshot(uuid)
    nbd = attach(filesr, uuid)["params_nbd"]
    activate(filesr, uuid)
    qemu_io(nbd, "write -P 0x02 0 2M", "flush")
    for state in ("active", "attached"):
        fault = filesr.fault("vdi_revert", vdi_uuid=snap, args=[uuid])
        assert fault.faultCode == 24, fault
        qemu_io(nbd, "read -P 0x02 0 2M")  if state == "active" else None
        if state == "active":
            filesr.ok("vdi_deactivate", vdi_uuid=uuid)
    filesr.ok("vdi_detach", vdi_uuid=uuid)
    filesr.ok("vdi_revert", vdi_uuid=snap, args=[uuid])
    nbd = attach(filesr, uuid)["params_nbd"]
    activate(filesr, uuid)
    qemu_io(nbd, "read -P 0x01 0 2M", "read -P 0 2M 62M")
    filesr.ok("vdi_deactivate", vdi_uuid=uuid)
    filesr.ok("vdi_detach", vdi_uuid=uuid)
    filesr.check_consistent()


def test_snapshot_of_an_active_disk(filesr):
    """The server is held between requests while the leaf becomes a base;
    it then serves the new leaf: later writes never reach the snapshot."""
    uuid = filesr.create(DISK)
    nbd = attach(filesr, uuid)["params_nbd"]
    activate(filesr, uuid)
    qemu_io(nbd, "write -P 0x0a 0 4M", "flush")
    snap = filesr.snapshot(uuid)
    qemu_io(nbd, "write -P 0x0b 1M 1M", "flush")
    qemu_io(nbd, "read -P 0x0a 0 1M", "read -P 0x0b 1M 1M", "read -P 0x0a 2M 2M")
    filesr.ok("vdi_deactivate", vdi_uuid=uuid)
    filesr.ok("vdi_detach", vdi_uuid=uuid)
    assert lib_read(filesr.path(snap), 0, 4 * MiB) == b"\x0a" * (4 * MiB)
    assert lib_read(filesr.path(uuid), MiB, MiB) == b"\x0b" * MiB
    filesr.check_consistent()


def test_server_killed_mid_write_keeps_flushed_data(filesr, tmp_path):
    uuid = filesr.create(DISK)
    nbd = attach(filesr, uuid)["params_nbd"]
    activate(filesr, uuid)
    qemu_io(nbd, "write -P 0x77 0 8M", "flush")           # acknowledged flush
    pid = server_pid(filesr, uuid)
    noise = tmp_path / "noise.raw"
    noise.write_bytes(random.Random(3).randbytes(48 * MiB))
    writer = subprocess.Popen(
        ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", "-t", "none", "-W",
         "--target-image-opts", str(noise),
         f"driver=raw,file.driver=nbd,file.path={split(nbd)[0]},file.export={uuid},"
         "offset=16777216"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)                          # mid-write
    writer.wait(timeout=60)
    assert gone(pid)
    golden_rules(filesr.path(uuid))                       # blktap-valid after the kill
    assert lib_read(filesr.path(uuid), 0, 8 * MiB) == b"\x77" * (8 * MiB)
    activate(filesr, uuid)                                # stale server replaced
    qemu_io(nbd, "read -P 0x77 0 8M")
    filesr.ok("vdi_deactivate", vdi_uuid=uuid)
    filesr.ok("vdi_detach", vdi_uuid=uuid)
    vhd.check(filesr.path(uuid))
