"""The LVM store: each volume is an LV of the VG ``VG_XenStorage-<sr_uuid>``.

Volume ``N`` is the LV ``VHD-N`` holding a VHD image whose trailing footer
sits at the end of its data (the LV may be larger). The LV ``MGT`` holds the
SR metadata and the journal (``smlib.stores.lvm.mgt``). The lock is a host-local
file. lvm2 is reached only through ``smlib.stores.lvm.lvm2`` (or a fake with the
same functions, given as ``lvm=``).

One ``pvs --segments`` run (``lvm.layout``) tells a command the whole VG;
afterwards the store keeps that picture up to date itself, so each later
change costs exactly its own lvm2 run.

How an LV's bytes are reached is one replaceable piece (activation.py,
chosen by ``$SMLIB_LVM_ACTIVATION``): ``lvchange -ay`` in production, loop
devices in the tests here. The loop activation maps only LVs made of one run
of extents, so with it the store places LVs itself (placement.py).
"""

import os
import stat
from typing import Optional

from smlib import config
from smlib.faults import mutation_point
from smlib.protocol.errors import SRError
from smlib.stores.base import Store, fsync_path, is_volume_name
from smlib.stores.lvm import lvm2 as lvm_module
from smlib.stores.lvm import mgt, placement
from smlib.stores.lvm.activation import LVChangeActivation, default_activation
from smlib.stores.lvm.lvm2 import Layout, LVInfo
from smlib.uuids import is_uuid_text

VG_PREFIX = "VG_XenStorage-"
LV_PREFIX = "VHD-"
MGT_LV = "MGT"
MGT_BYTES = 8 * 1024 * 1024


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ------------------------------------------------------------------ store

