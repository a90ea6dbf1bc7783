"""Garbage collection of bases: prune the childless, coalesce the redundant.

* Prune: a hidden base with no children holds nothing anyone can read;
  remove it (its parent may then become prunable or coalescable).
* Coalesce: a hidden base X whose parent P is a hidden base with X as its
  only child adds a link to every chain below it. Copy X's allocated
  sectors into P (what X's children read is unchanged: X's sectors win
  over P's either way, and only X reads P), point X's children at P,
  remove X. Each chain gets one shorter.
* Bypass: a hidden base X with no data of its own (a snapshot of a disk
  unwritten since the last one) and the size of its parent P adds nothing:
  point its children at P and remove it, whatever else P has as children.
  This keeps repeated snapshots of an idle disk from deepening its chain.

Each step is journaled (key ``gc-<uuid>``, ops ``prune`` and ``coalesce``)
and its forward function is idempotent, so a crash anywhere is finished by
replay. Runs under the SR lock after revert, delete, replay and sr_scan,
until nothing is left. GC builds on the tree's primitives and steps
(steps.py); tree.py builds on GC.

GC is optional work, so it never insists: before journaling a step it
checks that the images it will change are whole (``Steps.inspect``) and
that the space a copy may take is free, and skips the step otherwise (said
in the log). It never trusts the metadata alone to remove a volume: a
volume the metadata does not know may name a base as its parent, so such
volumes' images are read first, and a base one of them names is kept.
Damaged records are never touched.
"""

from typing import Optional, Set

from smlib.faults import mutation_point
from smlib.tree.journal import Handler, Record
from smlib.tree.steps import Steps

# A safety bound on one collection (each step removes a volume, so the
# loop always ends; this only caps the time one command may spend).
MAX_STEPS = 1000


