"""One idempotent forward step per journal op, and the primitives they share.

A multi-step change (tree.py's operations, gc.py's steps) journals its
intent, then runs the forward step of its op; replay after a crash runs the
same step again. Each step re-derives from the store what is already done,
so running it twice is running it once, and it rolls back by doing nothing
where the crash came before the point of no return.

``Steps.handlers()`` maps the ops ``create snapshot revert delete hide
resize`` to their steps; gc.py adds ``prune`` (the delete step) and
``coalesce``, and tree.py joins the two tables for replay. ``Tree``
(tree.py) adds the operations that check and journal; ``GC`` (gc.py) what
to collect. Both build on this module; it imports neither.

``smlib.faults.mutation_point(name)`` precedes every mutation.
"""

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Optional

from smlib.faults import mutation_point
from smlib.protocol.errors import SRError
from smlib.stores.base import Store
from smlib.tree.journal import Handler, Journal, Record
from smlib.tree.metadata import Metadata, VolumeRecord

if TYPE_CHECKING:
    from smlib.vhd import Image

NEW = "new"  # suffix of a revert's new target volume before the swap
BASE_LABEL = "base copy"  # what sm calls a hidden base


def err(name: str, opterr: Optional[str] = None) -> SRError:
    return SRError.from_name(name, opterr)


def image_error(exc: Exception, code: str = "VDIUnavailable", volume: str = "",
                path_free: bool = False) -> SRError:
    """The SR error for an image the VHD library refused (VHDError) or could
    not reach (OSError): a storage error, not a crash (1200). The one place
    a VHDError becomes an SRError (TreeSR and the tree call it).
    ``path_free``: the library's message without the image's path (``what``),
    where that path is an internal one (a temporary volume)."""
    text = getattr(exc, "what", str(exc)) if path_free else str(exc)
    if getattr(exc, "errno", None) == 28:  # ENOSPC: the SR is full, whatever wrote
        code = "SRNoSpace"
    return err(code, f"{volume}: {text}" if volume else text)


# Room the bookkeeping of a change needs besides its new volumes: the
# journal record and the metadata rewritten beside the old copy.
BOOKKEEPING = 56 * 1024


def volume_cost(virtual_size: int) -> int:
    """Free bytes a new empty volume of that size takes, its bookkeeping included."""
    from smlib.vhd import geometry  # deferred: commands that open no image skip smlib.vhd

    return geometry.empty_size(virtual_size) + BOOKKEEPING


def base_record(base: str, rec: VolumeRecord) -> VolumeRecord:
    """The metadata record of a hidden base made from ``rec``."""
    return VolumeRecord(uuid=base, parent=rec.parent, hidden=True, read_only=True,
                     virtual_size=rec.virtual_size, name_label=BASE_LABEL, type=rec.type)


