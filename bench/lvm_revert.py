"""LVMSR on real lvm2: lvm2 runs per operation, and one vdi_revert's wall
time against one lvcreate measured in the same run.

This machine has no device-mapper: lvm2 runs metadata-only
(``global{activation=0}``) on a loop device over a sparse file, and LV bytes
are reached through loop windows (``SMLIB_LVM_ACTIVATION=loop``), as in the
real-lvm2 test tier.

  lvm2 runs per vdi_revert (snapshot never written)    goal <= 4
  lvm2 runs per vdi_revert (snapshot written: frozen)  (report)
  lvm2 runs per vdi_snapshot                           (report)
  one vdi_revert (driver process) vs one lvcreate      (report)

Run counts come from the wrapper's counter (smlib.stores.lvm.lvm2.RUNS) over
in-process calls; losetup runs (test-mode activation only) are counted
beside them. Wall times: the real drivers/LVMSR process per revert, the
``lvm lvcreate`` process per lvcreate, interleaved, median of 15; every
timed revert does real work (alternating between two snapshots).
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import tempfile
import time
import uuid as uuidlib

from bench._filesr_util import REPO, DriverBench, driver_env, median_ms, report

DRIVER = os.path.join(REPO, "drivers", "LVMSR")
CONFIG = "global{activation=0}"
MiB = 1 << 20
GiB = 1 << 30


class LVMBench(DriverBench):
    """An LVMSR on a loop device; ``call`` in process, ``timed`` as a process."""

    DRIVER = DRIVER

    def __init__(self, tmp: str) -> None:
        backing = os.path.join(tmp, "pv.img")
        with open(backing, "wb") as f:
            f.truncate(64 * GiB)
        self.device = subprocess.run(["losetup", "-f", "--show", backing], check=True,
                                     capture_output=True, text=True).stdout.strip()
        self.device_config = {"device": self.device}
        os.environ.update(SMLIB_LVM_CONFIG=CONFIG, SMLIB_LVM_ACTIVATION="loop",
                          SMLIB_LVM_LOCK_DIR=os.path.join(tmp, "locks"))
        self.env = driver_env(tmp)
        os.environ["SM_LOG"] = self.env["SM_LOG"]
        self.sr_uuid = str(uuidlib.uuid4())
        self.vg = "VG_XenStorage-" + self.sr_uuid
        self.losetups: collections.Counter[str] = collections.Counter()
        self._count_losetup()
        try:
            self.call("sr_create")
            self.call("sr_attach")  # as xapi plugs the PBD: MGT stays reachable
        except BaseException:
            self.close()        # main's finally does not cover a failed set-up
            raise

    def _count_losetup(self) -> None:
        from smlib.stores.lvm import activation

        real = activation._losetup

        def counted(args: list[str]) -> str:
            self.losetups["-d" if "-d" in args else "attach"] += 1
            return real(args)

        activation._losetup = counted

    @staticmethod
    def driver_class() -> type:
        from smlib.drivers.lvm import LVMSR

        return LVMSR

    def counted(self, command: str, vdi: str = "", args: tuple = ()) -> tuple:
        """(result, lvm2 runs by command, losetup runs) of one in-process call."""
        from smlib.stores.lvm import lvm2 as lvm

        before, loops = dict(lvm.RUNS), dict(self.losetups)
        result = self.call(command, vdi, args)
        runs = {k: v - before.get(k, 0) for k, v in lvm.RUNS.items() if v != before.get(k, 0)}
        loop = {k: v - loops.get(k, 0) for k, v in self.losetups.items()
                if v != loops.get(k, 0)}
        return result, runs, loop

    def counted_with_gc(self, command: str, vdi: str = "", args: tuple = ()) -> tuple:
        """As ``counted``, plus the lvm2 runs made inside GC (GC.collect)
        during the call, by command."""
        from smlib.stores.lvm import lvm2 as lvm
        from smlib.tree import gc as gcmod

        in_gc: collections.Counter[str] = collections.Counter()
        real = gcmod.GC.collect

        def collect(gc_self) -> int:
            before = dict(lvm.RUNS)
            try:
                return real(gc_self)
            finally:
                for k, v in lvm.RUNS.items():
                    if v != before.get(k, 0):
                        in_gc[k] += v - before.get(k, 0)

        gcmod.GC.collect = collect
        try:
            return (*self.counted(command, vdi, args), dict(in_gc))
        finally:
            gcmod.GC.collect = real

    def lvcreate_time(self, name: str) -> float:
        argv = ["lvm", "lvcreate", "--config", CONFIG, "-Zn", "-Wn", "-l", "1", "-n", name,
                self.vg]
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL,
                       env=dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1"))
        return time.perf_counter() - start

    def write(self, vdi: str, tag: int) -> None:
        from smlib import vhd

        path = self.call("vdi_attach", vdi, ("true",))["params"]
        with vhd.open_image(path, writable=True) as img:
            img.write(0, bytes([tag]) * (2 * MiB))
        self.call("vdi_detach", vdi)

    def close(self) -> None:
        from smlib.stores.lvm.activation import loop_devices

        real = os.path.realpath(self.device)
        for dev, (backing, _, _) in loop_devices().items():
            if os.path.realpath(backing) == real:
                subprocess.run(["losetup", "-d", dev], capture_output=True)
        for args in (["vgremove", "-f", self.vg], ["pvremove", "-ff", "-y", self.device]):
            subprocess.run(["lvm", args[0], "--config", CONFIG, *args[1:]], capture_output=True)
        subprocess.run(["losetup", "-d", self.device], capture_output=True)


def _runs(label: str, runs: dict, loops: dict) -> int:
    total = sum(runs.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(runs.items()))
    loop = ", ".join(f"{k} {v}" for k, v in sorted(loops.items())) or "none"
    print(f"  {label:<44} {total} lvm2 runs ({detail}); losetup: {loop}")
    return total


def main(rounds: int = 15) -> dict:
    if os.geteuid() != 0 or not shutil.which("losetup") or not os.path.exists("/dev/loop-control"):
        print("  skipped: needs root and loop devices")
        return {}
    with tempfile.TemporaryDirectory(prefix="lvm-bench-") as tmp:
        b = LVMBench(tmp)
        try:
            t = b.call("vdi_create", args=(str(GiB), "bench"))["uuid"]
            b.write(t, 1)
            s1, snap_runs, snap_loops = b.counted("vdi_snapshot", t)
            s1 = s1["uuid"]
            b.write(t, 2)
            s2 = b.call("vdi_snapshot", t)["uuid"]
            b.write(t, 3)
            print("lvm2 runs per operation (in-process calls, wrapper counter):")
            n_snap = _runs("vdi_snapshot", snap_runs, snap_loops)
            _, rev_runs, rev_loops = b.counted("vdi_revert", s1, (t,))
            n_rev = _runs("vdi_revert (snapshot never written)", rev_runs, rev_loops)
            verdict = "within" if n_rev <= 4 else "OVER"
            print(f"  -> {n_rev} runs per vdi_revert ({verdict} the goal of 4)")
            _, rep_runs, rep_loops = b.counted("vdi_revert", s1, (t,))
            _runs("vdi_revert repeated (already in that state)", rep_runs, rep_loops)
            w = b.call("vdi_create", args=(str(GiB), "written"))["uuid"]
            ws = b.call("vdi_snapshot", w)["uuid"]
            b.write(ws, 4)
            _, wr_runs, wr_loops, wr_gc = b.counted_with_gc("vdi_revert", ws, (w,))
            n_wrev = _runs("vdi_revert (snapshot written: frozen first)", wr_runs, wr_loops)
            n_wgc = sum(wr_gc.values())
            detail = ", ".join(f"{k} {v}" for k, v in sorted(wr_gc.items())) or "none"
            print(f"  {'  of which in GC (coalescing the old base)':<44} {n_wgc} ({detail});"
                  f" the revert itself {n_wrev - n_wgc}")

            b.timed("vdi_revert", s2, (t,))  # warm-up: .pyc files, page cache
            revert_times, lvcreate_times = [], []
            for i in range(rounds):
                revert_times.append(b.timed("vdi_revert", (s1, s2)[i % 2], (t,)))
                lvcreate_times.append(b.lvcreate_time(f"bench{i}"))
            print("one vdi_revert (whole driver process) vs one lvcreate (whole lvm process):")
            ratio = report("lvm lvcreate -l 1", lvcreate_times, "drivers/LVMSR vdi_revert",
                           revert_times)
            print(f"  (an lvm2 run here costs about {median_ms(lvcreate_times):.0f} ms)")
        finally:
            b.close()
    return {"revert_runs": n_rev, "written_revert_runs": n_wrev, "written_revert_gc_runs": n_wgc,
            "snapshot_runs": n_snap,
            "revert_vs_lvcreate": ratio}


if __name__ == "__main__":
    main()
