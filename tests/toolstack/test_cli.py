"""smctl as a program: output, --json, --help, exit status 0 / 1 / 2."""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers.smctl_run import UUID, file_sr, new_uuid, ok

MiB = 1 << 20


def test_help(smctl):
    out = ok(smctl("--help"))
    for name in ("sr-create", "vdi-revert", "vm-revert", "vdi-import"):
        assert name in out
    out = ok(smctl("vdi-create", "--help"))
    assert out.startswith("usage: smctl vdi-create sr-uuid=<sr-uuid> name-label=<name-label>")
    assert ok(smctl("help", "vm-revert")).startswith("usage: smctl vm-revert snapshot-uuid=")


@pytest.mark.parametrize("argv, message", [
    ((), "usage: smctl <command>"),
    (("no-such-command",), "unknown command"),
    (("vdi-create", "name-label=x"), "missing parameter sr-uuid, virtual-size"),
    (("sr-list", "--minimal", "bogus=1"), "unknown field 'bogus'"),
    (("vdi-param-list", "uuid=x", "colour=red"), "unknown parameter 'colour'"),
    (("vdi-param-list", "uuid"), "expected key=value"),
    (("sr-create", "type=dummy", "name-label=x", "sm-config:a=b"), "unknown parameter"),
])
def test_usage_errors_exit_2(smctl, argv, message):
    result = smctl(*argv)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_bad_size_is_a_usage_error_and_changes_nothing(smctl):
    sr = new_uuid(smctl("sr-create", "type=dummy", "name-label=d"))
    result = smctl("vdi-create", f"sr-uuid={sr}", "name-label=x", "virtual-size=12XB")
    assert result.returncode == 2 and "not a size" in result.stderr
    assert json.loads(ok(smctl("vdi-list", "--json"))) == []


def test_unknown_uuid_exits_1(smctl):
    result = smctl("vdi-param-list", "uuid=00000000-0000-0000-0000-000000000000")
    assert result.returncode == 1
    assert "UUID_INVALID" in result.stderr and "no VDI with uuid" in result.stderr


def test_missing_driver_exits_1_with_code_and_name(smctl):
    result = smctl("sr-create", "type=nosuch", "name-label=x")
    assert result.returncode == 1
    assert "48, SRUnknownType" in result.stderr and "NosuchSR not found" in result.stderr


def test_sr_error_exits_1_with_code_and_name(smctl, tmp_path):
    sr, _location = file_sr(smctl, tmp_path)
    vdi = new_uuid(smctl("vdi-create", f"sr-uuid={sr}", "name-label=x", "virtual-size=8MiB"))
    result = smctl("vdi-resize", f"uuid={vdi}", "disk-size=2MiB")  # shrinking is refused
    assert result.returncode == 1
    assert "Error code: SR_BACKEND_FAILURE_79" in result.stderr
    assert "79, VDISize" in result.stderr
    param = json.loads(ok(smctl("vdi-param-list", f"uuid={vdi}", "--json")))
    assert param["virtual-size"] == 8 * MiB  # unchanged
    result = smctl("sr-destroy", f"uuid={sr}")
    assert result.returncode == 1 and "39, SRNotEmpty" in result.stderr


