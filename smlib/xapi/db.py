"""xapi's database, kept by the driver as sm keeps it.

Under xapi the storage manager writes the VDI and SR records itself, over the
session xapi passes (``session_ref``), and xapi reads them right after the
command returns (XAPI-CONTRACT section 2). Commands say *what* changed, as a
``Changes`` (smlib/drivers/tree_sr.py builds one from the SR's metadata
before and after); this module alone decides *how* xapi is told, with the
calls sm makes:

- a new VDI: ``VDI.db_introduce`` with sm's argument list. Hidden bases
  too, ``managed=false``, as stock FileSR/LVHDSR do: ``sr_scan`` must
  introduce whatever is on disk (keyed by location), so a command that left
  a base out would only defer its record to the next scan;
- a removed VDI: ``VDI.db_forget``;
- a changed VDI: ``set_virtual_size``, ``set_physical_utilisation``,
  ``set_read_only``, the ``sm_config`` keys (``vhd-parent``), ``set_cbt_enabled``;
- the SR: ``set_virtual_allocation``, ``set_physical_size``,
  ``set_physical_utilisation``.

Each step is idempotent (an introduce of a uuid xapi knows becomes an
update, a forget of one it does not know is done), so a command retried
after a failure, or the next ``sr_scan``, repairs what a failed call left.
No xapi at the socket: nothing is synchronised and the log says so. A xapi
that fails: an SRError with the command's code, as sm raises (the storage
change itself is complete, or replayed by the next command).
"""

from typing import Callable, Optional, Union

from smlib.protocol import log
from smlib.protocol.errors import SRError
from smlib.xapi import session as xapi

NULL_REF = xapi.NULL_REF
EPOCH = "19700101T00:00:00Z"  # xapi's "no snapshot time"

# sm's error for a failed XenAPI call, by command (SRCommand.EXCEPTION_TYPE).
FAILURE_NAMES = {
    "sr_scan": "SRScan",
    "vdi_create": "VDICreate",
    "vdi_delete": "VDIDelete",
    "vdi_resize": "VDIResize",
    "vdi_snapshot": "VDISnapshot",
    "vdi_clone": "VDIClone",
}

# sm_config keys an update never touches: xapi's per-host keys and the data
# path's markers (sm: host_*, paused, activating, relinking, vhd-blocks).
_PROTECTED_PREFIX = "host_"
_PROTECTED = ("paused", "activating", "relinking", "vhd-blocks")
# Keys this module owns in sm_config.
_OWNED = ("vhd-parent",)


class VDIFacts:
    """What the SR says about one VDI, in the fields of xapi's record."""

    __slots__ = ("uuid", "location", "name_label", "name_description", "type", "read_only",
                 "managed", "virtual_size", "physical_utilisation", "parent", "is_a_snapshot",
                 "snapshot_time", "snapshot_of", "metadata_of_pool")

    def __init__(self, uuid: str, location: str, *, name_label: str = "",
                 name_description: str = "", type: str = "user", read_only: bool = False,
                 managed: bool = True, virtual_size: int = 0, physical_utilisation: int = 0,
                 parent: str = "", is_a_snapshot: bool = False, snapshot_time: str = "",
                 snapshot_of: str = "", metadata_of_pool: str = "") -> None:
        self.uuid = uuid
        self.location = location
        self.name_label = name_label
        self.name_description = name_description
        self.type = type or "user"
        self.read_only = read_only
        self.managed = managed
        self.virtual_size = virtual_size
        self.physical_utilisation = physical_utilisation
        self.parent = parent  # the parent VDI's uuid ("" for none): sm_config vhd-parent
        self.is_a_snapshot = is_a_snapshot
        self.snapshot_time = snapshot_time
        self.snapshot_of = snapshot_of  # a uuid or an OpaqueRef
        self.metadata_of_pool = metadata_of_pool

    def sm_config(self) -> "dict[str, str]":
        return {"vhd-parent": self.parent} if self.parent else {}

    def __repr__(self) -> str:
        return f"VDIFacts({self.uuid!r}, parent={self.parent!r}, size={self.virtual_size})"


class SRFacts:
    """The SR's sizes, in bytes."""

    __slots__ = ("virtual_allocation", "physical_size", "physical_utilisation")

    def __init__(self, virtual_allocation: int, physical_size: int,
                 physical_utilisation: int) -> None:
        self.virtual_allocation = virtual_allocation
        self.physical_size = physical_size
        self.physical_utilisation = physical_utilisation


class Changes:
    """What one command changed on the SR."""

    def __init__(self) -> None:
        self.introduced: list[VDIFacts] = []
        self.forgotten: list[str] = []  # uuids
        self.updated: list[VDIFacts] = []
        self.sr: Optional[SRFacts] = None

    def __bool__(self) -> bool:
        return bool(self.introduced or self.forgotten or self.updated)

    def __repr__(self) -> str:
        return (f"Changes(introduced={[f.uuid for f in self.introduced]}, "
                f"forgotten={self.forgotten}, updated={[f.uuid for f in self.updated]})")


