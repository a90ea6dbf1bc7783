"""TreeSR: every SMAPIv1 command over the shared tree machinery.

TreeSR is parameterised by its store class (``STORE``, a (module, class)
pair imported by the first command that opens the store); FileSR
(smlib/drivers/file.py) sets the file store, LVMSR (smlib/drivers/lvm.py)
the LVM one. Each command opens the store, takes the SR lock, replays any
journal a crash left, then acts through smlib.tree.

sr_get_driver_info loads this module and the driver's only: no store, and
no ``typing`` (on dom0's CPython 3.6 that import alone costs about as much
as the rest of the call), hence the annotations in strings.
"""

from smlib.protocol.errors import SRError
from smlib.protocol.sr import SR, vdi_info

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ContextManager, Iterator, Optional

    from smlib.stores.base import Store


def _flag(args: "list[str]", index: int) -> bool:
    return index < len(args) and args[index].lower() == "true"


def _arg(args: "list[str]", index: int) -> str:
    return args[index] if index < len(args) else ""


def _shape(tree) -> dict:
    """Per VDI, what xapi's record is derived from (attach state is not)."""
    counts = tree.meta.child_counts()
    return {u: (r.parent, r.hidden, r.virtual_size, r.read_only, counts.get(u, 0) > 0)
            for u, r in tree.meta.vdis.items()}