def test_records_text_and_json(smctl):
    sr = new_uuid(smctl("sr-create", "type=dummy", "name-label=dummy SR"))
    disk = new_uuid(smctl("vdi-create", f"sr-uuid={sr}", "name-label=root",
                          "virtual-size=64MiB", "name-description=the disk"))
    snap = new_uuid(smctl("vdi-snapshot", f"uuid={disk}"))

    text = ok(smctl("vdi-param-list", f"uuid={disk}"))
    assert re.search(rf"^uuid \( RO\)\s+: {disk}$", text, re.M)
    assert re.search(r"^\s+name-label \( RW\): root$", text, re.M)
    assert re.search(r"^\s+virtual-size \( RO\): 67108864$", text, re.M)
    assert re.search(rf"^\s+sr-uuid \( RO\): {sr}$", text, re.M)

    listed = json.loads(ok(smctl("vdi-list", "--json")))
    assert [r["uuid"] for r in listed] == [disk, snap]
    snap_rec = listed[1]
    assert snap_rec["is-a-snapshot"] is True and snap_rec["snapshot-of"] == disk
    assert set(listed[0]) == set(snap_rec) >= {
        "uuid", "name-label", "name-description", "is-a-snapshot", "snapshot-of", "sr-uuid",
        "virtual-size"}
    # xe-style filters on any field, and --minimal
    assert ok(smctl("vdi-list", "is-a-snapshot=true", "--minimal")).strip() == snap
    text = ok(smctl("vdi-list", "is-a-snapshot=false"))
    assert re.findall(r"^uuid \( RO\)\s+: (\S+)$", text, re.M) == [disk]
    assert json.loads(ok(smctl("vdi-list", "params=name-label,uuid", "is-a-snapshot=false",
                               "--json"))) == [{"name-label": "root", "uuid": disk}]
    assert ok(smctl("vdi-list", "params=name-label", "--minimal")) == "root,root\n"
    text = ok(smctl("vdi-list", f"uuid={snap}", "params=uuid,snapshot-of"))
    assert text == f"uuid ( RO)       : {snap}\nsnapshot-of ( RO): {disk}\n\n\n"
    assert smctl("vdi-list", "params=colour").returncode == 2
    srs = json.loads(ok(smctl("sr-list", "--json")))
    assert srs[0]["uuid"] == sr and srs[0]["type"] == "dummy"
    assert json.loads(ok(smctl("vdi-create", f"sr-uuid={sr}", "name-label=j",
                               "virtual-size=1GiB", "--json")))["uuid"]


def test_vdi_revert_falls_back_on_dummy(smctl):
    sr = new_uuid(smctl("sr-create", "type=dummy", "name-label=d"))
    vm = new_uuid(smctl("vm-create", "name-label=vm", f"sr-uuid={sr}", "disk-sizes=64MiB"))
    disk = json.loads(ok(smctl("vdi-list", "--json")))[0]["uuid"]
    snap = new_uuid(smctl("vdi-snapshot", f"uuid={disk}"))
    out = json.loads(ok(smctl("vdi-revert", f"snapshot-uuid={snap}", "--json")))
    assert out["path"] == "clone" and out["previous-uuid"] == disk and out["uuid"] != disk
    assert ok(smctl("vdi-list", f"uuid={disk}", "--minimal")).strip() == ""
    snap_rec = json.loads(ok(smctl("vdi-param-list", f"uuid={snap}", "--json")))
    assert snap_rec["snapshot-of"] == out["uuid"]
    vm_rec = json.loads(ok(smctl("vm-param-list", f"uuid={vm}", "--json")))
    assert vm_rec["disks"] == [f"0={out['uuid']}"]


