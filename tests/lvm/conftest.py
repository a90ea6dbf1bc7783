"""Fixtures of the LVM tests.

Real lvm2 tier (DESIGN section 7, tier 4): this machine's kernel has no
device-mapper, so lvm2 runs metadata-only (``--config global{activation=0}``
through ``$SMLIB_LVM_CONFIG``) on a loop device over a sparse file, and the
store reaches LV bytes through loop devices at the LV's extent offset
(``$SMLIB_LVM_ACTIVATION=loop``). Both settings go into the environment so
driver subprocesses use them too.

``loop_pv`` always cleans up, even when the test fails: every loop device
mapping a window of the PV, every VG on it, the PV label, the PV's own loop
device. Where no loop device can be had (no root, no /dev/loop-control, no
lvm2) the test is skipped and the reason says which; with
``SMLIB_REQUIRE_LVM=1`` (CI) that is a failure instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

# backup/archive off: tests must not leave metadata copies in /etc/lvm.
LVM_ENV = {"SMLIB_LVM_CONFIG": "global{activation=0} backup{backup=0 archive=0}",
           "SMLIB_LVM_ACTIVATION": "loop"}
PV_BYTES = 16 * 1024 ** 3            # sparse: only written extents use disk


def _unavailable(reason: str):
    if os.environ.get("SMLIB_REQUIRE_LVM") == "1":
        pytest.fail(f"real lvm2 tier required (SMLIB_REQUIRE_LVM=1) but {reason}")
    pytest.skip(f"real lvm2 tier skipped: {reason}")


def _lvm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["lvm", args[0], "--config", LVM_ENV["SMLIB_LVM_CONFIG"], *args[1:]],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1"))


def windows_of(device: str) -> list[str]:
    """Loop devices whose backing file is ``device``."""
    from smlib.stores.lvmstore import _loop_devices

    real = os.path.realpath(device)
    return sorted(dev for dev, (backing, _, _) in _loop_devices().items()
                  if os.path.realpath(backing) == real)


def detach_windows(device: str) -> None:
    for dev in windows_of(device):
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)


@pytest.fixture(name="windows_of")
def windows_of_fixture():
    """``windows_of(device)``: the loop devices mapping windows of a PV."""
    return windows_of


@pytest.fixture
def lvm_env(monkeypatch):
    for key, value in LVM_ENV.items():
        monkeypatch.setenv(key, value)
    return dict(LVM_ENV)


def _attach(backing: str) -> str:
    if os.geteuid() != 0:
        _unavailable("loop devices need root")
    if shutil.which("losetup") is None or not os.path.exists("/dev/loop-control"):
        _unavailable("no losetup or /dev/loop-control on this machine")
    if shutil.which("lvm", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
        _unavailable("lvm2 is not installed")
    proc = subprocess.run(["losetup", "-f", "--show", backing], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        _unavailable(f"no loop device can be had: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _release(device: str) -> None:
    """Detach the PV's windows and the PV itself, leaving its VG in the file."""
    detach_windows(device)
    subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def _destroy_pv(device: str) -> None:
    detach_windows(device)
    vgs = _lvm("pvs", "--noheadings", "-o", "vg_name", device).stdout.split()
    for vg in vgs:
        _lvm("vgremove", "-f", vg)
    _lvm("pvremove", "-ff", "-y", device)
    subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


class LoopPVs:
    """Loop devices over sparse files in a test's directory.

    ``pvs()`` makes a fresh 16 GiB sparse PV; ``pvs.save(dev, path)`` stops
    using a PV and keeps its bytes (VG and all) as a sparse file;
    ``pvs.restore(path)`` attaches a copy of such a file, so a long scenario
    can start many times from one prepared SR."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.live: dict[str, str] = {}      # device -> backing file
        self.count = 0

    def __call__(self, name: str = "") -> str:
        self.count += 1
        backing = str(self.tmp_path / (name or f"pv{self.count}.img"))
        with open(backing, "wb") as f:
            f.truncate(PV_BYTES)
        dev = _attach(backing)
        self.live[dev] = backing
        return dev

    def save(self, dev: str, path: str) -> None:
        detach_windows(dev)             # flushes each window first
        from smlib.stores.lvmstore import flush_device

        flush_device(dev)
        backing = self.live.pop(dev)
        _release(dev)
        subprocess.run(["cp", "--sparse=always", backing, path], check=True)
        os.unlink(backing)

    def restore(self, path: str) -> str:
        self.count += 1
        backing = str(self.tmp_path / f"pv{self.count}.img")
        subprocess.run(["cp", "--sparse=always", path, backing], check=True)
        dev = _attach(backing)
        self.live[dev] = backing
        return dev

    def release(self, dev: str) -> None:
        """Stop using a PV (its VG stays in its file, which is deleted)."""
        _release(dev)
        os.unlink(self.live.pop(dev))

    def destroy_all(self) -> None:
        for dev in list(self.live):
            _destroy_pv(dev)
        self.live.clear()


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
    from smlib.stores.lvmstore import LVMStore

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
    from lvmsr_helpers import LVMSRHarness

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