class Steps:
    """An SR as one command sees it (store, journal, metadata), the
    primitives over its volumes, and the forward step of every op."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.journal = Journal(store)
        self.meta = Metadata.parse(store.read_metadata())
        if not self.meta.sr_uuid and store.sr_uuid:
            self.meta.sr_uuid = store.sr_uuid

    def handlers(self) -> "dict[str, Handler]":
        return {
            "create": self.create_fwd,
            "snapshot": self.snapshot_replay,
            "revert": self.revert_replay,
            "delete": self.delete_fwd,
            "hide": self.hide_fwd,
            "resize": self.resize_fwd,
        }

    # -------------------------------------------------------- primitives

    def save(self) -> None:
        mutation_point("metadata.write")
        self.store.write_metadata(self.meta.serialise())

    @contextmanager
    def open(self, name: str, writable: bool = False) -> "Iterator[Image]":
        from smlib import vhd

        try:
            img = vhd.open_image(self.store.activate(name), writable,
                                 resolver=self.store.resolver)
        except (vhd.VHDError, OSError) as e:
            raise image_error(e, volume=name) from None
        try:
            yield img
        finally:
            img.close()

    def inspect(self, name: str) -> None:
        """Refuse (VDIUnavailable, nothing changed) an image a command is
        about to change unless it is whole: header, footer and BAT valid (no
        block in the metadata, past the end or overlapping another), 2 MiB
        blocks, and a parent that is one of the SR's volumes with the uuid
        the header names. Called before the journal record is written, so a
        damaged image never leaves a half-done change behind."""
        with self.open(name) as img:
            self.inspect_open(name, img)

    def inspect_open(self, name: str, img: "Image") -> None:
        from smlib import vhd
        from smlib.vhd.geometry import BLOCK_SIZE

        try:
            _ = img.bat  # loading it checks every entry against the file
            if img.block_size != BLOCK_SIZE:
                raise vhd.VHDError(img.path, None,
                                   f"block size {img.block_size}, not {BLOCK_SIZE}")
            if img.parent_locator is not None:
                parent = self.parent_of(img)
                if not self.store.exists(parent):
                    raise vhd.VHDError(img.path, None, f"parent {parent} missing")
                img.parent()  # readable, and the uuid the header names
        except (vhd.VHDError, OSError) as e:
            raise image_error(e, volume=name) from None

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
        mutation_point("fit.set-container-size")
        self.store.set_container_size(name, want)

    # ------------------------------------------------------------ create

    def create_fwd(self, r: Record) -> None:
        rec = VolumeRecord.from_dict(r["record"])
        if self.store.exists(rec.uuid):  # else the crash came first: nothing to undo
            self.meta.vdis[rec.uuid] = rec
            self.save()

    # ------------------------------------------------- snapshot / clone

    def split(self, leaf: str, base: str, base_rec: VolumeRecord) -> None:
        """Turn leaf's volume into ``base`` and give ``leaf`` an empty child
        of it (the same contents under the same name). Idempotent."""
        if not self.store.exists(base):
            mutation_point("split.rename-leaf")
            self.store.rename(leaf, base)
        if base_rec.hidden:
            with self.open(base, writable=True) as img:
                if not img.hidden:
                    mutation_point("split.hide-base")
                    img.set_hidden(True)
                base_rec.empty = img.is_empty()  # fixed now: a base never changes
        self.fit(base, inflate=False)
        if not self.store.exists(leaf):
            mutation_point("split.create-leaf")
            self.store.create_child(leaf, base)
        leaf_rec = self.meta.vdis[leaf]
        if leaf_rec.attached:
            self.fit(leaf, inflate=True)
        self.meta.vdis[base] = base_rec
        leaf_rec.parent = base

    def snapshot_fwd(self, r: Record) -> None:
        base = r["base"]
        self.split(r["leaf"], base, VolumeRecord.from_dict(r["base_record"]))
        new = r.get("new_record")
        if new:
            snap = VolumeRecord.from_dict(new)
            if not self.store.exists(snap.uuid):
                mutation_point("snapshot.create-snapshot")
                self.store.create_child(snap.uuid, base)
            self.meta.vdis[snap.uuid] = snap
        self.save()

    def snapshot_replay(self, r: Record) -> None:
        # Before the rename nothing happened; from it on, roll forward.
        if self.store.exists(r["base"]):
            self.snapshot_fwd(r)

    # ------------------------------------------------------------ revert

    def revert_fwd(self, r: Record, fresh: bool) -> None:
        target, base, parent = r["target"], r["base"], r["parent"]
        tmp = f"{target}.{NEW}"
        if base:
            self.split(r["snap"], base, VolumeRecord.from_dict(r["base_record"]))
        if fresh:
            mutation_point("revert.create-new")
            if parent:
                self.store.create_child(tmp, parent)
            else:
                self.store.create_vhd(tmp, r["size"])
        if self.store.exists(tmp):
            # Complete (creation is atomic): roll forward through the swap.
            with self.open(tmp, writable=True) as img:
                if img.virtual_size < r["size"]:
                    mutation_point("revert.grow-new")
                    img.resize(r["size"])
            mutation_point("revert.swap")
            self.store.replace(tmp, target)
        # Whether or not the swap happened, record what the image says.
        with self.open(target) as img:
            rec = self.meta.vdis[target]
            rec.parent = self.parent_of(img)
            rec.virtual_size = img.virtual_size
        self.save()

    def revert_replay(self, r: Record) -> None:
        if r["base"] and not self.store.exists(r["base"]):
            return  # crashed before the first mutation that matters
        self.revert_fwd(r, fresh=False)

    # ------------------------------------------------------ delete, hide

    def delete_fwd(self, r: Record) -> None:
        uuid = r["uuid"]
        if self.store.exists(uuid):
            mutation_point("delete.remove")
            self.store.remove(uuid)
        if self.meta.vdis.pop(uuid, None) is not None:
            self.save()

    def hide_fwd(self, r: Record) -> None:
        uuid = r["uuid"]
        with self.open(uuid, writable=True) as img:
            if not img.hidden:
                mutation_point("hide.set-hidden")
                img.set_hidden(True)
            empty = img.is_empty()
        rec = self.meta.vdis[uuid]
        self.meta.vdis[uuid] = base_record(uuid, rec)
        self.meta.vdis[uuid].empty = empty
        self.save()

    # ------------------------------------------------------------ resize

    def resize_fwd(self, r: Record) -> None:
        uuid = r["uuid"]
        rec = self.meta.vdis[uuid]
        with self.open(uuid) as img:
            rec.virtual_size = img.virtual_size
        if not rec.attached:
            self.fit(uuid, inflate=False)
        self.save()