def test_file_sr_import_snapshot_revert_export(smctl, tmp_path):
    first, second = tmp_path / "first.raw", tmp_path / "second.raw"
    first.write_bytes(b"\x5a" * (3 * MiB) + bytes(MiB))
    second.write_bytes(b"\xa5" * (4 * MiB))
    sr, _location = file_sr(smctl, tmp_path)
    vm = new_uuid(smctl("vm-create", "name-label=vm", f"sr-uuid={sr}", "disk-sizes=16MiB"))
    disk = ok(smctl("vdi-list", "--minimal")).strip()
    assert ok(smctl("vdi-import", f"uuid={disk}", f"filename={first}")) == ""  # quiet: no tty
    vm_snap = new_uuid(smctl("vm-snapshot", f"uuid={vm}", "new-name-label=before"))
    ok(smctl("vdi-import", f"uuid={disk}", f"filename={second}"))

    assert ok(smctl("vm-revert", f"snapshot-uuid={vm_snap}")) == ""  # like xe: silent
    exported = tmp_path / "out.raw"
    ok(smctl("vdi-export", f"uuid={disk}", f"filename={exported}"))
    data = exported.read_bytes()
    assert len(data) == 16 * MiB and data[: 4 * MiB] == first.read_bytes()
    assert data[4 * MiB:] == bytes(12 * MiB)

    snap = ok(smctl("vdi-list", "is-a-snapshot=true", "--minimal")).strip()
    ok(smctl("vdi-import", f"uuid={disk}", f"filename={second}"))
    out = json.loads(ok(smctl("vdi-revert", f"snapshot-uuid={snap}", "--json")))
    assert out == {"uuid": disk, "path": "in-place", "previous-uuid": disk}
    result = json.loads(ok(smctl("vm-revert", f"snapshot-uuid={vm_snap}", "--json")))
    assert result["disks"][0]["path"] == "in-place" and result["disks"][0]["uuid"] == disk
    ok(smctl("sr-scan", f"uuid={sr}"))
    assert ok(smctl("vdi-list", "managed=true", "--minimal")).strip().split(",") == [disk, snap]


def test_the_other_commands(smctl, tmp_path):
    sr, location = file_sr(smctl, tmp_path)
    disk = new_uuid(smctl("vdi-create", f"sr-uuid={sr}", "name-label=a", "virtual-size=4MiB"))
    assert ok(smctl("vdi-param-set", f"uuid={disk}", "name-label=renamed")) == ""
    assert ok(smctl("vdi-resize", f"uuid={disk}", "disk-size=8MiB")) == ""
    rec = json.loads(ok(smctl("vdi-param-list", f"uuid={disk}", "--json")))
    assert (rec["name-label"], rec["virtual-size"]) == ("renamed", 8 * MiB)
    clone = new_uuid(smctl("vdi-clone", f"uuid={disk}", "new-name-label=copy"))
    assert json.loads(ok(smctl("vdi-param-list", f"uuid={clone}", "--json")))[
        "name-label"] == "copy"
    vm = new_uuid(smctl("vm-create", "name-label=vm", f"vdi-uuids={disk},{clone}"))
    vbds = json.loads(ok(smctl("vbd-list", f"vm-uuid={vm}", "--json")))
    assert [(v["device"], v["vdi-uuid"]) for v in vbds] == [("0", disk), ("1", clone)]
    result = smctl("vm-revert", f"snapshot-uuid={vm}")
    assert result.returncode == 1 and "VM_IS_NOT_A_SNAPSHOT" in result.stderr
    ok(smctl("vm-destroy", f"uuid={vm}"))
    assert json.loads(ok(smctl("vbd-list", "--json"))) == []
    ok(smctl("vdi-destroy", f"uuid={clone}"))
    # Forget and introduce again: the disks come back from the SR itself.
    ok(smctl("sr-forget", f"uuid={sr}"))
    assert json.loads(ok(smctl("vdi-list", "--json"))) == []
    assert new_uuid(smctl("sr-introduce", "type=file", f"uuid={sr}",
                          f"device-config:location={location}", "name-label=again")) == sr
    visible = ok(smctl("vdi-list", "managed=true", "--minimal")).strip()
    assert visible == disk
    ok(smctl("vdi-destroy", f"uuid={disk}"))
    ok(smctl("sr-destroy", f"uuid={sr}"))
    assert json.loads(ok(smctl("sr-list", "--json"))) == []


def test_import_into_a_driver_without_vhd_fails_cleanly(smctl, tmp_path):
    sr = new_uuid(smctl("sr-create", "type=dummy", "name-label=d"))
    disk = new_uuid(smctl("vdi-create", f"sr-uuid={sr}", "name-label=x", "virtual-size=4MiB"))
    raw = tmp_path / "in.raw"
    raw.write_bytes(b"x" * 4096)
    result = smctl("vdi-import", f"uuid={disk}", f"filename={raw}")
    assert result.returncode == 1 and "VDI_IO_ERROR" in result.stderr
    out = tmp_path / "out.raw"
    result = smctl("vdi-export", f"uuid={disk}", f"filename={out}")
    assert result.returncode == 1 and not out.exists()
    result = smctl("vdi-import", f"uuid={disk}", f"filename={tmp_path / 'missing.raw'}")
    assert result.returncode == 1 and "FILE_NOT_FOUND" in result.stderr