class LVMStore(Store):
    SIZED_CONTAINERS = True

    def __init__(self, device_config: "dict[str, str]", sr_uuid: Optional[str], *,
                 lvm=None, activation=None) -> None:
        super().__init__(device_config, sr_uuid)
        raw = (device_config or {}).get("device")
        if not raw:
            raise SRError.from_name("ConfigDeviceMissing")
        self.devices = [d.strip() for d in raw.split(",") if d.strip()]
        if not self.devices:
            raise SRError.from_name("ConfigDeviceMissing")
        # Both reach lvm2's command line and the lock path: a device that
        # is not an absolute path could be read as an option, an sr_uuid
        # that is not a uuid could name another VG or leave the lock dir.
        for dev in self.devices:
            if not dev.startswith("/"):
                raise SRError.from_name("BadRequest", f"device {dev!r} is not an absolute path")
        if sr_uuid is not None and not is_uuid_text(sr_uuid):
            raise SRError.from_name("BadRequest", f"sr_uuid {sr_uuid!r} is not a uuid")
        self.vg = VG_PREFIX + (sr_uuid or "")
        self.lvm = lvm if lvm is not None else lvm_module
        self.activation = activation if activation is not None else default_activation()
        self._layout: Optional[Layout] = None
        self._extents_known = True   # False after an unplaced change (production)
        self._active: dict[str, tuple[str, bool]] = {}  # lv -> (path, made here)
        self._mgt: Optional[mgt.State] = None

    # ------------------------------------------------------ names, layout

    @staticmethod
    def lv_name(name: str) -> str:
        if not is_volume_name(name):
            raise SRError.from_name("VDIUnavailable", f"not a volume name: {name!r}")
        return LV_PREFIX + name

    def layout(self) -> Layout:
        """The VG as this command knows it (one ``pvs`` run the first time)."""
        if self._layout is None or (not self._extents_known and self.activation.places_extents):
            found = self.lvm.layout(self.vg) if self.sr_uuid else None
            if found is None:
                raise SRError.from_name("SRUnavailable", f"volume group {self.vg} not found")
            self._layout = found
            self._extents_known = True
        return self._layout

    def _info(self, name: str) -> Optional[LVInfo]:
        return self.layout().lvs.get(self.lv_name(name))

    def _extents_for(self, nbytes: int) -> int:
        return max(1, _ceil_div(nbytes, self.layout().extent_size))

    # ------------------------------------------------------------- SR

    def sr_exists(self) -> bool:
        """True when the VG with its MGT exists. The tree asks before it
        takes the SR lock, so nothing read here is kept (another command may
        change the VG before the lock is ours), and a host-local marker
        written when the SR was last seen here answers without an lvm2 run;
        a VG removed behind the SR's back then fails its first real use
        under the lock with SRUnavailable, as this check would."""
        if not self.sr_uuid:
            return False
        if os.path.exists(self._marker()):
            return True
        found = self.lvm.layout(self.vg)
        if found is None or MGT_LV not in found.lvs:
            return False
        self._touch_marker()
        return True

    def _marker(self) -> str:
        return self.lock_path()[:-len(".lock")] + ".present"

    def _touch_marker(self) -> None:
        path = self._marker()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a"):
            pass

    def _check_devices(self) -> "list[str]":
        owners = self.lvm.pv_owners()
        fresh = []
        for dev in self.devices:
            try:
                mode = os.stat(dev).st_mode
            except OSError as exc:
                raise SRError.from_name("ConfigDeviceInvalid", f"{dev}: {exc.strerror}") from exc
            if not stat.S_ISBLK(mode):
                raise SRError.from_name("ConfigDeviceInvalid", f"{dev} is not a block device")
            owner = owners.get(os.path.realpath(dev))
            if owner == self.vg:
                raise SRError.from_name("SRExists", f"{dev} already holds {self.vg}")
            if owner:
                raise SRError.from_name("LVMPartInUse", f"{dev} belongs to volume group {owner}")
            if owner is None:
                fresh.append(dev)
        return fresh

    def sr_create(self) -> None:
        if not self.sr_uuid:
            raise SRError.from_name("SRUnavailable", "sr_create needs an SR uuid")
        fresh = self._check_devices()
        if fresh:
            self.lvm.pvcreate(fresh)
        try:
            self.lvm.vgcreate(self.vg, self.devices)
        except SRError:
            if fresh:
                self.lvm.pvremove(fresh)
            raise
        try:
            self._layout = None
            self._create_lv(MGT_LV, self._extents_for(MGT_BYTES))
            path = self._activate_lv(MGT_LV)
            mgt.format_container(path, self.layout().lvs[MGT_LV].size)
            self._mgt = mgt.State()
            self._save_mgt()
            self._touch_marker()
            # Made outside the SR lock: the commands after it read afresh.
            self._layout, self._mgt = None, None
        except BaseException:
            self.close()
            self.lvm.vgremove(self.vg)
            if fresh:  # PV labels that were there before stay
                self.lvm.pvremove(fresh)
            raise

    def sr_delete(self) -> None:
        pvs = list(self.layout().pvs)
        for lv in self.layout().lvs:  # vgremove -f deactivates; loop windows need detaching
            self.activation.before_remove(self, lv)
        self._active.clear()
        self.lvm.vgremove(self.vg)
        self.lvm.pvremove(pvs)
        self._layout = None
        self._mgt = None
        if os.path.exists(self._marker()):
            os.unlink(self._marker())

    def sr_attach(self) -> None:
        # MGT stays reachable while the SR is attached: later commands find
        # it active and pay no lvm2 run for their bookkeeping.
        self._activate_lv(MGT_LV, keep=True)
        self._layout = None  # read before the SR lock: not to be trusted after it

    def sr_detach(self) -> None:
        self._deactivate_all(everything=True)

    def release_host_resources(self) -> None:
        self._active.clear()
        self.activation.release_devices(self)

    def probe(self) -> "list[dict[str, str]]":
        owners = self.lvm.pv_owners()
        found = []
        for dev in self.devices:
            vg = owners.get(os.path.realpath(dev)) or ""
            if vg.startswith(VG_PREFIX) and {"uuid": vg[len(VG_PREFIX):]} not in found:
                found.append({"uuid": vg[len(VG_PREFIX):]})
        return found

    def free_space(self) -> int:
        self._refresh_extents()
        return self.layout().free_extents() * self.layout().extent_size

    def total_space(self) -> int:
        return self.layout().total_extents() * self.layout().extent_size

    def _refresh_extents(self) -> None:
        if not self._extents_known:  # an unplaced change: ask lvm2 again
            self._layout = None
            self.layout()

    # ------------------------------------------------------------ volumes

    def list_volumes(self) -> "list[str]":
        return sorted(lv[len(LV_PREFIX):] for lv in self.layout().lvs
                      if lv.startswith(LV_PREFIX) and is_volume_name(lv[len(LV_PREFIX):]))

    def exists(self, name: str) -> bool:
        return self._info(name) is not None

    def locator(self, name: str) -> str:
        return self.lv_name(name)

    def name_of_locator(self, locator: str) -> Optional[str]:
        text = locator[2:] if locator.startswith("./") else locator
        if not text.startswith(LV_PREFIX):
            return None
        name = text[len(LV_PREFIX):]
        return name if is_volume_name(name) else None

    def location(self, name: str) -> str:
        return name

    def utilisation(self, name: str) -> int:
        info = self._info(name)
        if info is None:
            raise SRError.from_name("VDIMissing", f"no LV {self.lv_name(name)}")
        return info.size

    def _create_lv(self, lv: str, extents: int) -> None:
        layout = self.layout()
        where = placement.where_new(layout, extents, self.vg, self.activation.places_extents)
        self.lvm.lvcreate(self.vg, lv, extents, where=[where] if where else None)
        info = LVInfo(lv, extents * layout.extent_size)
        layout.lvs[lv] = info
        if where:
            placement.record_new(layout, info, where)
        else:
            self._extents_known = False

    def _new_volume(self, name: str, nbytes: int, write) -> None:
        """Create LV for ``name`` of ``nbytes`` and fill it with ``write(path)``;
        nothing is left behind on failure."""
        lv = self.lv_name(name)
        if lv in self.layout().lvs:
            raise SRError.from_name("VDIExists", f"LV {self.vg}/{lv} exists")
        self._create_lv(lv, self._extents_for(nbytes))
        try:
            write(self._activate_lv(lv))
        except BaseException:
            self._remove_lvs([lv])
            raise

    def create_vhd(self, name: str, virtual_size: int, *, hidden: bool = False) -> None:
        from smlib import vhd  # deferred: keep driver start-up light
        from smlib.vhd.geometry import MAX_VIRTUAL_SIZE

        if not 0 < virtual_size <= MAX_VIRTUAL_SIZE:
            raise SRError.from_name("VDISize", f"virtual size {virtual_size} not in "
                                    f"1 .. {MAX_VIRTUAL_SIZE}")
        self._new_volume(name, vhd.empty_size(virtual_size),
                         lambda path: vhd.create(path, virtual_size, hidden=hidden))

    def create_child(self, name: str, parent: str, *, hidden: bool = False) -> None:
        from smlib import vhd  # deferred: keep driver start-up light

        parent_path = self.activate(parent)
        with vhd.open_image(parent_path, resolver=self.resolver) as img:
            size = img.virtual_size
        self._new_volume(name, vhd.empty_size(size), lambda path: vhd.snapshot(
            path, parent_path, parent_locator=self.locator(parent), hidden=hidden,
            resolver=self.resolver))

    def rename(self, old: str, new: str) -> None:
        src, dst = self.lv_name(old), self.lv_name(new)
        layout = self.layout()
        if src not in layout.lvs:
            raise SRError.from_name("VDIMissing", f"no LV {self.vg}/{src}")
        if dst in layout.lvs:
            raise SRError.from_name("VDIExists", f"LV {self.vg}/{dst} exists")
        self._rename_lv(src, dst)

    def _rename_lv(self, src: str, dst: str) -> None:
        self.lvm.lvrename(self.vg, src, dst)
        layout = self.layout()
        info = layout.lvs.pop(src)
        info.name = dst
        layout.lvs[dst] = info
        if src in self._active:
            path, made = self._active.pop(src)
            if isinstance(self.activation, LVChangeActivation):
                path = f"/dev/{self.vg}/{dst}"
            self._active[dst] = (path, made)

    def replace(self, src: str, dst: str) -> None:
        # Two runs, each atomic: remove dst, then rename src to dst. A crash
        # between them leaves only src, and calling replace again renames it.
        src_lv, dst_lv = self.lv_name(src), self.lv_name(dst)
        lvs = self.layout().lvs
        if src_lv not in lvs:
            if dst_lv in lvs:
                return  # already done
            raise SRError.from_name("VDIMissing", f"neither {src_lv} nor {dst_lv} exists")
        if dst_lv in lvs:
            self._remove_lvs([dst_lv])
            # Crash tests stop here too: dst gone, src not renamed.
            mutation_point("lvm.replace-rename")
        self._rename_lv(src_lv, dst_lv)

    def remove(self, name: str) -> None:
        lv = self.lv_name(name)
        if lv in self.layout().lvs:
            self._remove_lvs([lv])

    def _remove_lvs(self, lvs: "list[str]") -> None:
        for lv in lvs:
            self._drop_activation(lv)
        self.lvm.lvremove(self.vg, lvs)
        layout = self.layout()
        for lv in lvs:
            info = layout.lvs.pop(lv)
            for _, run in info.segments:
                placement.give_back(layout, run.pv, run.start, run.count)
            if not info.segments:
                self._extents_known = False

    def set_container_size(self, name: str, nbytes: int) -> None:
        lv = self.lv_name(name)
        layout = self.layout()
        info = layout.lvs.get(lv)
        if info is None:
            raise SRError.from_name("VDIMissing", f"no LV {self.vg}/{lv}")
        es = layout.extent_size
        want, have = self._extents_for(nbytes), info.size // es
        if want == have:
            return
        where = placement.where_growth(layout, info, want - have,
                                       self.activation.places_extents) if want > have else None
        self.lvm.lvresize(self.vg, lv, want, where=[where] if where else None)
        old_size, info.size = info.size, want * es
        if where:
            placement.record_growth(layout, info, where)
        elif want < have and info.segments and self._extents_known:
            # (After an unplaced growth the segments known here do not cover
            # the LV's extents: cutting them would run past their start.)
            placement.shrink_segments(layout, info, have - want)
        else:
            self._extents_known = False
        self.activation.after_resize(self, lv, old_size)

    # --------------------------------------------------------- activation

    def _activate_lv(self, lv: str, keep: bool = False) -> str:
        if lv in self._active:
            path, made = self._active[lv]
            if self.activation.still_maps(self, lv, path):
                if keep:
                    self._active[lv] = (path, False)
                return path
            from smlib.protocol import log

            log.write("LVMStore", f"{path} no longer maps {self.vg}/{lv}; activating again")
            del self._active[lv]
        if lv not in self.layout().lvs:
            raise SRError.from_name("VDIMissing", f"no LV {self.vg}/{lv}")
        path, created = self.activation.activate(self, lv)
        self._active[lv] = (path, created and not keep)
        return path

    def _drop_activation(self, lv: str) -> None:
        """Before an LV vanishes, unmap it."""
        self._active.pop(lv, None)
        self.activation.before_remove(self, lv)

    def activate(self, name: str, *, keep: bool = False) -> str:
        path = self._activate_lv(self.lv_name(name), keep)
        if keep:
            # A reader outside this command (tapdisk, the toolstack) opens
            # the parents itself: the whole chain stays reachable. Bases stay
            # active after the leaf is deactivated; other leaves may share them.
            self._keep_parents(path)
        return path

    def _keep_parents(self, path: str) -> None:
        from smlib import vhd  # deferred: keep driver start-up light

        while True:
            with vhd.open_image(path) as img:
                locator = img.parent_locator
            parent = self.name_of_locator(locator) if locator else None
            if parent is None:
                return
            path = self._activate_lv(self.lv_name(parent), keep=True)

    def deactivate(self, name: str) -> None:
        lv = self.lv_name(name)
        self._active.pop(lv, None)
        if lv in self.layout().lvs:
            self.activation.deactivate(self, [lv])

    def _deactivate_all(self, everything: bool = False) -> None:
        lvs = [lv for lv, (_, made) in self._active.items() if made or everything]
        if everything and self._layout is not None:
            lvs = sorted(set(lvs) | set(self._layout.lvs))
        for lv in lvs:
            self._active.pop(lv, None)
        if lvs:
            self.activation.deactivate(self, lvs)

    def sync(self) -> None:
        for path, _ in self._active.values():
            if path.startswith("/dev/") and os.path.exists(path):
                fsync_path(path)

    def close(self) -> None:
        self._deactivate_all()

    # ------------------------------------------------------ bookkeeping

    def _mgt_path(self) -> "tuple[str, int]":
        if MGT_LV not in self.layout().lvs:
            raise SRError.from_name("SRUnavailable", f"{self.vg} has no {MGT_LV} volume")
        return self._activate_lv(MGT_LV), self.layout().lvs[MGT_LV].size

    def _state(self) -> mgt.State:
        if self._mgt is None:
            path, size = self._mgt_path()
            self._mgt = mgt.load(path, size, self.sr_uuid or "")
        return self._mgt

    def _save_mgt(self) -> None:
        path, size = self._mgt_path()
        try:
            mgt.save(path, size, self.sr_uuid or "", self._state())
        except BaseException:
            self._mgt = None  # the in-memory change did not land: reread next time
            raise

    def read_metadata(self) -> Optional[bytes]:
        return self._state().metadata

    def write_metadata(self, data: bytes) -> None:
        self._state().metadata = bytes(data)
        self._save_mgt()

    def journal_put(self, key: str, data: bytes) -> None:
        self._state().journal[key] = bytes(data)
        self._save_mgt()

    def journal_items(self) -> "dict[str, bytes]":
        return dict(self._state().journal)

    def journal_remove(self, key: str) -> None:
        if key in self._state().journal:
            del self._state().journal[key]
            self._save_mgt()

    def lock_path(self) -> str:
        base = config.lvm_lock_dir()
        return os.path.join(base, f"lvm-{self.sr_uuid or 'none'}.lock")