# ---------------------------------------------------------------- the calls


class _Link:
    """One command's conversation with xapi."""

    def __init__(self, call, ident: str) -> None:
        self.call = call
        self.ident = ident
        self.session = xapi.connect(call.session_ref)  # NoXapi: nobody there
        self.errors = xapi.call_errors()
        self.started = False  # a first call answered: xapi is there
        self.refs: dict[str, str] = {}  # uuid -> VDI ref, learnt on the way
        if call.vdi_uuid and call.vdi_ref and xapi.is_ref(call.vdi_ref):
            self.refs[call.vdi_uuid] = call.vdi_ref

    def __call__(self, method: str, *args):
        """api.<method>(*args); NoXapi when nobody listens, an SRError when xapi fails."""
        try:
            result = self.session.call(method, *args)
        except self.errors as e:
            if not self.started and xapi.is_unreachable(e):
                raise xapi.NoXapi(f"nobody answers at {self.session.path}: {e}") from None
            name = FAILURE_NAMES.get(self.call.command, "SMGeneral")
            raise xapi.failure(method, e, name) from None
        self.started = True
        return result

    def sr_ref(self) -> str:
        ref = self.call.sr_ref
        if ref and xapi.is_ref(ref) and ref != NULL_REF:
            return ref
        return str(self("SR.get_by_uuid", self.call.sr_uuid))

    def vdi_ref(self, uuid: str) -> Optional[str]:
        """The ref of VDI ``uuid``, None when xapi has no such VDI."""
        if uuid in self.refs:
            return self.refs[uuid]
        try:
            ref = self.session.call("VDI.get_by_uuid", uuid)
        except self.errors as e:
            details = getattr(e, "details", None)
            if isinstance(details, list) and details[:1] == ["UUID_INVALID"]:
                self.started = True
                return None
            if not self.started and xapi.is_unreachable(e):
                raise xapi.NoXapi(f"nobody answers at {self.session.path}: {e}") from None
            raise xapi.failure("VDI.get_by_uuid", e,
                               FAILURE_NAMES.get(self.call.command, "SMGeneral")) from None
        self.started = True
        self.refs[uuid] = str(ref)
        return str(ref)

    def snapshot_of_ref(self, facts: VDIFacts) -> str:
        value = facts.snapshot_of
        if not value:
            return NULL_REF
        if xapi.is_ref(value):
            return value
        return self.vdi_ref(value) or NULL_REF

    # ------------------------------------------------------------ records

    def introduce(self, facts: VDIFacts) -> str:
        ref = self.vdi_ref(facts.uuid)
        if ref is not None:  # known already (a retried command): bring it up to date
            self.update(facts, ref)
            return ref
        import xmlrpc.client

        ref = str(self(
            "VDI.db_introduce", facts.uuid, facts.name_label, facts.name_description,
            self.sr_ref(), facts.type, False, facts.read_only, {}, facts.location, {},
            facts.sm_config(), facts.managed, str(facts.virtual_size),
            str(facts.physical_utilisation), facts.metadata_of_pool or NULL_REF,
            facts.is_a_snapshot, xmlrpc.client.DateTime(facts.snapshot_time or EPOCH),
            self.snapshot_of_ref(facts), False,
        ))
        self.refs[facts.uuid] = ref
        return ref

    def forget(self, uuid: str) -> None:
        ref = self.vdi_ref(uuid)
        if ref is None:
            return  # xapi has forgotten it already
        try:
            self("VDI.db_forget", ref)
        except SRError:
            if self.vdi_ref_fresh(uuid) is not None:
                raise  # still there: a real failure
        self.refs.pop(uuid, None)

    def vdi_ref_fresh(self, uuid: str) -> Optional[str]:
        self.refs.pop(uuid, None)
        return self.vdi_ref(uuid)

    def update(self, facts: VDIFacts, ref: Optional[str] = None) -> None:
        ref = ref or self.vdi_ref(facts.uuid)
        if ref is None:  # xapi lost it: put it back
            self.introduce(facts)
            return
        self("VDI.set_virtual_size", ref, str(facts.virtual_size))
        self("VDI.set_physical_utilisation", ref, str(facts.physical_utilisation))
        self("VDI.set_read_only", ref, facts.read_only)
        self.update_sm_config(ref, facts.sm_config())
        self("VDI.set_cbt_enabled", ref, False)

    def update_sm_config(self, ref: str, wanted: "dict[str, str]") -> None:
        current = self("VDI.get_sm_config", ref)
        if not isinstance(current, dict):
            current = {}
        for key, value in wanted.items():
            if current.get(key) != value:
                self("VDI.remove_from_sm_config", ref, key)
                self("VDI.add_to_sm_config", ref, key, value)
        for key in current:
            if key in _OWNED and key not in wanted:
                self("VDI.remove_from_sm_config", ref, key)

    def sr_sizes(self, sr: SRFacts) -> None:
        ref = self.sr_ref()
        self("SR.set_virtual_allocation", ref, str(sr.virtual_allocation))
        self("SR.set_physical_size", ref, str(sr.physical_size))
        self("SR.set_physical_utilisation", ref, str(sr.physical_utilisation))

    def records(self) -> "dict[str, dict]":
        """xapi's VDI records of this SR, by location."""
        found = self("VDI.get_all_records_where", f'field "SR" = "{self.sr_ref()}"')
        out = {}
        for ref, rec in (found or {}).items():
            if isinstance(rec, dict):
                self.refs[str(rec.get("uuid", ""))] = str(ref)
                out[str(rec.get("location", ""))] = dict(rec, ref=str(ref))
        return out


