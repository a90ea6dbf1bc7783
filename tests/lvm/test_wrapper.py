"""smlib.stores.lvm.lvm2 itself, run against a stand-in ``lvm`` program.

The stand-in (a shell script named by $SMLIB_LVM_BIN) records its argv and
plays back a canned exit status, stdout and stderr, so the wrapper's own
duties are checked without lvm2: the extra --config, the timeout, the JSON
report parsing, lvm2's message in the SRError, the run counter. The
real-lvm2 tier covers the same functions against lvm2.
"""

from __future__ import annotations

import json
import stat

import pytest

from smlib.protocol.errors import SRError
from smlib.stores.lvm import lvm2 as lvm
from smlib.stores.lvm.store import LVMStore


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    script = tmp_path / "lvm"
    log = tmp_path / "argv"

    def program(status: int = 0, stdout: str = "", stderr: str = "", sleep: float = 0) -> None:
        (tmp_path / "out").write_text(stdout)
        (tmp_path / "err").write_text(stderr)
        script.write_text("#!/bin/sh\n"
                          f'printf "%s\\n" "$@" > {log}\n'
                          f"sleep {sleep}\n"
                          f"cat {tmp_path / 'out'}; cat {tmp_path / 'err'} >&2\n"
                          f"exit {status}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)

    monkeypatch.setenv("SMLIB_LVM_BIN", str(script))
    monkeypatch.setenv("SMLIB_LVM_CONFIG", "global{activation=0}")
    program.argv = lambda: log.read_text().splitlines()
    return program


def test_command_line_and_counter(fake_bin):
    fake_bin()
    before = lvm.RUNS["lvcreate"]
    lvm.lvcreate("VG", "VHD-a", 3, where=[lvm.Extents("/dev/sdb", 10, 3)])
    assert fake_bin.argv() == ["lvcreate", "--config", "global{activation=0}", "-Zn", "-Wn",
                               "-l", "3", "-n", "VHD-a", "VG", "/dev/sdb:10-12"]
    assert lvm.RUNS["lvcreate"] == before + 1
    lvm.lvremove("VG", ["VHD-a", "VHD-b"])
    assert fake_bin.argv()[-2:] == ["VG/VHD-a", "VG/VHD-b"]     # several LVs, one run


def test_failure_carries_lvm2_message_without_noise(fake_bin):
    fake_bin(5, stderr="  WARNING: Activation disabled.\n"
                       '  Logical Volume "VHD-a" already exists in volume group "VG"\n')
    with pytest.raises(SRError) as err:
        lvm.lvcreate("VG", "VHD-a", 1)
    assert err.value.name == "LVMCreate"
    assert err.value.opterr.endswith('Logical Volume "VHD-a" already exists in volume group "VG"')
    assert "WARNING" not in err.value.opterr
    fake_bin(5, stderr='  Volume group "VG" has insufficient free space (3 extents): 9 required.')
    with pytest.raises(SRError) as err:
        lvm.lvresize("VG", "VHD-a", 9)
    assert err.value.name == "SRNoSpace"


def test_timeout(fake_bin):
    fake_bin(sleep=5)
    with pytest.raises(SRError) as err:
        lvm.run("lvs", [], error="PVSfailed", timeout=0.3)
    assert "timed out" in err.value.opterr


def test_layout_report(fake_bin):
    rows = [
        {"pv_name": "/dev/sdb", "pe_start": "1048576", "pv_pe_count": "100",
         "pvseg_start": "0", "pvseg_size": "2", "vg_name": "VG", "vg_extent_size": "4194304",
         "lv_name": "MGT", "lv_size": "8388608", "seg_start_pe": "0"},
        {"pv_name": "/dev/sdb", "pe_start": "1048576", "pv_pe_count": "100",
         "pvseg_start": "2", "pvseg_size": "1", "vg_name": "VG", "vg_extent_size": "4194304",
         "lv_name": "VHD-a", "lv_size": "8388608", "seg_start_pe": "1"},
        {"pv_name": "/dev/sdb", "pe_start": "1048576", "pv_pe_count": "100",
         "pvseg_start": "3", "pvseg_size": "10", "vg_name": "VG", "vg_extent_size": "4194304",
         "lv_name": "", "lv_size": "0", "seg_start_pe": "0"},
        {"pv_name": "/dev/sdb", "pe_start": "1048576", "pv_pe_count": "100",
         "pvseg_start": "13", "pvseg_size": "1", "vg_name": "VG", "vg_extent_size": "4194304",
         "lv_name": "VHD-a", "lv_size": "8388608", "seg_start_pe": "0"},
    ]
    fake_bin(stdout=json.dumps({"report": [{"pvseg": rows}]}))
    found = lvm.layout("VG")
    assert "--reportformat" in fake_bin.argv() and "json" in fake_bin.argv()
    assert found.extent_size == 4 * 1024 * 1024
    assert found.pvs["/dev/sdb"].pe_start == 1048576
    a = found.lvs["VHD-a"]
    assert [(pos, run.start) for pos, run in a.segments] == [(0, 13), (1, 2)]   # logical order
    assert [(g.start, g.count) for g in found.free] == [(3, 10)]
    assert found.free_extents() == 10 and found.total_extents() == 100
    fake_bin(stdout=json.dumps({"report": [{"pvseg": []}]}))
    assert lvm.layout("VG") is None
    fake_bin(stdout="not json")
    with pytest.raises(SRError) as err:
        lvm.layout("VG")
    assert err.value.name == "PVSfailed"


def test_lock_is_host_local_per_sr(monkeypatch):
    monkeypatch.delenv("SMLIB_LVM_LOCK_DIR", raising=False)
    a = LVMStore({"device": "/dev/sdb"}, "11111111-1111-1111-1111-111111111111")
    b = LVMStore({"device": "/dev/sdc"}, "11111111-1111-1111-1111-111111111111")
    c = LVMStore({"device": "/dev/sdb"}, "22222222-2222-2222-2222-222222222222")
    assert a.lock_path() == b.lock_path() != c.lock_path()
    assert a.lock_path().startswith("/run/lock/")


def test_unknown_activation_is_refused(monkeypatch):
    monkeypatch.setenv("SMLIB_LVM_ACTIVATION", "dm-magic")
    with pytest.raises(SRError) as err:
        LVMStore({"device": "/dev/sdb"}, None)
    assert "dm-magic" in err.value.opterr
