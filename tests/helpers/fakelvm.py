"""A fake lvm2 for the pyfakefs tier: the functions of smlib.stores.lvm.lvm2,
with the VG state in memory and each LV's bytes in a fake block-device file.

It enforces the rules of lvm2 2.03 that the store relies on, with lvm2's
own messages (as seen from real runs on this machine): legal and unique
names, sizes in whole extents, VG free space, devices that are (not) PVs,
missing LVs, "new size matches existing size". LV bytes live in
``/var/lib/fakelvm/<vg>/<id>`` (S_IFBLK files, so smlib.vhd treats them as
containers); ``/dev/<vg>/<lv>`` is a symlink to it while the LV is active,
as device-mapper's node is. A mock is used here because the real thing
cannot run inside pyfakefs; the real-lvm2 tier checks the same store.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import re
import stat
from typing import Iterable, Optional, Sequence

from smlib.stores.lvm import lvm2 as lvm
from smlib.stores.lvm.lvm2 import Extents, Layout, LVInfo, PVInfo

PE_START = 1024 * 1024
EXTENT = 4 * 1024 * 1024
DATA_DIR = "/var/lib/fakelvm"
NAME_RE = re.compile(r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$")
RESERVED = ("_cdata", "_cmeta", "_corig", "_mlog", "_mimage", "_pmspare", "_rimage",
            "_rmeta", "_tdata", "_tmeta", "_vorigin", "_vdata")


@dataclasses.dataclass
class FakeLV:
    ident: int
    segments: list[Extents]               # in logical order
    active: bool = False

    def extents(self) -> int:
        return sum(s.count for s in self.segments)


@dataclasses.dataclass
class FakeVG:
    pvs: list[str]
    lvs: dict[str, FakeLV] = dataclasses.field(default_factory=dict)


class FakeLVM:
    def __init__(self, fs) -> None:
        self.fs = fs                     # the pyfakefs FakeFilesystem
        self.RUNS: collections.Counter[str] = collections.Counter()
        self.pv_vg: dict[str, str] = {}  # device -> VG name ("" = orphan PV)
        self.vgs: dict[str, FakeVG] = {}
        self._ids = itertools.count(1)

    # ------------------------------------------------------------ helpers

    def add_disk(self, path: str, size: int) -> str:
        self.fs.create_file(path, st_mode=stat.S_IFBLK | 0o660, st_size=size)
        return path

    def _fail(self, command: str, args: Sequence[str], message: str, error: str):
        return lvm.failure(command, args, message, error)

    def _run(self, command: str) -> None:
        self.RUNS[command] += 1

    def _vg(self, command: str, args, vg: str, error: str) -> FakeVG:
        if vg not in self.vgs:
            raise self._fail(command, args, f'Volume group "{vg}" not found', error)
        return self.vgs[vg]

    def _lv(self, command: str, args, vg: str, lv: str, error: str) -> FakeLV:
        group = self._vg(command, args, vg, error)
        if lv not in group.lvs:
            raise self._fail(command, args, f'Failed to find logical volume "{vg}/{lv}"',
                             error)
        return group.lvs[lv]

    def _check_name(self, command: str, args, name: str, what: str, error: str) -> None:
        if (not NAME_RE.match(name) or name in (".", "..") or len(name) > 127
                or any(r in name for r in RESERVED) or name.startswith(("snapshot", "pvmove"))):
            raise self._fail(command, args, f'{what} name "{name}" has invalid characters.',
                             error)

    @staticmethod
    def pe_count(size: int) -> int:
        return (size - PE_START) // EXTENT

    def _free(self, group: FakeVG) -> list[Extents]:
        used: dict[str, list[tuple[int, int]]] = {pv: [] for pv in group.pvs}
        for lv in group.lvs.values():
            for seg in lv.segments:
                used[seg.pv].append((seg.start, seg.count))
        gaps = []
        for pv in group.pvs:
            pos = 0
            for start, count in sorted(used[pv]) + [(self.pe_count(os.path.getsize(pv)), 0)]:
                if start > pos:
                    gaps.append(Extents(pv, pos, start - pos))
                pos = max(pos, start + count)
        return gaps

    def _allocate(self, command, args, vg: str, group: FakeVG, count: int,
                  where: Optional[Iterable[Extents]], after: Optional[Extents],
                  error: str) -> list[Extents]:
        gaps = self._free(group)
        if where is not None:
            wanted = list(where)
            for w in wanted:
                if not any(g.pv == w.pv and g.start <= w.start and
                           w.start + w.count <= g.start + g.count for g in gaps):
                    raise self._fail(command, args, f"Insufficient free space: {count} "
                                     "extents needed, but only 0 available", error)
            if sum(w.count for w in wanted) < count:
                raise self._fail(command, args, f"Insufficient free space: {count} extents "
                                 f"needed, but only {sum(w.count for w in wanted)} available",
                                 error)
            gaps = wanted
        free = sum(g.count for g in gaps)
        if free < count:
            raise self._fail(command, args, f'Volume group "{vg}" has insufficient free space '
                             f"({free} extents): {count} required.", error)
        if after is not None:  # lvm2 extends in place first when it can
            gaps.sort(key=lambda g: (g.pv != after.pv or g.start != after.start + after.count))
        out = []
        for gap in gaps:
            take = min(gap.count, count - sum(s.count for s in out))
            if take:
                out.append(Extents(gap.pv, gap.start, take))
        return out

    def _data(self, vg: str, lv: FakeLV) -> str:
        return f"{DATA_DIR}/{vg}/{lv.ident}"

    def _node(self, vg: str, name: str) -> str:
        return f"/dev/{vg}/{name}"

    def _set_size(self, vg: str, lv: FakeLV) -> None:
        os.truncate(self._data(vg, lv), lv.extents() * EXTENT)

    # ------------------------------------------------------------ reports

    def layout(self, vg: str) -> Optional[Layout]:
        self._run("pvs")
        group = self.vgs.get(vg)
        if group is None:
            return None
        found = Layout(vg=vg, extent_size=EXTENT, pvs={}, lvs={}, free=self._free(group))
        for pv in group.pvs:
            found.pvs[pv] = PVInfo(pv, PE_START, self.pe_count(os.path.getsize(pv)))
        for name, lv in group.lvs.items():
            info = LVInfo(name, lv.extents() * EXTENT)
            pos = 0
            for seg in lv.segments:
                info.segments.append((pos, Extents(seg.pv, seg.start, seg.count)))
                pos += seg.count
            found.lvs[name] = info
        return found

    def pv_owners(self) -> dict[str, str]:
        self._run("pvs")
        return {os.path.realpath(pv): vg for pv, vg in self.pv_vg.items()}

    # ------------------------------------------------------------ changes

    def pvcreate(self, devices: Sequence[str]) -> None:
        self._run("pvcreate")
        for dev in devices:
            if not os.path.exists(dev) or not stat.S_ISBLK(os.stat(dev).st_mode):
                raise self._fail("pvcreate", devices, f"No device found for {dev}.", "LVMCreate")
            if dev in self.pv_vg:
                raise self._fail("pvcreate", devices, f'Can\'t initialize physical volume "{dev}"'
                                 f' of volume group "{self.pv_vg[dev]}" without -ff', "LVMCreate")
            if self.pe_count(os.path.getsize(dev)) < 1:
                raise self._fail("pvcreate", devices, f"Cannot use {dev}: device is too small "
                                 "(pv_min_size)", "LVMCreate")
        for dev in devices:
            self.pv_vg[dev] = ""

    def pvremove(self, devices: Sequence[str]) -> None:
        self._run("pvremove")
        for dev in devices:
            if self.pv_vg.get(dev):
                raise self._fail("pvremove", devices, f'PV {dev} is used by VG '
                                 f'{self.pv_vg[dev]} so please use vgreduce first.', "LVMDelete")
            if dev not in self.pv_vg:
                raise self._fail("pvremove", devices, f"No PV found on device {dev}.",
                                 "LVMDelete")
        for dev in devices:
            del self.pv_vg[dev]

    def vgcreate(self, vg: str, devices: Sequence[str]) -> None:
        args = [vg, *devices]
        self._run("vgcreate")
        self._check_name("vgcreate", args, vg, "Volume group", "LVMGroupCreate")
        if vg in self.vgs:
            raise self._fail("vgcreate", args, f'A volume group called {vg} already exists.',
                             "LVMGroupCreate")
        for dev in devices:
            if self.pv_vg.get(dev):
                raise self._fail("vgcreate", args, f'Physical volume \'{dev}\' is already in '
                                 f'volume group \'{self.pv_vg[dev]}\'', "LVMGroupCreate")
            if dev not in self.pv_vg:  # lvm2 would pvcreate it implicitly
                self.pv_vg[dev] = ""
        for dev in devices:
            self.pv_vg[dev] = vg
        self.vgs[vg] = FakeVG(pvs=list(devices))

    def vgremove(self, vg: str) -> None:
        self._run("vgremove")
        group = self._vg("vgremove", [vg], vg, "LVMDelete")
        for name in list(group.lvs):
            self._drop(vg, group, name)
        for pv in group.pvs:
            self.pv_vg[pv] = ""
        del self.vgs[vg]

    def lvcreate(self, vg: str, lv: str, extents: int, *,
                 where: Optional[Iterable[Extents]] = None) -> None:
        args = ["-l", str(extents), "-n", lv, vg]
        self._run("lvcreate")
        group = self._vg("lvcreate", args, vg, "LVMCreate")
        self._check_name("lvcreate", args, lv, "Logical volume", "LVMCreate")
        if lv in group.lvs:
            raise self._fail("lvcreate", args, f'Logical Volume "{lv}" already exists in volume '
                             f'group "{vg}"', "LVMCreate")
        if not isinstance(extents, int) or extents < 1:
            raise self._fail("lvcreate", args, f"Invalid argument for --extents: {extents}",
                             "LVMCreate")
        segs = self._allocate("lvcreate", args, vg, group, extents, where, None, "LVMCreate")
        new = FakeLV(next(self._ids), segs)
        group.lvs[lv] = new
        os.makedirs(f"{DATA_DIR}/{vg}", exist_ok=True)
        # Not zeroed (-Zn): the fake fills with a pattern, so nothing relies
        # on fresh LVs reading as zeros.
        self.fs.create_file(self._data(vg, new), st_mode=stat.S_IFBLK | 0o600,
                            contents=b"\xa5" * (extents * EXTENT))
        new.active = True  # lvcreate activates, as lvm2 does when it can
        self._link(vg, lv, new)

    def lvrename(self, vg: str, old: str, new: str) -> None:
        args = [vg, old, new]
        self._run("lvrename")
        group = self._vg("lvrename", args, vg, "LVMCreate")
        self._check_name("lvrename", args, new, "Logical volume", "LVMCreate")
        if old not in group.lvs:
            raise self._fail("lvrename", args, f'Existing logical volume "{old}" not found in '
                             f'volume group "{vg}"', "LVMCreate")
        if new in group.lvs:
            raise self._fail("lvrename", args, f'Logical Volume "{new}" already exists in '
                             f'volume group "{vg}"', "LVMCreate")
        lv = group.lvs.pop(old)
        group.lvs[new] = lv
        if lv.active:
            os.unlink(self._node(vg, old))
            self._link(vg, new, lv)

    def lvresize(self, vg: str, lv: str, extents: int, *,
                 where: Optional[Iterable[Extents]] = None) -> None:
        args = ["-f", "-l", str(extents), f"{vg}/{lv}"]
        self._run("lvresize")
        group = self._vg("lvresize", args, vg, "LVMResize")
        item = self._lv("lvresize", args, vg, lv, "LVMResize")
        have = item.extents()
        if extents == have:
            raise self._fail("lvresize", args, f"New size ({extents} extents) matches existing "
                             f"size ({have} extents).", "LVMResize")
        if extents > have:
            item.segments += self._allocate("lvresize", args, vg, group, extents - have, where,
                                            item.segments[-1], "LVMResize")
            merged: list[Extents] = []
            for seg in item.segments:
                last = merged[-1] if merged else None
                if last and last.pv == seg.pv and last.start + last.count == seg.start:
                    last.count += seg.count
                else:
                    merged.append(Extents(seg.pv, seg.start, seg.count))
            item.segments = merged
        else:
            drop = have - extents
            while drop:
                cut = min(drop, item.segments[-1].count)
                item.segments[-1].count -= cut
                if not item.segments[-1].count:
                    item.segments.pop()
                drop -= cut
        self._set_size(vg, item)

    def lvremove(self, vg: str, lvs: Sequence[str]) -> None:
        args = ["-f", *[f"{vg}/{lv}" for lv in lvs]]
        self._run("lvremove")
        group = self._vg("lvremove", args, vg, "LVMDelete")
        for lv in lvs:
            self._lv("lvremove", args, vg, lv, "LVMDelete")
        for lv in lvs:
            self._drop(vg, group, lv)

    def lvchange_activate(self, vg: str, lvs: Sequence[str], active: bool) -> None:
        args = ["-ay" if active else "-an", *[f"{vg}/{lv}" for lv in lvs]]
        self._run("lvchange")
        error = "LVMMount" if active else "LVMUnMount"
        group = self._vg("lvchange", args, vg, error)
        for lv in lvs:
            self._lv("lvchange", args, vg, lv, error)
        for lv in lvs:
            item = group.lvs[lv]
            if item.active != active:
                item.active = active
                if active:
                    self._link(vg, lv, item)
                else:
                    os.unlink(self._node(vg, lv))

    # ----------------------------------------------------------- internals

    def _link(self, vg: str, name: str, lv: FakeLV) -> None:
        os.makedirs(f"/dev/{vg}", exist_ok=True)
        os.symlink(self._data(vg, lv), self._node(vg, name))

    def _drop(self, vg: str, group: FakeVG, name: str) -> None:
        lv = group.lvs.pop(name)
        if lv.active:
            os.unlink(self._node(vg, name))
        os.unlink(self._data(vg, lv))

    def check_sizes(self) -> None:
        """Every LV's bytes are exactly its size: nothing wrote past an LV's
        end (a real device would have refused it)."""
        for vg, group in self.vgs.items():
            for name, lv in group.lvs.items():
                size = os.path.getsize(self._data(vg, lv))
                assert size == lv.extents() * EXTENT, \
                    f"{vg}/{name}: {size} bytes in an LV of {lv.extents()} extents"
