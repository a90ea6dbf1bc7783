"""How an LV's bytes are reached: one replaceable piece of the LVM store.

An activation object answers ``activate(store, lv) -> (path, made here)``,
``deactivate(store, lvs)``, ``before_remove(store, lv)``,
``after_resize(store, lv, old_size)``, ``still_maps(store, lv, path)`` and
``places_extents`` (whether the store must place LVs itself, see
placement.py). ``store`` is the LVMStore (its ``vg``, ``lvm`` and
``layout()``). ``$SMLIB_LVM_ACTIVATION`` chooses one:

* ``lvchange`` (production, the default): ``lvchange -ay`` and
  ``/dev/<vg>/<lv>``.
* ``loop`` (tests on machines without device-mapper): a loop device over the
  PV at the LV's extent offset, resized in place by ``LOOP_SET_STATUS64``
  after ``lvresize``. Only single-segment LVs can be mapped.
"""

import os
import struct
import time
from typing import Sequence

from smlib import config
from smlib.protocol.errors import SRError
from smlib.stores.base import Store, fsync_path

LOSETUP_TRIES = 5  # attaching a loop window races other losetup users


class LVChangeActivation:
    """Production: device-mapper activation through lvm2."""

    places_extents = False

    def activate(self, store: Store, lv: str) -> "tuple[str, bool]":
        """The LV's path, and whether this call made it reachable."""
        path = f"/dev/{store.vg}/{lv}"
        if os.path.exists(path):
            return path, False
        store.lvm.lvchange_activate(store.vg, [lv], True)
        return path, True

    def deactivate(self, store: Store, lvs: Sequence[str]) -> None:
        if lvs:
            store.lvm.lvchange_activate(store.vg, list(lvs), False)

    def before_remove(self, store: Store, lv: str) -> None:
        """lvremove -f deactivates by itself."""
        return None

    def still_maps(self, store: Store, lv: str, path: str) -> bool:
        return os.path.exists(path)

    def after_resize(self, store: Store, lv: str, old_size: int) -> None:
        """device-mapper follows lvresize by itself; the path stays valid."""
        return None

    def release_devices(self, store: Store) -> None:
        """Nothing to find without the VG's metadata (device-mapper names)."""
        return None


def loop_devices() -> "dict[str, tuple[str, int, int]]":
    """Attached loop devices: /dev/loopN -> (backing file, offset, sizelimit).

    A device being detached is left out: ``losetup -d`` on a device that
    someone still holds open (lvm2 scanning devices, say) only marks it
    autoclear, and it vanishes when that holder lets go, so it must never
    be picked up again as a window."""
    found = {}
    base = "/sys/block"
    for dev in os.listdir(base) if os.path.isdir(base) else ():
        info = os.path.join(base, dev, "loop")
        if not dev.startswith("loop") or not os.path.isdir(info):
            continue
        try:
            with open(os.path.join(info, "autoclear")) as f:
                if f.read().strip() == "1":
                    continue
            with open(os.path.join(info, "backing_file")) as f:
                backing = f.read().strip()
            with open(os.path.join(info, "offset")) as f:
                offset = int(f.read())
            with open(os.path.join(info, "sizelimit")) as f:
                limit = int(f.read())
        except (OSError, ValueError):
            continue  # detached while we looked
        found[f"/dev/{dev}"] = (backing, offset, limit)
    return found


