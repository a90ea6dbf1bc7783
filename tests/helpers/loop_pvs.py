"""Loop-device PVs for the real-lvm2 tests (tests/lvm and tests/toolstack).

This machine's kernel has no device-mapper, so lvm2 runs metadata-only
(``--config global{activation=0}`` through ``$SMLIB_LVM_CONFIG``) on a loop
device over a sparse file, and the store reaches LV bytes through loop
devices at the LV's extent offset (``$SMLIB_LVM_ACTIVATION=loop``).

``LoopPVs.destroy_all`` always cleans up: every loop device mapping a window
of a PV, every VG on it, the PV label, the PV's own loop device; then it
checks that no loop device is left over the test's files. Where no loop
device can be had (no root, no /dev/loop-control, no lvm2) the test is
skipped and the reason says which; with ``SMLIB_REQUIRE_LVM=1`` (CI) that
is a failure instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import NoReturn

import pytest

# backup/archive off: tests must not leave metadata copies in /etc/lvm.
LVM_ENV = {"SMLIB_LVM_CONFIG": "global{activation=0} backup{backup=0 archive=0}",
           "SMLIB_LVM_ACTIVATION": "loop"}
PV_BYTES = 16 * 1024 ** 3            # sparse: only written extents use disk
# losetup -d on a loop device someone holds open (a concurrent lvm2 scan of
# every block device, say) only marks it autoclear: it goes when they let go.
RELEASE_WAIT = 30.0
ATTACH_TRIES = 5


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail where the real lvm2 tier is required (CI)."""
    if os.environ.get("SMLIB_REQUIRE_LVM") == "1":
        pytest.fail(f"real lvm2 tier required (SMLIB_REQUIRE_LVM=1) but {reason}")
    pytest.skip(f"real lvm2 tier skipped: {reason}")


def _lvm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["lvm", args[0], "--config", LVM_ENV["SMLIB_LVM_CONFIG"], *args[1:]],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1"))


def loop_backings() -> dict[str, str]:
    """Every loop device still attached (autoclear ones included, unlike
    the store's own list) -> its backing file, from /sys/block."""
    found = {}
    base = "/sys/block"
    for dev in os.listdir(base) if os.path.isdir(base) else ():
        try:
            with open(os.path.join(base, dev, "loop", "backing_file")) as f:
                found[f"/dev/{dev}"] = f.read().strip()
        except OSError:
            continue            # not a loop device, or detached while we looked
    return found


def windows_of(device: str) -> list[str]:
    """Loop devices whose backing file is ``device``."""
    from smlib.stores.lvm.activation import loop_devices

    real = os.path.realpath(device)
    return sorted(dev for dev, (backing, _, _) in loop_devices().items()
                  if os.path.realpath(backing) == real)


def detach_windows(device: str) -> None:
    for dev in windows_of(device):
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)


def _attach(backing: str) -> str:
    if os.geteuid() != 0:
        unavailable("loop devices need root")
    if shutil.which("losetup") is None or not os.path.exists("/dev/loop-control"):
        unavailable("no losetup or /dev/loop-control on this machine")
    if shutil.which("lvm", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
        unavailable("lvm2 is not installed")
    # losetup -f is not atomic: another process (a concurrent test run) can
    # take the free device it found first (EBUSY, or EINVAL while that one
    # is torn down). A few tries, then the failure stands.
    for attempt in range(ATTACH_TRIES):
        proc = subprocess.run(["losetup", "-f", "--show", backing], capture_output=True,
                              text=True, check=False)
        if proc.returncode == 0:
            return proc.stdout.strip()
        time.sleep(0.2 * (attempt + 1))
    unavailable(f"no loop device can be had: {proc.stderr.strip()}")


def _release(device: str) -> None:
    """Detach the PV's windows and the PV itself, leaving its VG in the file,
    and wait until the kernel has let the device go: a copy of the same PV
    attached while this one lingers (autoclear, held by a concurrent lvm2
    scan) would show lvm2 two PVs with one uuid, and it may pick the one
    about to vanish ("volume group not found")."""
    detach_windows(device)
    backing = loop_backings().get(device)
    subprocess.run(["losetup", "-d", device], capture_output=True, check=False)
    deadline = time.monotonic() + RELEASE_WAIT
    while backing is not None and time.monotonic() < deadline:
        now = loop_backings().get(device)
        if now is None or now.removesuffix(" (deleted)") != backing.removesuffix(" (deleted)"):
            return
        time.sleep(0.1)


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
    can start many times from one prepared SR. ``destroy_all()`` is for a
    fixture's ``finally``."""

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
        from smlib.stores.base import fsync_path

        fsync_path(dev)
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

    def leftovers(self) -> list[str]:
        """Loop devices still over this test's files, or over such a device."""
        root = os.path.realpath(str(self.tmp_path)) + os.sep
        backings = loop_backings()
        ours = {dev for dev, backing in backings.items()
                if os.path.realpath(backing.removesuffix(" (deleted)")).startswith(root)}
        ours |= {dev for dev, backing in backings.items() if backing in ours}
        return sorted(ours)

    def destroy_all(self) -> None:
        """Remove every VG and PV made here and detach every loop device
        over this test's files; an assertion error names any that stays."""
        for dev in list(self.live):
            _destroy_pv(dev)
        self.live.clear()
        deadline = time.monotonic() + RELEASE_WAIT
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
            for dev in self.leftovers():   # windows of a saved PV, say
                subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
        left = self.leftovers()
        assert not left, f"loop devices left attached over {self.tmp_path}: {left}"