class GC:
    def __init__(self, tree: Steps) -> None:
        self.tree = tree
        self._keep: Set[str] = set()     # not to be removed or written this command
        self._frozen = False             # an unreadable unknown volume: remove nothing

    def handlers(self) -> "dict[str, Handler]":
        # Pruning a base is deleting it, journaled under its own op.
        return {"prune": self.tree.delete_fwd, "coalesce": self._coalesce_fwd}

    def collect(self) -> int:
        """Prune and coalesce until nothing qualifies; returns the steps."""
        steps = 0
        self._protect_unknown_parents()
        while steps < MAX_STEPS and not self._frozen:
            victim = self.prunable()
            if victim:
                self._run({"op": "prune", "uuid": victim})
            else:
                pair = self.coalescable()
                if pair is None:
                    break
                child, parent, bypass = pair
                children = self.tree.meta.children(child)
                if not self._safe_to_fold(child, parent, bypass, children):
                    self._keep.add(child)
                    continue
                self._run({"op": "coalesce", "uuid": child, "parent": parent, "bypass": bypass,
                           "children": children})
            steps += 1
        return steps

    # ------------------------------------------------------- precautions

    def _skip(self, what: str) -> None:
        from smlib.protocol import log

        log.write("GC", f"SR {self.tree.meta.sr_uuid}: skipped: {what}")

    def _protect_unknown_parents(self) -> None:
        """Keep every base that a volume unknown to the metadata names as its
        parent (the images are the truth; the metadata may have lost the
        children's records). One such volume unreadable: remove nothing."""
        from smlib.stores.base import is_uuid

        tree = self.tree
        for name in tree.store.list_volumes():
            if not is_uuid(name) or name in tree.meta.vdis:
                continue
            try:
                with tree.open(name) as img:
                    parent = tree.parent_of(img)
            except Exception as e:  # noqa: BLE001 - any failure means: unknown
                self._skip(f"volume {name} unknown to the metadata is unreadable ({e});"
                           " nothing is removed until sr_scan")
                self._frozen = True
                return
            if parent:
                self._skip(f"base {parent} kept: volume {name}, unknown to the metadata,"
                           " names it as parent (sr_scan records it)")
                self._keep.add(parent)

    def _safe_to_fold(self, child: str, parent: str, bypass: bool,
                      children: "list[str]") -> bool:
        """The images a coalesce or bypass changes are whole, and a copy's
        bytes fit in the free space."""
        from smlib.protocol.errors import SRError

        tree, store = self.tree, self.tree.store
        try:
            for name in [child, *children] + ([] if bypass else [parent]):
                tree.inspect(name)
            if not bypass:
                need = self._copy_space(child, parent)
                free = store.free_space()
                if free < need:
                    self._skip(f"coalescing {child} into {parent} needs {need} bytes,"
                               f" {free} free")
                    return False
        except SRError as e:
            self._skip(f"{child} not folded into {parent}: {e}")
            return False
        return True

    def _copy_space(self, child: str, parent: str) -> int:
        """Bytes a coalesce may need: the parent inflated (sized containers)
        or the child's blocks appended to the parent (files), plus a margin
        for the metadata written after it."""
        from smlib import vhd

        store = self.tree.store
        if store.SIZED_CONTAINERS:
            with self.tree.open(parent) as img:
                want = vhd.required_size(img.virtual_size)
            return max(0, want - store.utilisation(parent))
        return store.utilisation(child) + (1 << 20)

    def _run(self, r: Record) -> None:
        key = f"gc-{r['uuid']}"
        self.tree.journal.begin(key, r)
        self.handlers()[r["op"]](r)
        self.tree.journal.end(key)

    # ---------------------------------------------------------- choosing

    def prunable(self) -> Optional[str]:
        counts = self.tree.meta.child_counts()
        for uuid in sorted(self.tree.meta.vdis):
            rec = self.tree.meta.vdis[uuid]
            if rec.hidden and not counts.get(uuid) and not rec.damaged and uuid not in self._keep:
                return uuid
        return None

    def coalescable(self) -> "Optional[tuple[str, str, bool]]":
        """(base, parent, bypass) of a base to fold into its parent."""
        vdis = self.tree.meta.vdis
        counts = self.tree.meta.child_counts()
        for uuid in sorted(vdis):
            rec = vdis[uuid]
            parent = vdis.get(rec.parent) if rec.parent else None
            if not rec.hidden or parent is None or uuid in self._keep:
                continue
            if rec.damaged or parent.damaged:
                continue
            if rec.empty and rec.virtual_size == parent.virtual_size:
                return uuid, parent.uuid, True
            if parent.hidden and counts.get(parent.uuid) == 1:
                return uuid, parent.uuid, False
        return None

    # ------------------------------------------------------ forward steps

    def _coalesce_fwd(self, r: Record) -> None:
        from smlib import vhd

        tree, store = self.tree, self.tree.store
        child, parent = r["uuid"], r["parent"]
        copy = not r.get("bypass")  # a bypassed base has nothing to copy
        if store.exists(child):
            if copy and store.SIZED_CONTAINERS:
                with tree.open(parent) as img:
                    want = vhd.required_size(img.virtual_size)
                mutation_point("coalesce.grow-parent")
                store.set_container_size(parent, want)
            if copy:
                # Repeating a partial copy rewrites the same sectors: harmless.
                mutation_point("coalesce.copy")
                vhd.coalesce(store.activate(child), resolver=store.resolver)
            parent_path = store.activate(parent)
            for grandchild in r["children"]:
                if not store.exists(grandchild):
                    continue
                with tree.open(grandchild, writable=True) as img:
                    if tree.parent_of(img) == child:
                        mutation_point("coalesce.reparent")
                        img.reparent(parent_path, store.locator(parent))
            mutation_point("coalesce.remove-child")
            store.remove(child)
        if copy:
            # Outside the branch above: a crash after the removal, right
            # before this deflate, must not leave the parent inflated.
            tree.fit(parent, inflate=False)
        for grandchild in r["children"]:
            rec = tree.meta.vdis.get(grandchild)
            if rec is not None:
                rec.parent = parent
        folded = tree.meta.vdis.pop(child, None)
        prec = tree.meta.vdis[parent]
        if copy:
            # Coalescing a child grown by vdi_resize grows the parent with it.
            with tree.open(parent) as img:
                prec.virtual_size = img.virtual_size
            prec.empty = prec.empty and folded is not None and folded.empty
        tree.save()