def _losetup(args: "list[str]") -> str:
    import subprocess  # deferred: keep driver start-up light

    proc = subprocess.run(["losetup", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60,
                          stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise SRError.from_name("LVMMount", f"losetup {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


class LoopActivation:
    """Tests on machines without device-mapper: a loop device over the PV
    at the LV's extent offset. Only single-segment LVs can be mapped."""

    places_extents = True

    def _window(self, store: Store, lv: str) -> "tuple[str, int, int]":
        info = store.layout().lvs.get(lv)
        if info is None:
            raise SRError.from_name("VDIUnavailable", f"LV {store.vg}/{lv} does not exist")
        if len(info.segments) != 1:
            raise SRError.from_name(
                "VDIUnavailable",
                f"LV {store.vg}/{lv} has {len(info.segments)} segments: loop activation "
                "needs one contiguous run of extents")
        run = info.segments[0][1]
        pv = store.layout().pvs[run.pv]
        es = store.layout().extent_size
        return run.pv, pv.pe_start + run.start * es, run.count * es

    def still_maps(self, store: Store, lv: str, path: str) -> bool:
        """Whether ``path`` is still a window on the LV (sysfs only, cheap)."""
        return path in self._windows(*self._window(store, lv))

    def _windows(self, pv: str, offset: int, size: int) -> "list[str]":
        real = os.path.realpath(pv)
        return sorted(dev for dev, (backing, off, limit) in loop_devices().items()
                      if os.path.realpath(backing) == real and off == offset and limit == size)

    def activate(self, store: Store, lv: str) -> "tuple[str, bool]":
        """The loop device, and whether this call attached it."""
        pv, offset, size = self._window(store, lv)
        for dev in self._windows(pv, offset, size):
            return dev, False  # same bytes already mapped (kept, or left by a crash)
        args = ["-f", "--show", "-o", str(offset), "--sizelimit", str(size), pv]
        for _ in range(LOSETUP_TRIES - 1):
            # "-f" finds a free device, then claims it: another process may
            # claim it in between, which fails this attach; try the next one.
            try:
                return _losetup(args), True
            except SRError:
                time.sleep(0.05)
        return _losetup(args), True

    def deactivate(self, store: Store, lvs: Sequence[str]) -> None:
        for lv in lvs:
            self.before_remove(store, lv)

    def before_remove(self, store: Store, lv: str) -> None:
        """Detach every loop device mapping the LV: no window may outlive
        the extents it shows."""
        try:
            pv, offset, size = self._window(store, lv)
        except SRError:
            return
        for dev in self._windows(pv, offset, size):
            fsync_path(dev)
            _losetup(["-d", dev])

    def release_devices(self, store: Store) -> None:
        """Detach every window over the SR's devices (its VG is gone)."""
        reals = {os.path.realpath(dev) for dev in store.devices}
        for dev, (backing, _, _) in sorted(loop_devices().items()):
            if os.path.realpath(backing) in reals:
                _losetup(["-d", dev])

    def after_resize(self, store: Store, lv: str, old_size: int) -> None:
        """Windows of the LV take its new size, keeping their path, as a
        device-mapper device does (the LV grew or shrank at its end)."""
        pv, offset, size = self._window(store, lv)
        for dev in self._windows(pv, offset, old_size):
            set_loop_sizelimit(dev, size)


# struct loop_info64 (linux/loop.h): 5 u64, 4 u32, 64+64+32 bytes, 2 u64.
LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32s2Q")
LI_SIZELIMIT = 4                      # field index of lo_sizelimit
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05


def set_loop_sizelimit(dev: str, size: int) -> None:
    """Change an attached loop device's size limit in place."""
    import fcntl  # deferred: only the loop activation needs it

    fd = os.open(dev, os.O_RDWR)
    try:
        buf = bytearray(LOOP_INFO64.size)
        fcntl.ioctl(fd, LOOP_GET_STATUS64, buf)
        fields = list(LOOP_INFO64.unpack(buf))
        fields[LI_SIZELIMIT] = size
        fcntl.ioctl(fd, LOOP_SET_STATUS64, LOOP_INFO64.pack(*fields))
    except OSError as exc:
        raise SRError.from_name("LVMResize", f"resizing loop device {dev}: {exc}") from exc
    finally:
        os.close(fd)


ACTIVATIONS = {"lvchange": LVChangeActivation, "loop": LoopActivation}


def default_activation():
    """The activation named by ``$SMLIB_LVM_ACTIVATION`` (production by default)."""
    name = config.lvm_activation()
    if name not in ACTIVATIONS:
        raise SRError.from_name("SMGeneral", f"SMLIB_LVM_ACTIVATION={name!r}: not one of "
                                f"{', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()