def _differs(facts: VDIFacts, rec: dict) -> bool:
    """sm's in_sync_with_xenapi_record, over the fields this driver owns."""
    sm_config = rec.get("sm_config") if isinstance(rec.get("sm_config"), dict) else {}
    owned = {k: v for k, v in sm_config.items() if k in _OWNED}
    return (
        bool(rec.get("read_only")) != facts.read_only
        or str(rec.get("virtual_size")) != str(facts.virtual_size)
        or str(rec.get("physical_utilisation")) != str(facts.physical_utilisation)
        or owned != facts.sm_config()
    )


def _open(call, ident: str, quiet: bool = False) -> "Optional[_Link]":
    try:
        return _Link(call, ident)
    except xapi.NoXapi as e:
        if not quiet:
            log.write(ident, f"xapi database not synchronised ({call.command}): {e}")
        return None


def tell(call, changes: "Union[Changes, Callable[[], Changes]]", ident: str) -> None:
    """Tell xapi what ``call``'s command changed (nothing when nobody listens).
    ``changes`` may be a function making them: its cost (sizes, utilisation
    from the store) is then only paid when xapi is there."""
    link = _open(call, ident)
    if link is None:
        return
    if callable(changes):
        changes = changes()
    try:
        # Forgotten first: a VDI that became a hidden base is forgotten, then
        # introduced again as a base.
        for uuid in changes.forgotten:
            link.forget(uuid)
        for facts in changes.introduced:
            link.introduce(facts)
        for facts in changes.updated:
            link.update(facts)
        if changes.sr is not None:
            link.sr_sizes(changes.sr)
    except xapi.NoXapi as e:
        log.write(ident, f"xapi database not synchronised ({call.command}): {e}")


def synchronise(call, facts: "Callable[[], tuple[list[VDIFacts], SRFacts]]",
                ident: str) -> None:
    """sr_scan: make xapi's VDIs of this SR those on disk, keyed by location.
    ``facts()`` gives every VDI on the SR and the SR's sizes."""
    link = _open(call, ident)
    if link is None:
        return
    on_disk, sr = facts()
    try:
        if sr is not None:
            link.sr_sizes(sr)
        known = link.records()
        disk = {f.location: f for f in on_disk}
        new = [disk[loc] for loc in sorted(set(disk) - set(known))]
        gone = [known[loc] for loc in sorted(set(known) - set(disk))]
        changed = [disk[loc] for loc in sorted(set(disk) & set(known))
                   if _differs(disk[loc], known[loc])]
        for loc in set(disk) & set(known):
            # The database's uuid stands for a location it knows (sm does the same).
            link.refs[disk[loc].uuid] = known[loc]["ref"]
        for facts in new:
            link.introduce(facts)
        for rec in gone:
            link.forget(str(rec.get("uuid", "")))
        for facts in changed:
            link.update(facts, known[facts.location]["ref"])
        if new or gone or changed:
            log.write(ident, f"sr_scan synchronised xapi: {len(new)} introduced, "
                             f"{len(gone)} forgotten, {len(changed)} updated")
    except xapi.NoXapi as e:
        log.write(ident, f"xapi database not synchronised ({call.command}): {e}")


def virtual_size(call, ident: str) -> Optional[int]:
    """The virtual size xapi records for the call's VDI (None without xapi)."""
    link = _open(call, ident, quiet=True)  # the command's own tell() says it
    if link is None or not call.vdi_ref:
        return None
    try:
        return int(str(link("VDI.get_virtual_size", call.vdi_ref)))
    except xapi.NoXapi as e:
        log.write(ident, f"xapi not asked ({call.command}): {e}")
        return None
    except ValueError:
        raise SRError.from_name("SMGeneral", "xapi's virtual_size is not a number") from None
