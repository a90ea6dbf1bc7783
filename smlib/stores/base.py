"""The Store interface: where an SR's volumes and bookkeeping live.

The tree machinery (smlib/tree/), the journal, the SR metadata, the lock
and GC are written once and reach storage only through a Store. A store
knows how a *volume* (one VHD image) is created, renamed, swapped, resized,
removed and opened; the VHD contents themselves are read and written with
smlib.vhd on the path that ``activate`` returns.

Two implementations:

* ``smlib.stores.file.FileStore``: volume ``N`` is the file
  ``<location>/N.vhd``; parent locator ``<uuid>.vhd``; the bookkeeping is in
  ``<location>/.sm/`` (``metadata.xml``, ``journal/``, ``lock``).
* ``smlib.stores.lvm.store.LVMStore``: volume ``N`` is the LV ``VHD-N``;
  parent locator ``VHD-<uuid>``; bytes reached through one replaceable
  activation function; metadata and journal in the LV ``MGT``; the lock is
  host-local.

Volume names
------------
The tree picks every name; a store never invents VDI names. Two shapes:

* ``<uuid>`` (36 lowercase hex-and-dash characters): the volume of the VDI
  (leaf or hidden base) with that uuid.
* ``<uuid>.<suffix>`` (suffix of lowercase letters): a transient volume the
  tree builds before swapping it in (e.g. ``<uuid>.new``). A store may use
  the same shape for its own transient names (e.g. ``<uuid>.old`` during
  ``replace``).

After journal replay, any transient name still present is garbage and the
tree removes it. Stores must not accept anything else (never a path).

Costs
-----
On LVM every structural call (create, rename, resize, remove, replace) is
one or more lvm2 runs of ~45 ms, so the tree asks for as few as it can: a
revert is at most create + replace (+ removal of the old target, which
``replace`` already does). Calls that only touch bytes (``activate`` then
smlib.vhd I/O; metadata and journal I/O) must not run lvm2 once the volume
is active.

Container sizes
---------------
Stores with ``SIZED_CONTAINERS = True`` (LVM) hold each image in a container
of fixed size. The tree keeps: a leaf attached for writing inflated to
``smlib.vhd.required_size(virtual_size)``; bases and detached leaves
deflated to the image's ``physical_size``. It calls ``set_container_size``
only when the flag is true, so the file store pays nothing.

Crash safety
------------
Each single call is atomic (a crash leaves it done or not done) except
``replace``, which must be *resumable*: calling ``replace(src, dst)`` again
after a crash in the middle finishes it, and calling it when ``src`` no
longer exists and ``dst`` does is a no-op. The tree journals its intent
before the first mutating call and re-drives these calls on replay.
"""

import abc
from typing import Optional

_HEX = frozenset("0123456789abcdef")
_DASHES = (8, 13, 18, 23)


def is_uuid(text: str) -> bool:
    """True when text is a lowercase canonical uuid (a VDI volume name).
    (Checked by hand: compiling a regex costs every driver call ~2 ms.)"""
    if len(text) != 36:
        return False
    for i, ch in enumerate(text):
        if (ch != "-") if i in _DASHES else (ch not in _HEX):
            return False
    return True


def split_transient(text: str) -> "Optional[tuple[str, str]]":
    """``(uuid, suffix)`` for a transient name ``<uuid>.<suffix>``, else None."""
    uuid, dot, suffix = text.partition(".")
    if dot and suffix and all("a" <= c <= "z" for c in suffix) and is_uuid(uuid):
        return uuid, suffix
    return None


def fsync_path(path: str) -> None:
    """fsync what ``path`` names: a directory (its renames and unlinks become
    durable) or a block device (its dirty pages reach the device below)."""
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_volume_name(text: str) -> bool:
    """True when text is a name a store accepts: a uuid or ``<uuid>.<suffix>``."""
    return is_uuid(text) or split_transient(text) is not None


