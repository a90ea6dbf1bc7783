"""Snapshot / clone / revert / delete over any store (DESIGN section 6).

Written once for FileSR and LVMSR: volumes are reached only through a
``smlib.stores.base.Store``. The SR metadata (smlib.tree.metadata) is the index
of volumes and their parents; the images are the truth and replay re-reads
them wherever a crash could have left the two apart.

Every multi-step change follows one pattern: check everything (refusals
change nothing), journal the intent, then run the op's *forward* step
(steps.py), idempotent, re-deriving what is already done from the store, so
that replay can call the same step after a crash.
``smlib.faults.mutation_point(name)`` precedes every mutation for
crash-injection tests.

The caller holds the SR lock and calls ``replay()`` first.
"""

from typing import Optional

from smlib.faults import mutation_point
from smlib.protocol.errors import SRError
from smlib.stores.base import Store, is_uuid, split_transient
from smlib.tree.gc import GC
from smlib.tree.journal import ASIDE, Handler
from smlib.tree.metadata import VolumeRecord
from smlib.tree.steps import BASE_LABEL, Steps, base_record, err, image_error, volume_cost
from smlib.uuids import uuid4
from smlib.xapi.dates import now_stamp

MAX_DEPTH = 30


def new_uuid() -> str:
    return uuid4()


