"""TreeSR: every SMAPIv1 command over the shared tree machinery.

TreeSR is parameterised by its store class (``STORE``); FileSR
(smlib/drivers/file.py) sets the file store, LVMSR (smlib/drivers/lvm.py)
the LVM one. Each command opens the store, takes the SR lock, replays any
journal a crash left, then acts through smlib.tree.
"""

from contextlib import contextmanager
from typing import Iterator, Optional

from smlib.protocol.errors import SRError
from smlib.protocol.sr import SR, attach_info, vdi_info
from smlib.stores.base import Store


def _size(text: str) -> int:
    if not text.isdigit():
        raise SRError.from_name("VDISize", f"size {text!r} is not a byte count")
    return int(text)


def _flag(args: "list[str]", index: int) -> bool:
    return index < len(args) and args[index].lower() == "true"


def _arg(args: "list[str]", index: int) -> str:
    return args[index] if index < len(args) else ""


class TreeSR(SR):
    """A VHD-tree SR over ``STORE``; subclasses only pick the store."""

    STORE = Store  # a concrete subclass sets its store class
    CONTENT_TYPE = "vhd"  # sm's sr_vditype for VHD SRs

    def store(self) -> Store:
        return self.STORE(self.call.device_config, self.call.sr_uuid)

    @contextmanager
    def tree(self, store: Optional[Store] = None) -> Iterator:
        """The SR under its lock, journal replayed."""
        from smlib.tree.lock import SRLock
        from smlib.tree.tree import Tree
        from smlib.vhd import VHDError

        store = store or self.store()
        try:
            if not store.sr_exists():
                raise SRError.from_name("SRUnavailable", f"no SR at {store.device_config}")
            with SRLock(store.lock_path()):
                tree = Tree(store)
                tree.replay()
                yield tree
        except VHDError as e:
            # An image the library cannot handle is a storage error, not a
            # crash (1200); a change it interrupted is in the journal.
            raise SRError.from_name("VDIUnavailable", str(e)) from None
        finally:
            store.close()

    def _vdi(self) -> str:
        return self.call.vdi_uuid or ""

    def _info(self, tree, uuid: str) -> dict:
        rec = tree.meta.vdis[uuid]
        return vdi_info(uuid, tree.store.location(uuid), virtual_size=str(rec.virtual_size))

    # ----------------------------------------------------------------- SR

    def sr_create(self) -> None:
        store = self.store()
        store.sr_create()
        with self.tree(store) as tree:
            tree.save()

    def sr_delete(self) -> None:
        with self.tree() as tree:
            visible = [r.uuid for r in tree.meta.visible()]
            if visible:
                raise SRError.from_name("SRNotEmpty", f"{len(visible)} VDIs remain")
            for name in tree.store.list_volumes():
                tree.store.remove(name)
            tree.store.sr_delete()

    def sr_attach(self) -> None:
        store = self.store()
        if not store.sr_exists():
            raise SRError.from_name("SRUnavailable", f"no SR at {store.device_config}")
        store.sr_attach()  # first: the metadata may live on what this attaches
        with self.tree(store):
            return None

    def sr_detach(self) -> None:
        with self.tree() as tree:
            tree.store.sr_detach()

    def sr_scan(self) -> None:
        with self.tree() as tree:
            tree.scan()

    def sr_probe(self) -> str:
        # sm answers a probe with an XML list of the SRs found.
        from xml.sax.saxutils import escape

        from smlib.tree.metadata import Metadata

        store = self.store()
        found = store.probe()
        for sr in found:
            if not sr["uuid"]:
                sr["uuid"] = Metadata.parse(store.read_metadata()).sr_uuid or ""
        items = "".join(f"<SR><UUID>{escape(sr['uuid'])}</UUID></SR>" for sr in found)
        return f'<?xml version="1.0" ?>\n<SRlist>{items}</SRlist>\n'

    def sr_update(self) -> None:
        with self.tree():
            return None

    # ------------------------------------------------------------- VDIs

    def vdi_create(self) -> dict:
        args = self.call.args
        size = _size(self.call.arg(0, "virtual size"))
        fields = dict(
            name_label=_arg(args, 1), name_description=_arg(args, 2),
            is_a_snapshot=_flag(args, 4), snapshot_time=_arg(args, 5),
            snapshot_of=_arg(args, 6), read_only=_flag(args, 7),
            type=self.call.vdi_type or "user",
        )
        with self.tree() as tree:
            # xapi sends vdi_uuid with vdi_create only when it chose the uuid.
            rec = tree.create(size, fields, self.call.vdi_uuid)
            return self._info(tree, rec.uuid)

    def vdi_delete(self) -> None:
        with self.tree() as tree:
            tree.delete(self._vdi())

    def vdi_attach(self) -> dict:
        writable = _flag(self.call.args, 0)
        with self.tree() as tree:
            return attach_info(tree.set_attached(self._vdi(), True, writable))

    def vdi_detach(self) -> None:
        with self.tree() as tree:
            tree.set_attached(self._vdi(), False)

    def vdi_activate(self) -> None:
        with self.tree() as tree:
            tree.set_active(self._vdi(), True)

    def vdi_deactivate(self) -> None:
        with self.tree() as tree:
            tree.set_active(self._vdi(), False)

    def vdi_snapshot(self) -> dict:
        kind = "single" if self.call.driver_params.get("type") == "single" else "double"
        with self.tree() as tree:
            rec = tree.snapshot(self._vdi(), kind)
            return self._info(tree, rec.uuid)

    def vdi_clone(self) -> dict:
        with self.tree() as tree:
            rec = tree.snapshot(self._vdi(), "clone")
            return self._info(tree, rec.uuid)

    def vdi_resize(self) -> dict:
        size = _size(self.call.arg(0, "new virtual size"))
        with self.tree() as tree:
            rec = tree.resize(self._vdi(), size)
            return self._info(tree, rec.uuid)

    def vdi_introduce(self) -> dict:
        cfg = self.call.vdi_sm_config
        fields = dict(name_label=cfg.get("name_label", ""),
                      name_description=cfg.get("name_description", ""))
        with self.tree() as tree:
            rec = tree.introduce(self.call.new_uuid, self.call.vdi_location, fields)
            return self._info(tree, rec.uuid)

    def vdi_update(self) -> None:
        with self.tree() as tree:
            tree.visible(self._vdi(), "VDI")

    def vdi_revert(self) -> None:
        target = self.call.arg(0, "target VDI")
        from smlib.xapi import session as xapi

        if xapi.is_ref(target):
            target = xapi.vdi_uuid(self.call.session_ref, target)
        with self.tree() as tree:
            tree.revert(target, self._vdi())

    def vdi_list(self) -> list:
        with self.tree() as tree:
            return tree.listing()

