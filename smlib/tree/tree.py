"""Snapshot / clone / revert / delete over any store (DESIGN section 6).

Written once for FileSR and LVMSR: volumes are reached only through a
``smlib.stores.base.Store``. The SR metadata (smlib.tree.metadata) is the index
of volumes and their parents; the images are the truth and replay re-reads
them wherever a crash could have left the two apart.

Every multi-step change follows one pattern: check everything (refusals
change nothing), journal the intent, then run a *forward* function that is
idempotent and re-derives what is already done from the store, so that
replay can call the same function after a crash. ``mutation_point()``
(smlib.tree.journal) precedes every mutation for crash-injection tests.

The caller holds the SR lock and calls ``replay()`` first.
"""

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Optional

from smlib.protocol.errors import SRError
from smlib.stores.base import Store, is_uuid, split_transient
from smlib.tree.journal import Journal, Record, mutation_point
from smlib.tree.metadata import Metadata, VDIRecord
from smlib.uuids import uuid4

if TYPE_CHECKING:
    from smlib.vhd import Image

MAX_DEPTH = 30
BLOCK = 2 << 20  # VHD block size: virtual sizes round up to it
NEW = "new"  # suffix of a revert's new target volume before the swap
BASE_LABEL = "base copy"  # what sm calls a hidden base


def err(name: str, opterr: Optional[str] = None) -> SRError:
    return SRError.from_name(name, opterr)


def round_size(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def new_uuid() -> str:
    return uuid4()


def now_stamp() -> str:
    """xapi's DateTime text, e.g. 20261129T14:23:31Z."""
    return time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime())


def empty_overhead(virtual_size: int) -> int:
    """Bytes an empty image of that size needs: header, BAT, batmap, locators."""
    blocks = round_size(virtual_size) // BLOCK
    return 64 * 1024 + 4 * blocks + blocks // 8


# Bytes an image with at least one allocated block must hold besides its
# BAT: footer copy and header (1536), one block, its sector bitmap, footer.
_ONE_BLOCK_FLOOR = 1536 + BLOCK + 512 + 512


