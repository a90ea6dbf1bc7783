"""Fixtures of the LVM tests.

Real lvm2 tier (DESIGN section 7, tier 4) on loop-device PVs: see
loop_pvs.py (shared with tests/toolstack/test_lvm.py). Both lvm2 settings
go into the environment so driver subprocesses use them too.

``loop_pv`` always cleans up, even when the test fails: every loop device
mapping a window of the PV, every VG on it, the PV label, the PV's own loop
device. Where no loop device can be had (no root, no /dev/loop-control, no
lvm2) the test is skipped and the reason says which; with
``SMLIB_REQUIRE_LVM=1`` (CI) that is a failure instead.
"""

from __future__ import annotations

import uuid

import pytest
from helpers.loop_pvs import LVM_ENV, LoopPVs, windows_of


@pytest.fixture(name="windows_of")
def windows_of_fixture():
    """``windows_of(device)``: the loop devices mapping windows of a PV."""
    return windows_of


@pytest.fixture
def lvm_env(monkeypatch):
    for key, value in LVM_ENV.items():
        monkeypatch.setenv(key, value)
    return dict(LVM_ENV)


@pytest.fixture
def loop_pv(tmp_path, lvm_env):
    """LoopPVs: fresh loop-device PVs over sparse files; torn down whatever happens."""
    pvs = LoopPVs(tmp_path)
    try:
        yield pvs
    finally:
        pvs.destroy_all()


@pytest.fixture
def sr_uuid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def lvm_store(loop_pv, sr_uuid, tmp_path, monkeypatch):
    """An LVMStore on a freshly created SR (real lvm2), closed afterwards."""
    from smlib.stores.lvm.store import LVMStore

    monkeypatch.setenv("SMLIB_LVM_LOCK_DIR", str(tmp_path / "locks"))
    dev = loop_pv()
    store = LVMStore({"device": dev}, sr_uuid)
    store.sr_create()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def harness_fns(run_driver, xapi_params, dispatch) -> tuple:
    return (run_driver, xapi_params, dispatch)


@pytest.fixture
def make_lvmsr(loop_pv, harness_fns, tmp_path, monkeypatch):
    """make_lvmsr() -> a fresh LVMSRHarness on its own loop device (sr_create done)."""
    from helpers.lvmsr_helpers import LVMSRHarness

    monkeypatch.setenv("SMLIB_LVM_LOCK_DIR", str(tmp_path / "locks"))
    def make():
        h = LVMSRHarness(loop_pv(), harness_fns)
        h.inproc("sr_create")
        return h

    make.pvs = loop_pv
    return make


@pytest.fixture
def lvmsr(make_lvmsr):
    return make_lvmsr()