def test_export_to_an_unwritable_place_fails_cleanly(smctl, tmp_path):
    sr, _location = file_sr(smctl, tmp_path)
    disk = new_uuid(smctl("vdi-create", f"sr-uuid={sr}", "name-label=x", "virtual-size=4MiB"))
    result = smctl("vdi-export", f"uuid={disk}", f"filename={tmp_path}/no/such/dir/out.raw")
    assert result.returncode == 1 and "no such directory" in result.stderr
    assert result.stderr.startswith("Error code: EXPORT_PATH_INVALID\nError parameters: ")
    assert "Traceback" not in result.stderr
    # The disk was detached again: it can be reverted, destroyed, ...
    ok(smctl("vdi-destroy", f"uuid={disk}"))


def blocked_on_flock(proc: subprocess.Popen, path: str, timeout: float = 60.0) -> bool:
    """True once ``proc`` waits for a flock on ``path``; False when it exits
    first (it did not wait) or the timeout passes."""
    inode = os.stat(path).st_ino
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with open("/proc/locks") as f:
            for line in f:
                # "2: -> FLOCK  ADVISORY  WRITE <pid> <maj>:<min>:<inode> 0 EOF"
                fields = line.split()
                if fields[1:3] == ["->", "FLOCK"] and fields[5] == str(proc.pid) \
                        and fields[6].rsplit(":", 1)[1] == str(inode):
                    return True
        time.sleep(0.05)
    return False


def test_changing_commands_wait_for_each_other(smctl, tmp_path):
    sr = new_uuid(smctl("sr-create", "type=dummy", "name-label=d"))
    env = dict(os.environ, SMCTL_DB=str(tmp_path / "cli.db"))
    exe = os.path.join(os.path.dirname(sys.executable), "smctl")
    with open(str(tmp_path / "cli.db") + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another smctl in the middle of a revert
        waiting = subprocess.Popen(
            [exe, "vdi-create", f"sr-uuid={sr}", "name-label=x", "virtual-size=1MiB"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Ready signal: the kernel lists smctl as a waiter on this lock
        # (a "->" line of /proc/locks), however slowly it started.
        assert blocked_on_flock(waiting, str(tmp_path / "cli.db") + ".lock")
        assert ok(smctl("vdi-list", "--minimal")) == "\n"  # reads do not wait
        fcntl.flock(lock, fcntl.LOCK_UN)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert UUID.match(out)


def test_a_database_that_cannot_be_used_exits_1(smctl, tmp_path):
    result = smctl("sr-list", extra_env={"SMCTL_DB": "/proc/no/such/state.db"})
    assert result.returncode == 1 and "cannot open the database" in result.stderr
    newer = tmp_path / "newer.db"
    ok(smctl("sr-list", extra_env={"SMCTL_DB": str(newer)}))
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    result = smctl("sr-list", extra_env={"SMCTL_DB": str(newer)})
    assert result.returncode == 1 and "schema version 999 is newer" in result.stderr


def test_trace_shows_each_driver_run(smctl):
    result = smctl("sr-create", "type=dummy", "name-label=d", extra_env={"SMCTL_TRACE": "1"})
    sr = new_uuid(result)
    lines = result.stderr.splitlines()
    assert [line.split()[2] for line in lines] == [
        "sr_get_driver_info", "sr_create", "sr_attach", "sr_scan"]
    assert lines[1].startswith(f"smctl: dummy sr_create {sr} ") and lines[1].endswith(" ok")
    assert smctl("sr-list").stderr == ""  # off by default