def is_empty(img: "Image") -> bool:
    """True when the image has no allocated block. Answered from the image's
    size when no block can fit (no 4 MiB BAT read for an empty 2 TiB
    snapshot); otherwise from the BAT."""
    bat_bytes = 4 * (-(-img.virtual_size // BLOCK))
    if img.physical_size < _ONE_BLOCK_FLOOR + bat_bytes:
        return True
    return img.is_empty()


class Tree:
    """One command's view of an SR: metadata plus the store's volumes."""

    def __init__(self, store: Store) -> None:
        from smlib.tree.gc import GC  # gc builds on the primitives below

        self.store = store
        self.journal = Journal(store)
        self.meta = Metadata.parse(store.read_metadata())
        if not self.meta.sr_uuid and store.sr_uuid:
            self.meta.sr_uuid = store.sr_uuid
        self.gc = GC(self)

    # -------------------------------------------------------- primitives

    def save(self) -> None:
        mutation_point()
        self.store.write_metadata(self.meta.serialise())

    @contextmanager
    def open(self, name: str, writable: bool = False) -> "Iterator[Image]":
        from smlib import vhd

        try:
            img = vhd.open_image(self.store.activate(name), writable,
                                 resolver=self.store.resolver)
        except (vhd.VHDError, OSError) as e:
            # A damaged or missing image is an SR error, not a crash (1200).
            raise err("VDIUnavailable", f"{name}: {e}") from None
        try:
            yield img
        finally:
            img.close()

    def parent_of(self, img: "Image") -> str:
        """The volume name an open image's parent locator names ("" for none)."""
        loc = img.parent_locator
        if loc is None:
            return ""
        name = self.store.name_of_locator(loc)
        if name is None:
            raise err("VDIUnavailable", f"{img.path}: foreign parent locator {loc!r}")
        return name

    def fit(self, name: str, inflate: bool) -> None:
        """Size a sized container: full for a writable leaf, else the image."""
        if not self.store.SIZED_CONTAINERS:
            return
        from smlib import vhd

        with self.open(name) as img:
            want = vhd.required_size(img.virtual_size) if inflate else img.physical_size
        mutation_point()
        self.store.set_container_size(name, want)

    def ensure_space(self, nbytes: int) -> None:
        free = self.store.free_space()
        if free < nbytes:
            raise err("SRNoSpace", f"need {nbytes} bytes, {free} free")

    def check_depth(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise err("SnapshotChainTooLong", f"chain would be {depth} deep (max {MAX_DEPTH})")

    # ------------------------------------------------------------ lookup

    def lookup(self, uuid: object, what: str) -> VDIRecord:
        """The record of a VDI named by the caller; VDIMissing otherwise.
        Anything that is not a canonical uuid (e.g. '../../etc/passwd') is
        unknown: it never reaches the store as a name."""
        if not isinstance(uuid, str) or not is_uuid(uuid):
            raise err("VDIMissing", f"{what} {uuid!r} is not a VDI uuid")
        rec = self.meta.vdis.get(uuid)
        if rec is None:
            raise err("VDIMissing", f"{what} {uuid} not in this SR")
        return rec

    def visible(self, uuid: object, what: str) -> VDIRecord:
        rec = self.lookup(uuid, what)
        if rec.hidden:
            raise err("VDIUnavailable", f"{what} {rec.uuid} is a hidden base")
        return rec

    def not_in_use(self, rec: VDIRecord, what: str) -> None:
        if rec.attached or rec.active:
            raise err("VDIInUse", f"{what} {rec.uuid} is attached or active")

    def writable(self, rec: VDIRecord, what: str) -> None:
        """Refuse to change the contents of a VDI that children read."""
        if self.meta.children(rec.uuid):
            raise err("VDIUnavailable", f"{what} {rec.uuid} has children: it is read-only")

    # ------------------------------------------------------------ replay

    def handlers(self) -> dict:
        return {
            "create": self._create_fwd,
            "snapshot": self._snapshot_replay,
            "revert": self._revert_replay,
            "delete": self._delete_fwd,
            "hide": self._hide_fwd,
            "resize": self._resize_fwd,
            **self.gc.handlers(),
        }

    def replay(self) -> None:
        """Finish or undo what a crashed command left, then drop leftovers."""
        if self.journal.replay(self.handlers()):
            self.remove_transients()
            self.gc.collect()

    def remove_transients(self) -> None:
        for name in self.store.list_volumes():
            if split_transient(name):
                mutation_point()
                self.store.remove(name)
        self.store.remove_garbage()

    # ------------------------------------------------------------ create

    def create(self, virtual_size: int, fields: dict, uuid: Optional[str] = None) -> VDIRecord:
        """A new empty VDI; ``uuid`` when the caller chose it (xapi's backup VDIs)."""
        if uuid is not None:
            if not is_uuid(uuid):
                raise err("BadRequest", f"vdi_uuid {uuid!r} is not a uuid")
            if uuid in self.meta.vdis or self.store.exists(uuid):
                raise err("VDIExists", uuid)
        if virtual_size <= 0:
            raise err("VDISize", f"virtual size {virtual_size} must be positive")
        size = round_size(virtual_size)
        self.ensure_space(empty_overhead(size))
        uuid = uuid or new_uuid()
        rec = VDIRecord(uuid=uuid, virtual_size=size, **fields)
        self.journal.begin(uuid, {"op": "create", "record": rec.to_dict()})
        mutation_point()
        try:
            self.store.create_vhd(uuid, size)
        except Exception as e:
            if isinstance(e, SRError):
                raise
            raise err("VDICreate", str(e)) from e
        self._create_fwd({"record": rec.to_dict()})
        self.journal.end(uuid)
        return self.meta.vdis[uuid]

    def _create_fwd(self, r: Record) -> None:
        rec = VDIRecord.from_dict(r["record"])
        if self.store.exists(rec.uuid):  # else the crash came first: nothing to undo
            self.meta.vdis[rec.uuid] = rec
            self.save()

    # ------------------------------------------------- snapshot / clone

    def snapshot(self, leaf: str, kind: str) -> VDIRecord:
        """kind: "double" (default snapshot), "single" (the base is the
        snapshot) or "clone". Returns the new VDI's record."""
        rec = self.visible(leaf, "VDI")
        new_fields = dict(
            virtual_size=rec.virtual_size, name_label=rec.name_label,
            name_description=rec.name_description, type=rec.type,
        )
        if kind != "clone":
            new_fields.update(is_a_snapshot=True, snapshot_of=leaf, snapshot_time=now_stamp())
        if self.meta.children(leaf):
            # A visible parent (single snapshot) is frozen already: the new
            # VDI is simply one more child of it.
            return self._child_of_frozen(rec, new_fields)
        self.check_depth(self.meta.depth(leaf) + 1)
        self.ensure_space(2 * empty_overhead(rec.virtual_size))
        base = new_uuid()
        if kind == "single":
            base_rec = VDIRecord(uuid=base, parent=rec.parent, read_only=True, **new_fields)
            snap = None
        else:
            base_rec = self._base_record(base, rec)
            snap = VDIRecord(uuid=new_uuid(), parent=base, read_only=rec.read_only,
                             **new_fields)
        r = {"op": "snapshot", "leaf": leaf, "base": base, "base_record": base_rec.to_dict(),
             "new_record": snap.to_dict() if snap else None}
        self.journal.begin(base, r)
        self._snapshot_fwd(r)
        self.journal.end(base)
        self.gc.collect()  # the new base may add nothing (an unwritten disk)
        return self.meta.vdis[snap.uuid if snap else base]

    def _base_record(self, base: str, rec: VDIRecord) -> VDIRecord:
        return VDIRecord(uuid=base, parent=rec.parent, hidden=True, read_only=True,
                         virtual_size=rec.virtual_size, name_label=BASE_LABEL, type=rec.type)

    def _child_of_frozen(self, rec: VDIRecord, fields: dict) -> VDIRecord:
        self.check_depth(self.meta.depth(rec.uuid) + 1)
        self.ensure_space(empty_overhead(rec.virtual_size))
        child = VDIRecord(uuid=new_uuid(), parent=rec.uuid, **fields)
        self.journal.begin(child.uuid, {"op": "create", "record": child.to_dict()})
        mutation_point()
        self.store.create_child(child.uuid, rec.uuid)
        self._create_fwd({"record": child.to_dict()})
        self.journal.end(child.uuid)
        return child

    def _split(self, leaf: str, base: str, base_rec: VDIRecord) -> None:
        """Turn leaf's volume into ``base`` and give ``leaf`` an empty child
        of it (the same contents under the same name). Idempotent."""
        if not self.store.exists(base):
            mutation_point()
            self.store.rename(leaf, base)
        if base_rec.hidden:
            with self.open(base, writable=True) as img:
                if not img.hidden:
                    mutation_point()
                    img.set_hidden(True)
                base_rec.empty = is_empty(img)  # fixed now: a base never changes
        self.fit(base, inflate=False)
        if not self.store.exists(leaf):
            mutation_point()
            self.store.create_child(leaf, base)
        leaf_rec = self.meta.vdis[leaf]
        if leaf_rec.attached:
            self.fit(leaf, inflate=True)
        self.meta.vdis[base] = base_rec
        leaf_rec.parent = base

    def _snapshot_fwd(self, r: Record) -> None:
        base = r["base"]
        self._split(r["leaf"], base, VDIRecord.from_dict(r["base_record"]))
        new = r.get("new_record")
        if new:
            snap = VDIRecord.from_dict(new)
            if not self.store.exists(snap.uuid):
                mutation_point()
                self.store.create_child(snap.uuid, base)
            self.meta.vdis[snap.uuid] = snap
        self.save()

    def _snapshot_replay(self, r: Record) -> None:
        # Before the rename nothing happened; from it on, roll forward.
        if self.store.exists(r["base"]):
            self._snapshot_fwd(r)

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
            s_empty = is_empty(img)
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
        self.ensure_space((2 if base else 1) * empty_overhead(s_size))
        r = {"op": "revert", "target": target, "snap": snap, "base": base, "parent": parent,
             "size": s_size,
             "base_record": self._base_record(base, s).to_dict() if base else None}
        self.journal.begin(target, r)
        self._revert_fwd(r, fresh=True)
        self.journal.end(target)
        self.gc.collect()

    def _already(self, target: str, parent: str, size: int) -> bool:
        if self.meta.vdis[target].parent != parent:
            return False
        with self.open(target) as img:
            return is_empty(img) and img.virtual_size == size and self.parent_of(img) == parent

    def _revert_fwd(self, r: Record, fresh: bool) -> None:
        target, base, parent = r["target"], r["base"], r["parent"]
        tmp = f"{target}.{NEW}"
        if base:
            self._split(r["snap"], base, VDIRecord.from_dict(r["base_record"]))
        if fresh:
            mutation_point()
            if parent:
                self.store.create_child(tmp, parent)
            else:
                self.store.create_vhd(tmp, r["size"])
        if self.store.exists(tmp):
            # Complete (creation is atomic): roll forward through the swap.
            with self.open(tmp, writable=True) as img:
                if img.virtual_size < r["size"]:
                    mutation_point()
                    img.resize(r["size"])
            mutation_point()
            self.store.replace(tmp, target)
        # Whether or not the swap happened, record what the image says.
        with self.open(target) as img:
            rec = self.meta.vdis[target]
            rec.parent = self.parent_of(img)
            rec.virtual_size = img.virtual_size
        self.save()

    def _revert_replay(self, r: Record) -> None:
        if r["base"] and not self.store.exists(r["base"]):
            return  # crashed before the first mutation that matters
        self._revert_fwd(r, fresh=False)

    # ------------------------------------------------------------ delete

    def delete(self, uuid: str) -> None:
        rec = self.visible(uuid, "VDI")
        self.not_in_use(rec, "VDI")
        # A VDI with children (a single snapshot) cannot go: it becomes a
        # base, which GC removes once nothing needs it.
        op = "hide" if self.meta.children(uuid) else "delete"
        r = {"op": op, "uuid": uuid}
        self.journal.begin(uuid, r)
        self.handlers()[op](r)
        self.journal.end(uuid)
        self.gc.collect()

    def _delete_fwd(self, r: Record) -> None:
        uuid = r["uuid"]
        if self.store.exists(uuid):
            mutation_point()
            self.store.remove(uuid)
        if self.meta.vdis.pop(uuid, None) is not None:
            self.save()

    def _hide_fwd(self, r: Record) -> None:
        uuid = r["uuid"]
        with self.open(uuid, writable=True) as img:
            if not img.hidden:
                mutation_point()
                img.set_hidden(True)
            empty = is_empty(img)
        rec = self.meta.vdis[uuid]
        self.meta.vdis[uuid] = self._base_record(uuid, rec)
        self.meta.vdis[uuid].empty = empty
        self.save()

    # ------------------------------------------------------------ resize

    def resize(self, uuid: str, new_size: int) -> VDIRecord:
        rec = self.visible(uuid, "VDI")
        self.writable(rec, "VDI")
        size = round_size(new_size)
        if new_size <= 0 or size < rec.virtual_size:
            raise err("VDISize", f"cannot shrink {uuid} from {rec.virtual_size} to {new_size}")
        if size == rec.virtual_size:
            return rec
        self.ensure_space(4 * (size // BLOCK - rec.virtual_size // BLOCK) + 4096)
        r = {"op": "resize", "uuid": uuid, "size": size}
        self.journal.begin(uuid, r)
        if self.store.SIZED_CONTAINERS:
            from smlib import vhd

            mutation_point()
            self.store.set_container_size(uuid, vhd.required_size(size))
        with self.open(uuid, writable=True) as img:
            mutation_point()
            img.resize(size)
        self._resize_fwd(r)
        self.journal.end(uuid)
        return rec

    def _resize_fwd(self, r: Record) -> None:
        uuid = r["uuid"]
        rec = self.meta.vdis[uuid]
        with self.open(uuid) as img:
            rec.virtual_size = img.virtual_size
        if not rec.attached:
            self.fit(uuid, inflate=False)
        self.save()

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
        else:
            self.store.deactivate(uuid)
        if rec.active != active:
            rec.active = active
            self.save()

    def introduce(self, uuid: str, location: str, fields: dict) -> VDIRecord:
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
            mutation_point()
            self.store.rename(location, uuid)
        rec = self._record_from_image(uuid, VDIRecord(uuid=uuid, **fields))
        self.meta.vdis[uuid] = rec
        self.save()
        return rec

    def _record_from_image(self, uuid: str, rec: VDIRecord) -> VDIRecord:
        with self.open(uuid) as img:
            rec.parent = self.parent_of(img)
            rec.hidden = img.hidden
            rec.virtual_size = img.virtual_size
            rec.empty = rec.hidden and is_empty(img)
        if rec.hidden:
            rec.name_label = rec.name_label or BASE_LABEL
            rec.read_only = True
        return rec

    # -------------------------------------------------------------- scan

    def scan(self) -> None:
        """Make the metadata agree with the volumes, then collect garbage."""
        self.remove_transients()
        names = {n for n in self.store.list_volumes() if is_uuid(n)}
        before = self.meta.serialise()
        for uuid in list(self.meta.vdis):
            if uuid not in names:
                del self.meta.vdis[uuid]
        for uuid in sorted(names):
            rec = self.meta.vdis.get(uuid)
            if rec is not None and rec.attached:
                continue  # a guest may be writing it: its record stands
            self.meta.vdis[uuid] = self._record_from_image(uuid, rec or VDIRecord(uuid=uuid))
        if self.meta.serialise() != before:
            self.save()
        self.gc.collect()

    def listing(self) -> "list[dict]":
        """vdi_list: one struct per VDI (bases included, marked hidden)."""
        out = []
        for uuid in sorted(self.meta.vdis):
            rec = self.meta.vdis[uuid]
            out.append({
                "uuid": uuid,
                "location": self.store.location(uuid),
                "virtual_size": str(rec.virtual_size),
                "physical_utilisation": str(self.store.utilisation(uuid)),
                "parent": rec.parent,
                "hidden": rec.hidden,
                "read_only": rec.read_only,
                "is_a_snapshot": rec.is_a_snapshot,
                "snapshot_of": rec.snapshot_of,
                "name_label": rec.name_label,
                "attached": rec.attached,
            })
        return out