class Tree(Steps):
    """One command's view of an SR: the operations, over the steps."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.gc = GC(self)

    # ------------------------------------------------------------ checks

    def ensure_space(self, nbytes: int) -> None:
        free = self.store.free_space()
        if free < nbytes:
            raise err("SRNoSpace", f"need {nbytes} bytes, {free} free")

    def check_depth(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise err("SnapshotChainTooLong", f"chain would be {depth} deep (max {MAX_DEPTH})")

    # ------------------------------------------------------------ lookup

    def lookup(self, uuid: object, what: str) -> VolumeRecord:
        """The record of a VDI named by the caller; VDIMissing otherwise.
        Anything that is not a canonical uuid (e.g. '../../etc/passwd') is
        unknown: it never reaches the store as a name."""
        if not isinstance(uuid, str) or not is_uuid(uuid):
            raise err("VDIMissing", f"{what} {uuid!r} is not a VDI uuid")
        rec = self.meta.vdis.get(uuid)
        if rec is None:
            raise err("VDIMissing", f"{what} {uuid} not in this SR")
        return rec

    def visible(self, uuid: object, what: str) -> VolumeRecord:
        rec = self.lookup(uuid, what)
        if rec.hidden:
            raise err("VDIUnavailable", f"{what} {rec.uuid} is a hidden base")
        if rec.damaged:
            raise err("VDIUnavailable", f"{what} {rec.uuid} is damaged: {rec.damaged}")
        return rec

    def not_in_use(self, rec: VolumeRecord, what: str) -> None:
        if rec.attached or rec.active:
            raise err("VDIInUse", f"{what} {rec.uuid} is attached or active")

    def writable(self, rec: VolumeRecord, what: str) -> None:
        """Refuse to change the contents of a VDI that children read."""
        if self.meta.children(rec.uuid):
            raise err("VDIUnavailable", f"{what} {rec.uuid} has children: it is read-only")

    # ------------------------------------------------------------ replay

    def handlers(self) -> "dict[str, Handler]":
        """The journal's table: every op -> its forward step (GC's included)."""
        return {**super().handlers(), **self.gc.handlers()}

    def replay(self) -> None:
        """Finish or undo what a crashed command left, then drop leftovers."""
        if self.journal.replay(self.handlers()):
            self.remove_transients()
            self.gc.collect()

    def remove_transients(self) -> None:
        # A record set aside for an operator may need its transient volumes.
        kept = [data for key, data in self.store.journal_items().items()
                if key.startswith(ASIDE)]
        for name in self.store.list_volumes():
            parts = split_transient(name)
            if parts and not any(parts[0].encode() in data for data in kept):
                mutation_point("scan.remove-transient")
                self.store.remove(name)
        mutation_point("scan.remove-garbage")
        self.store.remove_garbage()

    # ------------------------------------------------------------ create

    def create(self, virtual_size: int, fields: dict, uuid: Optional[str] = None) -> VolumeRecord:
        """A new empty VDI; ``uuid`` when the caller chose it (xapi's backup VDIs)."""
        from smlib.vhd import geometry

        if uuid is not None:
            if not is_uuid(uuid):
                raise err("BadRequest", f"vdi_uuid {uuid!r} is not a uuid")
            if uuid in self.meta.vdis or self.store.exists(uuid):
                raise err("VDIExists", uuid)
        if virtual_size <= 0:
            raise err("VDISize", f"virtual size {virtual_size} must be positive")
        size = geometry.round_size(virtual_size)
        if size > geometry.MAX_VIRTUAL_SIZE:  # refused before anything is journalled or made
            raise err("VDISize", f"virtual size {virtual_size} is larger than a VHD can be"
                                 f" ({geometry.MAX_VIRTUAL_SIZE} bytes, 2 TiB)")
        self.ensure_space(volume_cost(size))
        uuid = uuid or new_uuid()
        rec = VolumeRecord(uuid=uuid, virtual_size=size, **fields)
        self.journal.begin(uuid, {"op": "create", "record": rec.to_dict()})
        mutation_point("create.create-volume")
        try:
            self.store.create_vhd(uuid, size)
        except Exception as e:
            if isinstance(e, SRError):
                raise
            # The library's message without the internal (temporary) path.
            raise image_error(e, "VDICreate", path_free=True) from e
        self.create_fwd({"record": rec.to_dict()})
        self.journal.end(uuid)
        return self.meta.vdis[uuid]

    # ------------------------------------------------- snapshot / clone

    def snapshot(self, leaf: str, kind: str) -> VolumeRecord:
        """kind: "double" (default snapshot), "single" (the base is the
        snapshot) or "clone". Returns the new VDI's record."""
        rec = self.visible(leaf, "VDI")
        new_fields = dict(
            virtual_size=rec.virtual_size, name_label=rec.name_label,
            name_description=rec.name_description, type=rec.type,
        )
        if kind != "clone":
            new_fields.update(is_a_snapshot=True, snapshot_of=leaf, snapshot_time=now_stamp())
        self.inspect(leaf)
        if self.meta.children(leaf):
            # A visible parent (single snapshot) is frozen already: the new
            # VDI is simply one more child of it.
            return self._child_of_frozen(rec, new_fields)
        self.check_depth(self.meta.depth(leaf) + 1)
        self.ensure_space(2 * volume_cost(rec.virtual_size))
        base = new_uuid()
        if kind == "single":
            base_rec = VolumeRecord(uuid=base, parent=rec.parent, read_only=True, **new_fields)
            snap = None
        else:
            base_rec = base_record(base, rec)
            snap = VolumeRecord(uuid=new_uuid(), parent=base, read_only=rec.read_only,
                             **new_fields)
        r = {"op": "snapshot", "leaf": leaf, "base": base, "base_record": base_rec.to_dict(),
             "new_record": snap.to_dict() if snap else None}
        self.journal.begin(base, r)
        self.snapshot_fwd(r)
        self.journal.end(base)
        self.gc.collect()  # the new base may add nothing (an unwritten disk)
        return self.meta.vdis[snap.uuid if snap else base]

    def _child_of_frozen(self, rec: VolumeRecord, fields: dict) -> VolumeRecord:
        self.check_depth(self.meta.depth(rec.uuid) + 1)
        self.ensure_space(volume_cost(rec.virtual_size))
        child = VolumeRecord(uuid=new_uuid(), parent=rec.uuid, **fields)
        self.journal.begin(child.uuid, {"op": "create", "record": child.to_dict()})
        mutation_point("clone-frozen.create-child")
        self.store.create_child(child.uuid, rec.uuid)
        self.create_fwd({"record": child.to_dict()})
        self.journal.end(child.uuid)
        return child

    # ------------------------------------------------------------ revert

    def revert(self, target: str, snap: str) -> None:
        """Give target the snapshot's contents and size, in place."""
        s = self.visible(snap, "snapshot")
        t = self.visible(target, "target")
        if s.uuid == t.uuid:
            raise err("BadRequest", "snapshot and target are the same VDI")
        self.not_in_use(t, "target")
        self.writable(t, "target")
        with self.open(snap) as img:
            self.inspect_open(snap, img)  # it may become a base: whole, or refused
            s_empty = img.is_empty()
            s_size = img.virtual_size
            s_parent = self.parent_of(img)
        base = None
        if self.meta.children(snap):
            parent = snap  # frozen already (a single snapshot with children)
        elif s_empty:
            parent = s_parent  # S adds nothing: share its parent ("" = none)
        else:
            base = new_uuid()
            parent = base
        depth = (self.meta.depth(snap) if base else self.meta.depth(parent)) + 1
        self.check_depth(depth)
        if base is None and self._already(target, parent, s_size):
            return  # a repeated revert: same state, touch nothing
        self.ensure_space((2 if base else 1) * volume_cost(s_size))
        r = {"op": "revert", "target": target, "snap": snap, "base": base, "parent": parent,
             "size": s_size,
             "base_record": base_record(base, s).to_dict() if base else None}
        self.journal.begin(target, r)
        self.revert_fwd(r, fresh=True)
        self.journal.end(target)
        self.gc.collect()

    def _already(self, target: str, parent: str, size: int) -> bool:
        if self.meta.vdis[target].parent != parent:
            return False
        with self.open(target) as img:
            return img.is_empty() and img.virtual_size == size and self.parent_of(img) == parent

    # ------------------------------------------------------------ delete

    def delete(self, uuid: str) -> None:
        rec = self.lookup(uuid, "VDI")
        if rec.hidden:
            raise err("VDIUnavailable", f"VDI {rec.uuid} is a hidden base")
        self.not_in_use(rec, "VDI")
        # A VDI with children (a single snapshot) cannot go: it becomes a
        # base, which GC removes once nothing needs it.
        op = "hide" if self.meta.children(uuid) else "delete"
        if op == "hide":
            if rec.damaged:
                raise err("VDIUnavailable", f"VDI {uuid} is damaged ({rec.damaged}) and has "
                          "children: it cannot become their base")
            self.inspect(uuid)
        r = {"op": op, "uuid": uuid}
        try:
            self.journal.begin(uuid, r)
        except SRError as e:
            if e.name != "SRNoSpace" or op != "delete":
                raise
            # A full filesystem must not keep a disk from being deleted:
            # removing the volume is one atomic step and frees the space the
            # metadata write needs. (A crash in between leaves a record
            # without a volume, which vdi_list marks and sr_scan drops.)
            self.delete_fwd(r)
            return
        self.handlers()[op](r)
        self.journal.end(uuid)
        self.gc.collect()

    # ------------------------------------------------------------ resize

    def resize(self, uuid: str, new_size: int) -> VolumeRecord:
        from smlib.vhd import geometry

        rec = self.visible(uuid, "VDI")
        self.writable(rec, "VDI")
        size = geometry.round_size(new_size)
        if new_size <= 0 or size < rec.virtual_size:
            raise err("VDISize", f"cannot shrink {uuid} from {rec.virtual_size} to {new_size}")
        if size > geometry.MAX_VIRTUAL_SIZE:
            raise err("VDISize", f"virtual size {new_size} is larger than a VHD can be"
                                 f" ({geometry.MAX_VIRTUAL_SIZE} bytes, 2 TiB)")
        if size == rec.virtual_size:
            return rec
        self.ensure_space(geometry.resize_cost(rec.virtual_size, size))
        self.inspect(uuid)
        r = {"op": "resize", "uuid": uuid, "size": size}
        self.journal.begin(uuid, r)
        if self.store.SIZED_CONTAINERS:
            from smlib import vhd

            mutation_point("resize.grow-container")
            self.store.set_container_size(uuid, vhd.required_size(size))
        with self.open(uuid, writable=True) as img:
            mutation_point("resize.grow-image")
            img.resize(size)
        self.resize_fwd(r)
        self.journal.end(uuid)
        return rec

    # ------------------------------------------------- attach and state

    def set_attached(self, uuid: str, attached: bool, writable: bool = True) -> str:
        """Record attach state; returns the leaf's path when attaching."""
        rec = self.visible(uuid, "VDI")
        if attached and writable:
            self.writable(rec, "VDI")
        path = self.store.activate(uuid, keep=True) if attached else ""
        if rec.attached != attached:
            self.fit(uuid, inflate=attached and writable)
            rec.attached = attached
            self.save()
        return path

    def set_active(self, uuid: str, active: bool) -> None:
        rec = self.visible(uuid, "VDI")
        if active:
            self.store.activate(uuid, keep=True)
        if rec.active != active:
            rec.active = active
            self.save()
        if not active:
            self.release(uuid)

    def ancestry(self, uuid: str) -> "list[str]":
        """The VDI and its parents, leaf first, from the metadata."""
        out = []
        while uuid and uuid in self.meta.vdis and uuid not in out:
            out.append(uuid)
            uuid = self.meta.vdis[uuid].parent
        return out

    def chain_paths(self, uuid: str) -> "list[str]":
        """Paths of the VDI's image and its parents, leaf first, each kept
        reachable (activated) for a reader outside this command."""
        return [self.store.activate(name, keep=True) for name in self.ancestry(uuid)]

    def served_chain(self, uuid: str) -> "Optional[list[str]]":
        """chain_paths of a VDI still in the SR (what a paused server reopens)."""
        rec = self.meta.vdis.get(uuid)
        return self.chain_paths(uuid) if rec is not None and not rec.hidden else None

    def release(self, uuid: str) -> None:
        """On deactivate: deactivate the VDI's volume and each parent that no
        other attached or active VDI reads. Parents are counted by the
        leaves that use them, never dropped under another; an idle chain
        stays mapped only while something still names it."""
        if uuid not in self.meta.vdis:
            return
        used = set()
        for other in self.meta.vdis.values():
            if other.uuid != uuid and (other.attached or other.active):
                used.update(self.ancestry(other.uuid))
        for name in self.ancestry(uuid):
            if name not in used:
                self.store.deactivate(name)

    def introduce(self, uuid: str, location: str, fields: dict) -> VolumeRecord:
        """Record the volume at ``location``, unknown to the metadata, as VDI
        ``uuid``. A volume is named by its VDI's uuid here, so a different
        uuid renames it (one atomic rename: a crash leaves either name, and
        the next scan or introduce finds it); a parent cannot be renamed
        (its children name it)."""
        if not isinstance(uuid, str) or not is_uuid(uuid):
            raise err("BadRequest", f"new_uuid {uuid!r} is not a uuid")
        if not isinstance(location, str) or not is_uuid(location) or \
                not self.store.exists(location):
            raise err("VDIMissing", f"no volume {location!r} to introduce")
        if uuid in self.meta.vdis or (uuid != location and self.store.exists(uuid)):
            raise err("VDIExists", uuid)
        if location in self.meta.vdis:
            raise err("VDIExists", f"{location} is VDI {location} already")
        if uuid != location:
            if self.meta.children(location):
                raise err("VDIInUse", f"{location} is a parent: it keeps its uuid")
            mutation_point("introduce.rename")
            self.store.rename(location, uuid)
        rec = self._record_from_image(uuid, VolumeRecord(uuid=uuid, **fields))
        self.meta.vdis[uuid] = rec
        self.save()
        return rec

    def _record_from_image(self, uuid: str, rec: VolumeRecord) -> VolumeRecord:
        with self.open(uuid) as img:
            self.inspect_open(uuid, img)
            rec.damaged = ""
            rec.parent = self.parent_of(img)
            rec.hidden = img.hidden
            rec.virtual_size = img.virtual_size
            rec.empty = rec.hidden and img.is_empty()
        if rec.hidden:
            rec.name_label = rec.name_label or BASE_LABEL
            rec.read_only = True
        return rec

    # -------------------------------------------------------------- scan

    def scan(self) -> None:
        """Make the metadata agree with the volumes, then collect garbage.

        One bad volume does not fail the scan: a damaged image, a volume
        whose parent is missing, and an entry that is no volume at all (the
        store's strays) are recorded as damaged, listed, and refused by
        every command but vdi_delete."""
        from smlib.protocol import log

        self.remove_transients()
        names = {n for n in self.store.list_volumes() if is_uuid(n)}
        strays = {n: kind for n, kind in self.store.strays().items() if is_uuid(n)}
        before = self.meta.serialise()
        for uuid in list(self.meta.vdis):
            if uuid not in names and uuid not in strays:
                del self.meta.vdis[uuid]
        for uuid in sorted(names):
            rec = self.meta.vdis.get(uuid)
            if rec is not None and rec.attached:
                continue  # a guest may be writing it: its record stands
            if rec is None:
                log.write("scan", f"SR {self.meta.sr_uuid}: volume {uuid} had no record")
                rec = VolumeRecord(uuid=uuid)
            try:
                self.meta.vdis[uuid] = self._record_from_image(uuid, rec)
            except SRError as e:
                rec.damaged = str(e)
                self.meta.vdis[uuid] = rec
        for uuid, kind in sorted(strays.items()):
            rec = self.meta.vdis.setdefault(uuid, VolumeRecord(uuid=uuid))
            rec.damaged = f"{kind}, not a volume"
        for rec in self.meta.vdis.values():
            if rec.damaged:
                log.write("scan", f"SR {self.meta.sr_uuid}: {rec.uuid} damaged: {rec.damaged}")
        if self.meta.serialise() != before:
            self.save()
        self.gc.collect()

    def listing(self) -> "list[dict]":
        """vdi_list: one struct per VDI (bases included, marked hidden)."""
        out = []
        for uuid in sorted(self.meta.vdis):
            rec = self.meta.vdis[uuid]
            present = self.store.exists(uuid)
            damaged = rec.damaged or ("" if present else "volume missing")
            out.append({
                "uuid": uuid,
                "location": self.store.location(uuid),
                "virtual_size": str(rec.virtual_size),
                "physical_utilisation": str(self.store.utilisation(uuid) if present else 0),
                "parent": rec.parent,
                "hidden": rec.hidden,
                "read_only": rec.read_only,
                "is_a_snapshot": rec.is_a_snapshot,
                "snapshot_of": rec.snapshot_of,
                "name_label": rec.name_label,
                "attached": rec.attached,
                "damaged": damaged,
            })
        return out