class Store(abc.ABC):
    """Where one SR's volumes, metadata, journal and lock live.

    Constructed from the call's ``device_config`` and the SR uuid (None for
    commands without one, like ``sr_probe``). The constructor only parses
    configuration: it raises ``SRError`` (e.g. ``ConfigLocationMissing``)
    for a missing key and touches nothing on disk.
    """

    #: True when images sit in fixed-size containers (LVs): see module doc.
    SIZED_CONTAINERS: bool = False

    def __init__(self, device_config: "dict[str, str]", sr_uuid: Optional[str]) -> None:
        self.device_config = device_config
        self.sr_uuid = sr_uuid

    # ----------------------------------------------------------------- SR

    @abc.abstractmethod
    def sr_exists(self) -> bool:
        """True when the SR's storage is initialised (directory with .sm/,
        VG with MGT). Reads only."""

    def adopt(self) -> bool:
        """Take over an SR the stock storage manager made here, when this
        store can do so without changing its volumes: start our bookkeeping
        beside them and return True (the caller then scans the volumes in).
        False when there is nothing to adopt. The default adopts nothing."""
        return False

    @abc.abstractmethod
    def sr_create(self) -> None:
        """Initialise the SR's storage (create or adopt an empty directory /
        create the VG and MGT). Raises ``SRError`` (``SRExists`` when it is
        already an SR, ``SRUnavailable`` when it cannot be used)."""

    @abc.abstractmethod
    def sr_delete(self) -> None:
        """Remove the SR's bookkeeping (and the container: the VG; the file
        store leaves the directory it may have adopted). The caller has
        checked that no visible VDI exists and removed every volume."""

    def sr_attach(self) -> None:
        """Make the SR usable on this host (e.g. activate MGT). Default: none."""
        return None  # optional hook: most stores need nothing here

    def sr_detach(self) -> None:
        """Undo ``sr_attach``. Default: nothing to do."""
        return None  # optional hook: most stores need nothing here

    def release_host_resources(self) -> None:
        """After the SR's storage vanished: undo whatever this host still
        holds of it (the loop windows of the LVM tests). Default: none."""
        return None  # optional hook: most stores hold nothing

    def probe(self) -> "list[dict[str, str]]":
        """SRs found at this device_config, as ``[{"uuid": ...}, ...]``
        (empty when none). Reads only. A store whose own names do not tell
        the SR's uuid answers "" for it: the caller reads it from the SR
        metadata (``read_metadata``)."""
        return []

    @abc.abstractmethod
    def free_space(self) -> int:
        """Bytes still available for new volumes or growth."""

    @abc.abstractmethod
    def total_space(self) -> int:
        """Bytes the SR can hold in total (physical_size of the SR)."""

    # ------------------------------------------------------------ volumes

    @abc.abstractmethod
    def list_volumes(self) -> "list[str]":
        """Names of every volume present, VDI and transient ones alike
        (never the store's bookkeeping files / LVs). Reads only."""

    def strays(self) -> "dict[str, str]":
        """Entries named like volumes that are no volume (the file store: a
        symlink, a directory, a FIFO ...) -> what they are. They are never
        opened; sr_scan lists them as damaged so that they can be deleted."""
        return {}

    @abc.abstractmethod
    def exists(self, name: str) -> bool:
        """True when the volume exists."""

    @abc.abstractmethod
    def locator(self, name: str) -> str:
        """The parent-locator text a child writes for parent volume ``name``:
        ``<name>.vhd`` for files, ``VHD-<name>`` for LVs."""

    @abc.abstractmethod
    def name_of_locator(self, locator: str) -> Optional[str]:
        """Inverse of ``locator``: the volume name, or None when the text is
        not a locator this store writes."""

    @abc.abstractmethod
    def location(self, name: str) -> str:
        """The VDI ``location`` reported to the toolstack for a VDI volume
        (the uuid, as sm does for both FileSR and LVMSR)."""

    @abc.abstractmethod
    def create_vhd(self, name: str, virtual_size: int, *, hidden: bool = False) -> None:
        """Create volume ``name`` holding an empty dynamic VHD of
        ``virtual_size`` bytes (smlib.vhd.create). Sized containers start
        deflated (the image's physical size). Raises ``SRError``
        ``SRNoSpace`` when there is no room and ``VDIExists`` when the name
        is taken. Leaves nothing behind on failure."""

    @abc.abstractmethod
    def create_child(self, name: str, parent: str, *, hidden: bool = False) -> None:
        """Create volume ``name`` holding an empty differencing VHD whose
        parent is volume ``parent`` (smlib.vhd.snapshot with
        ``parent_locator=self.locator(parent)``). Same errors as
        ``create_vhd``. The parent's container is left as it is."""

    @abc.abstractmethod
    def rename(self, old: str, new: str) -> None:
        """Rename a volume; ``new`` must not exist. Atomic. Does not rewrite
        anything inside the image (children locators are the tree's job)."""

    @abc.abstractmethod
    def replace(self, src: str, dst: str) -> None:
        """Make ``dst`` name what ``src`` holds and remove ``dst``'s previous
        volume; afterwards ``src`` no longer exists. Files: ``os.replace`` +
        directory fsync (atomic). LVs: a rename sequence that is resumable:
        calling it again after a crash finishes it; when ``src`` is gone and
        ``dst`` exists it is a no-op. Readers never see ``dst`` missing
        except inside that sequence, which the tree's journal covers."""

    @abc.abstractmethod
    def remove(self, name: str) -> None:
        """Remove a volume. Removing a missing volume is not an error (replay
        may repeat a removal)."""

    @abc.abstractmethod
    def activate(self, name: str, *, keep: bool = False) -> str:
        """Make the volume's bytes reachable and return a path for
        smlib.vhd (the file path; the LV's device node or, in tests, a
        loop device). Idempotent. Activations made with ``keep=False`` are
        undone by ``close``; ``keep=True`` ones (vdi_activate) persist until
        ``deactivate``."""

    def deactivate(self, name: str) -> None:
        """Undo ``activate`` (vdi_deactivate). Default: nothing to do."""
        return None  # optional hook: most stores need nothing here

    def resolver(self, child_path: str, locator: str) -> str:
        """``smlib.vhd`` resolver: the path of the parent that a child at
        ``child_path`` names with ``locator``. Activates the parent. Raises
        ``SRError`` ``VDIUnavailable`` for a locator this store does not
        write (never follows a path out of the SR)."""
        name = self.name_of_locator(locator)
        if name is None:
            from smlib.protocol.errors import SRError  # lazy: keep driver start-up light

            raise SRError.from_name("VDIUnavailable", f"bad parent locator {locator!r}")
        return self.activate(name)

    def set_container_size(self, name: str, nbytes: int) -> None:
        """Resize the volume's container to at least ``nbytes`` (rounded up
        to the store's unit). Only called when ``SIZED_CONTAINERS``; a no-op
        (no lvm2 run) when the container already has that rounded size.
        Raises ``SRError`` ``SRNoSpace`` when growing does not fit."""
        return None  # optional hook: most stores need nothing here

    @abc.abstractmethod
    def utilisation(self, name: str) -> int:
        """Bytes the volume occupies (file size / LV size)."""

    def sync(self) -> None:
        """Make every completed volume change durable (directory fsync for
        the file store). Called before a journal record is removed."""
        return None  # optional hook: most stores need nothing here

    def remove_garbage(self) -> None:
        """Remove store-private leftovers of interrupted calls (e.g. the
        file store's ``*.part`` files). Called after replay and by sr_scan."""
        return None  # optional hook: most stores need nothing here

    def close(self) -> None:
        """End of command: undo ``keep=False`` activations, release
        resources. Safe to call twice."""
        return None  # optional hook: most stores need nothing here

    # -------------------------------------------------- SR bookkeeping

    @abc.abstractmethod
    def read_metadata(self) -> Optional[bytes]:
        """The SR metadata document (smlib.tree.metadata's XML), or None when
        none was written yet."""

    @abc.abstractmethod
    def write_metadata(self, data: bytes) -> None:
        """Replace the SR metadata document atomically and durably (a crash
        leaves the old or the new document)."""

    @abc.abstractmethod
    def journal_put(self, key: str, data: bytes) -> None:
        """Write (or overwrite) journal record ``key`` atomically and
        durably before returning. ``key`` matches ``is_volume_name`` or
        is a plain ``[a-z0-9-]+`` word."""

    @abc.abstractmethod
    def journal_items(self) -> "dict[str, bytes]":
        """Every journal record present, by key."""

    def journal_location(self, key: str) -> str:
        """Where journal record ``key`` lives, for an operator (a path when
        there is one)."""
        return f"journal record {key!r} of SR {self.sr_uuid}"

    @abc.abstractmethod
    def journal_remove(self, key: str) -> None:
        """Remove journal record ``key``; missing is not an error. Need not
        be durable: the tree calls ``sync`` and writes the metadata first,
        and replaying a finished record is harmless (forward steps are
        idempotent)."""

    @abc.abstractmethod
    def lock_path(self) -> str:
        """A local file for smlib.tree.lock's ``flock`` (created on demand by the
        lock, with its directory). File store: ``<location>/.sm/lock``;
        LVM: a host-local path under /run or /var/lock keyed by the SR."""