class TreeSR(SR):
    """A VHD-tree SR over ``STORE``; subclasses only pick the store."""

    STORE = ("smlib.stores.base", "Store")  # a concrete subclass names its store class
    UUID_KEYS = ("sr_uuid",)  # VG names, lock paths: never anything else
    CONTENT_TYPE = "vhd"  # sm's sr_vditype for VHD SRs
    STORAGE_TYPE = "ext"  # xenstore's storage-type for our disks (sm: FileSR "ext")

    def __init__(self, call) -> None:
        super().__init__(call)
        # What xapi's database must hear beyond the metadata's changes.
        self._touched: set[str] = set()  # VDIs whose volume changed in place
        self._sizes = False  # the SR's sizes, even when no VDI changed
        self._pool: dict[str, str] = {}  # uuid -> metadata_of_pool (vdi_create)
        self._synchronised = False  # sr_scan told xapi everything already

    def store(self) -> "Store":
        import importlib

        module, name = self.STORE
        cls = getattr(importlib.import_module(module), name)
        return cls(self.call.device_config, self.call.sr_uuid)

    def tree(self, store: "Optional[Store]" = None, *, changes: bool = False
             ) -> "ContextManager":
        """The SR under its lock, journal replayed; afterwards xapi's database
        hears what changed (replay included), still under the lock. A command
        that ``changes`` the tree holds the SR's NBD servers between requests
        meanwhile, and each goes on with its disk's chain afterwards."""
        from contextlib import contextmanager  # not on sr_get_driver_info's path

        return contextmanager(self._tree_session)(store, changes)

    def _tree_session(self, store: "Optional[Store]", changes: bool) -> "Iterator":
        from smlib.tree.lock import SRLock
        from smlib.tree.steps import image_error
        from smlib.tree.tree import Tree
        from smlib.vhd import VHDError

        store = store or self.store()
        try:
            if not store.sr_exists():
                raise SRError.from_name("SRUnavailable", f"no SR at {store.device_config}")
            with SRLock(store.lock_path()):
                tree = Tree(store)
                before = _shape(tree)
                if changes:
                    from smlib.datapath import server

                    with server.paused(self.call.sr_uuid or "", tree.served_chain):
                        tree.replay()
                        yield tree
                else:
                    tree.replay()
                    yield tree
                self._tell(tree, before)
        except VHDError as e:
            # A change it interrupted is in the journal.
            raise image_error(e) from None
        except OSError as e:
            if e.errno != 28:  # ENOSPC: anywhere, the SR is full (44), not a crash
                raise
            raise image_error(e) from None
        finally:
            store.close()

    def _vdi(self) -> str:
        return self.call.vdi_uuid or ""

    # ------------------------------------------------- xapi's database

    def _facts(self, tree, uuid: str, counts: "dict[str, int]"):
        from smlib.xapi.db import VDIFacts

        rec = tree.meta.vdis[uuid]
        return VDIFacts(
            uuid, tree.store.location(uuid), name_label=rec.name_label,
            name_description=rec.name_description, type=rec.type,
            # A parent is read-only whatever its record says (sm's scan too).
            read_only=rec.read_only or rec.hidden or counts.get(uuid, 0) > 0,
            managed=not rec.hidden, virtual_size=rec.virtual_size,
            physical_utilisation=tree.store.utilisation(uuid), parent=rec.parent,
            is_a_snapshot=rec.is_a_snapshot, snapshot_time=rec.snapshot_time,
            snapshot_of=rec.snapshot_of, metadata_of_pool=self._pool.get(uuid, ""),
        )

    def _sr_facts(self, tree):
        from smlib.xapi.db import SRFacts

        total = tree.store.total_space()
        allocated = sum(r.virtual_size for r in tree.meta.visible())
        return SRFacts(allocated, total, total - tree.store.free_space())

    def _tell(self, tree, before: dict) -> None:
        """Compare the SR with ``before``: what xapi must hear (smlib.xapi.db)."""
        if self._synchronised:
            return
        after = _shape(tree)
        changed = {u for u in after.keys() & before.keys() if after[u] != before[u]}
        if not (changed or self._touched or self._sizes or after.keys() != before.keys()):
            return
        from smlib.xapi import db

        def changes() -> "db.Changes":
            counts = tree.meta.child_counts()
            # A visible VDI turned into a hidden base (a delete that had to
            # keep it): its record goes, a base's record comes.
            flipped = {u for u in changed if after[u][1] and not before[u][1]}
            out = db.Changes()
            out.forgotten = sorted((before.keys() - after.keys()) | flipped)
            new = (after.keys() - before.keys()) | flipped
            # What others are snapshots of first: their refs are then known.
            out.introduced = [self._facts(tree, u, counts) for u in sorted(
                new, key=lambda u: (bool(tree.meta.vdis[u].snapshot_of), u))]
            out.updated = [self._facts(tree, u, counts) for u in sorted(
                ((changed | self._touched) & after.keys()) - flipped)]
            out.sr = self._sr_facts(tree)
            return out

        db.tell(self.call, changes, type(self).__name__)

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
            # Decided from the volumes present, not from the metadata alone:
            # lost or damaged metadata must never let the disks go with it.
            visible = {r.uuid for r in tree.meta.visible()}
            unknown = {n for n in tree.store.list_volumes() if n not in tree.meta.vdis}
            strays = set(tree.store.strays())
            remaining = visible | unknown | strays
            if remaining:
                raise SRError.from_name(
                    "SRNotEmpty", f"{len(remaining)} volumes remain, e.g. {sorted(remaining)[0]}"
                    + (f" ({len(unknown | strays)} unknown to the metadata: sr_scan lists them)"
                       if unknown | strays else ""))
            for name in tree.store.list_volumes():
                tree.store.remove(name)
            tree.store.sr_delete()

    def sr_attach(self) -> None:
        store = self.store()
        if not store.sr_exists() and not store.adopt():
            raise SRError.from_name("SRUnavailable", f"no SR at {store.device_config}")
        store.sr_attach()  # first: the metadata may live on what this attaches
        with self.tree(store) as tree:
            if store.read_metadata() is None:
                tree.scan()  # adopted (a stock SR): its images become its VDIs
        return None

    def sr_detach(self) -> None:
        store = self.store()
        try:
            with self.tree(store) as tree:
                tree.store.sr_detach()
        except SRError as e:
            if e.name != "SRUnavailable":
                raise
            # The storage vanished behind the SR's back: nothing is left to
            # detach from it, but what this host still maps of it goes.
            from smlib.protocol import log

            store.release_host_resources()
            log.write(type(self).__name__, f"sr_detach: {e}; host resources released")

    def sr_scan(self) -> None:
        from smlib.xapi import db

        store = self.store()
        store.adopt()  # a stock SR scanned before any attach
        with self.tree(store, changes=True) as tree:
            tree.scan()

            def facts() -> tuple:
                counts = tree.meta.child_counts()
                return ([self._facts(tree, u, counts) for u in sorted(tree.meta.vdis)],
                        self._sr_facts(tree))

            # Every VDI on the SR, by location, against xapi's records.
            db.synchronise(self.call, facts, type(self).__name__)
            self._synchronised = True

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
        self._sizes = True
        with self.tree():
            return None

    # ------------------------------------------------------------- VDIs

    def vdi_create(self) -> dict:
        args = self.call.args
        size = self.call.size_arg(0, "virtual size")
        fields = dict(
            name_label=_arg(args, 1), name_description=_arg(args, 2),
            is_a_snapshot=_flag(args, 4), snapshot_time=_arg(args, 5),
            snapshot_of=_arg(args, 6), read_only=_flag(args, 7),
            type=self.call.vdi_type or "user",
        )
        with self.tree() as tree:
            # xapi sends vdi_uuid with vdi_create only when it chose the uuid.
            rec = tree.create(size, fields, self.call.vdi_uuid)
            self._pool[rec.uuid] = _arg(args, 3)
            return self._info(tree, rec.uuid)

    def vdi_delete(self) -> None:
        with self.tree(changes=True) as tree:
            tree.delete(self._vdi())

    # The data path (smlib/datapath): attach answers where the disk will be
    # served, activate serves the chain there, deactivate flushes and stops
    # the server, detach removes what attach left. All idempotent.

    def vdi_attach(self) -> dict:
        from smlib.datapath import server

        writable = _flag(self.call.args, 0)
        sr, uuid = self.call.sr_uuid or "", self._vdi()
        with self.tree() as tree:
            path = tree.set_attached(uuid, True, writable)
            server.note_mode(sr, uuid, writable)
            return server.attach_result(sr, uuid, path, self.STORAGE_TYPE)

    def vdi_detach(self) -> None:
        from smlib.datapath import server

        with self.tree() as tree:
            tree.visible(self._vdi(), "VDI")
            server.forget(self.call.sr_uuid or "", self._vdi())
            tree.set_attached(self._vdi(), False)

    def vdi_activate(self) -> None:
        from smlib.datapath import server

        sr, uuid = self.call.sr_uuid or "", self._vdi()
        args = self.call.args
        writable = _flag(args, 0) if args else server.attached_writable(sr, uuid)
        with self.tree() as tree:
            tree.set_active(uuid, True)
            server.start(sr, uuid, tree.chain_paths(uuid), readonly=not writable)

    def vdi_deactivate(self) -> None:
        from smlib.datapath import server

        with self.tree() as tree:
            tree.visible(self._vdi(), "VDI")
            server.stop(self.call.sr_uuid or "", self._vdi())
            tree.set_active(self._vdi(), False)

    def vdi_snapshot(self) -> dict:
        kind = "single" if self.call.driver_params.get("type") == "single" else "double"
        with self.tree(changes=True) as tree:
            rec = tree.snapshot(self._vdi(), kind)
            return self._info(tree, rec.uuid)

    def vdi_clone(self) -> dict:
        with self.tree(changes=True) as tree:
            rec = tree.snapshot(self._vdi(), "clone")
            return self._info(tree, rec.uuid)

    def vdi_resize(self) -> dict:
        size = self.call.size_arg(0, "new virtual size")
        with self.tree(changes=True) as tree:
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
            self._touched.add(tree.visible(self._vdi(), "VDI").uuid)

    def vdi_revert(self) -> None:
        target = self.call.arg(0, "target VDI")
        from smlib.xapi import session as xapi

        if xapi.is_ref(target):
            target = xapi.vdi_uuid(self.call.session_ref, target)
        with self.tree(changes=True) as tree:
            tree.revert(target, self._vdi())
            self._touched.add(target)  # a new volume: its size and utilisation

    def vdi_list(self) -> list:
        with self.tree() as tree:
            return tree.listing()

