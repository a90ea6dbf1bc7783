"""SR, VDI and VM operations of the toolstack, shaped like xapi's.

The drivers keep the VDI and SR records themselves, as under xapi: while
it runs drivers the toolstack serves them XenAPI from its database
(smlib/toolstack/server.py) and passes the socket in SMLIB_XAPI_SOCKET,
and a driver introduces, forgets and updates what its command changed
(smlib/xapi/db.py). The toolstack then does what xapi does after each
command: finds the new VDI by uuid (create) or location (snapshot, clone)
and sets the fields that are xapi's (names, snapshot_of, snapshot_time),
reads the new size (resize), and cleans the VBDs of forgotten VDIs. A
multi-step operation that fails part way undoes its own earlier steps (or
leaves them recorded).
"""

import uuid as uuidlib
from typing import Any, Callable, Optional

from smlib.toolstack.db import (
    PENDING_VM_SNAPSHOT,
    Database,
    SRRecord,
    VBDRecord,
    VDIRecord,
    VMRecord,
)
from smlib.toolstack.revert import Reverts
from smlib.toolstack.runner import (
    CODE_UNIMPLEMENTED,
    NULL_REF,
    DriverFault,
    Request,
    Runner,
    ToolstackError,
    new_ref,
)
from smlib.toolstack.server import XapiServer
from smlib.xapi.dates import now_stamp

Progress = Callable[[int, int], None]  # (bytes done, bytes total)




def _xml_illegal(ch: str) -> bool:
    """Not a character XML 1.0 can carry (Char production): control bytes
    but tab and newlines, surrogates, U+FFFE and U+FFFF."""
    c = ord(ch)
    return (c < 0x20 and ch not in "\t\n\r") or 0xD800 <= c <= 0xDFFF or c in (0xFFFE, 0xFFFF)


def check_xml_text(**fields: Any) -> None:
    """Refuse, before anything is sent or stored, text that an XML-RPC call
    cannot carry (a driver would answer 143 for the whole call; the XenAPI
    server could not answer at all): IllegalXMLChar (447), as sm does."""
    for name, value in fields.items():
        texts = value.items() if isinstance(value, dict) else [("", value)]
        for key, text in texts:
            for piece in (key, text):
                bad = next((ch for ch in piece if _xml_illegal(ch)), None) \
                    if isinstance(piece, str) else None
                if bad is not None:
                    where = f"{name}:{key}" if key else name
                    raise ToolstackError("IllegalXMLChar", f"{where} holds character "
                                         f"U+{ord(bad):04X}, which XML cannot carry", 447)


def uuid_invalid(kind: str, uuid: str) -> ToolstackError:
    return ToolstackError("UUID_INVALID", f"no {kind} with uuid {uuid}")


class Toolstack(Reverts):
    """The toolstack's operations on its database and drivers. VDI.revert
    and VM.revert come from ``Reverts`` (revert.py), built on these."""

    def __init__(self, db: Database, runner: Optional[Runner] = None) -> None:
        self.db = db
        self.runner = runner or Runner()
        # xapi runs each storage call as a subtask of the user's task.
        self.task_ref = new_ref()
        self.server: Optional[XapiServer] = None  # started by the first driver call

    def serve(self) -> None:
        """Serve XenAPI to the drivers from the database (once), as xapi does."""
        if self.server is not None:
            return
        server = XapiServer(self.db.path)
        self.runner.env[XapiServer.SOCKET_ENV] = server.start()
        self.runner.session_ref = server.new_session()
        self.server = server

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
            self.runner.env.pop(XapiServer.SOCKET_ENV, None)

    # Look-ups -----------------------------------------------------------

    def sr(self, uuid: str) -> SRRecord:
        rec = self.db.by_uuid(SRRecord, uuid)
        if rec is None:
            raise uuid_invalid("SR", uuid)
        return rec

    def vdi(self, uuid: str) -> VDIRecord:
        rec = self.db.by_uuid(VDIRecord, uuid)
        if rec is None:
            raise uuid_invalid("VDI", uuid)
        return rec

    def vm(self, uuid: str) -> VMRecord:
        rec = self.db.by_uuid(VMRecord, uuid)
        if rec is None:
            raise uuid_invalid("VM", uuid)
        return rec

    def sr_of(self, vdi: VDIRecord) -> SRRecord:
        rec = self.db.get(SRRecord, vdi.sr_ref)
        if rec is None:  # the foreign key makes this a corrupt database
            raise ToolstackError("HANDLE_INVALID", f"VDI {vdi.uuid} names a missing SR")
        return rec

    def vbds(self, vm: VMRecord) -> "list[VBDRecord]":
        """The VM's VBDs in device order (2 before 10)."""
        found = self.db.select(VBDRecord, vm_ref=vm.ref)
        return sorted(found, key=lambda v: (not v.device.isdigit(), v.device.zfill(8)))

    # Driver calls as xapi makes them ------------------------------------

    def call_sr(self, sr: SRRecord, command: str, **kw: Any) -> Any:
        device_config = dict(sr.device_config)
        device_config.setdefault("SRmaster", "true")  # xapi adds it on the pool master
        kw.setdefault("subtask_of", self.task_ref)
        call = Request(command, device_config=device_config, sr_ref=sr.ref, sr_uuid=sr.uuid, **kw)
        self.serve()
        return self.runner.call(sr.type, call)

    def call_vdi(self, vdi: VDIRecord, command: str, **kw: Any) -> Any:
        # The VDI keys xapi sends with every command about one VDI.
        kw.setdefault("vdi_type", vdi.type)
        kw.setdefault("vdi_on_boot", "persist")
        kw.setdefault("vdi_allow_caching", "false")
        kw.setdefault("local_cache_sr", NULL_REF)
        return self.call_sr(
            self.sr_of(vdi), command,
            vdi_ref=vdi.ref, vdi_uuid=vdi.uuid, vdi_location=vdi.location, **kw,
        )

    def driver_info(self, sr_type: str) -> dict:
        info = self.runner.call(sr_type, Request("sr_get_driver_info", needs_session=False))
        if not isinstance(info, dict) or not isinstance(info.get("capabilities"), list):
            raise ToolstackError(
                "SR_BACKEND_FAILURE", f"{sr_type}: sr_get_driver_info returned no capabilities"
            )
        return info

    @staticmethod
    def can(sr: SRRecord, capability: str) -> bool:
        return capability in sr.capabilities

    # SRs ------------------------------------------------------------------

    def sr_create(
        self,
        sr_type: str,
        device_config: "dict[str, str]",
        name_label: str = "",
        name_description: str = "",
        physical_size: int = 0,
    ) -> SRRecord:
        check_xml_text(name_label=name_label, name_description=name_description,
                       device_config=device_config)
        info = self.driver_info(sr_type)
        sr = SRRecord(
            new_ref(), str(uuidlib.uuid4()), sr_type.lower(), name_label, name_description,
            dict(device_config), list(info["capabilities"]),
        )
        self.call_sr(sr, "sr_create", args=[str(physical_size)])
        self.db.insert(sr)
        try:
            self.call_sr(sr, "sr_attach")
        except ToolstackError as exc:
            # A created SR that cannot be plugged is of no use: take it back.
            try:
                self.call_sr(sr, "sr_delete")
            except ToolstackError as cleanup:
                exc.annotate(f"the SR stays recorded: sr_delete failed: {cleanup}")
                raise exc from None
            self._forget_records(sr)
            raise
        self.sr_scan(sr)
        return sr

    def sr_introduce(
        self,
        sr_type: str,
        uuid: str,
        device_config: "dict[str, str]",
        name_label: str = "",
        name_description: str = "",
    ) -> SRRecord:
        check_xml_text(name_label=name_label, name_description=name_description,
                       device_config=device_config)
        if self.db.by_uuid(SRRecord, uuid) is not None:
            raise ToolstackError("SR_ALREADY_EXISTS", f"SR {uuid} is already known")
        info = self.driver_info(sr_type)
        sr = SRRecord(
            new_ref(), uuid, sr_type.lower(), name_label, name_description,
            dict(device_config), list(info["capabilities"]),
        )
        self.call_sr(sr, "sr_attach")
        self.db.insert(sr)
        self.sr_scan(sr)
        return sr

    def _refuse_if_in_use(self, sr: SRRecord) -> None:
        used = self.db.conn.execute(
            "SELECT vdi.uuid FROM vbd JOIN vdi ON vbd.vdi_ref = vdi.ref WHERE vdi.sr_ref = ?",
            [sr.ref],
        ).fetchall()
        if used:
            raise ToolstackError(
                "SR_HAS_VBDS", f"SR {sr.uuid} has disks used by VMs: {used[0][0]} ..."
            )

    def _forget_records(self, sr: SRRecord) -> None:
        with self.db.transaction():
            for vdi in self.db.select(VDIRecord, sr_ref=sr.ref):
                self.db.delete(vdi)
            self.db.delete(sr)

    def sr_forget(self, sr: SRRecord) -> None:
        self._refuse_if_in_use(sr)
        try:
            self.call_sr(sr, "sr_detach")
        except DriverFault as fault:
            if fault.code != CODE_UNIMPLEMENTED:
                raise
        self._forget_records(sr)

    def sr_destroy(self, sr: SRRecord) -> None:
        self._refuse_if_in_use(sr)
        self.call_sr(sr, "sr_delete")
        self._forget_records(sr)

    def sr_scan(self, sr: SRRecord) -> "list[VDIRecord]":
        """sr_scan: the driver brings the SR's records in line with its disks."""
        self.call_sr(sr, "sr_scan")
        self._drop_dangling_vbds()
        return self.db.select(VDIRecord, sr_ref=sr.ref)

    def _drop_dangling_vbds(self) -> None:
        """Unplug what a driver forgot from VMs, as xapi's database GC does."""
        with self.db.transaction():
            self.db.conn.execute(
                "DELETE FROM vbd WHERE vdi_ref IS NOT NULL AND vdi_ref NOT IN (SELECT ref FROM vdi)"
            )
            self.db.conn.execute(
                "UPDATE vm SET suspend_vdi = NULL WHERE suspend_vdi NOT IN (SELECT ref FROM vdi)"
            )

    # VDIs -----------------------------------------------------------------

    def vdi_create(
        self,
        sr: SRRecord,
        virtual_size: int,
        name_label: str = "",
        name_description: str = "",
        *,
        read_only: bool = False,
        vdi_type: str = "user",
        sm_config: "Optional[dict[str, str]]" = None,
    ) -> VDIRecord:
        check_xml_text(name_label=name_label, name_description=name_description,
                       sm_config=sm_config or {}, type=vdi_type)
        args = [
            str(virtual_size), name_label, name_description,
            NULL_REF,  # metadata_of_pool
            "false", "19700101T00:00:00Z", NULL_REF,  # is_a_snapshot, snapshot_time, snapshot_of
            "true" if read_only else "false",
        ]
        result = self.call_sr(
            sr, "vdi_create", args=args, vdi_sm_config=dict(sm_config or {}), vdi_type=vdi_type
        )
        # As xapi: the driver introduced it; look it up by the uuid returned.
        rec = self.db.by_uuid(VDIRecord, self._result_uuid(result, "vdi_create"))
        if rec is None:
            raise ToolstackError(
                "SR_BACKEND_FAILURE", f"vdi_create: the driver did not introduce {result['uuid']}"
            )
        return rec

    @staticmethod
    def _result_uuid(result: Any, command: str) -> str:
        if not isinstance(result, dict) or not result.get("uuid"):
            raise ToolstackError("SR_BACKEND_FAILURE", f"{command} returned no uuid: {result!r}")
        return str(result["uuid"])

    def _by_location(self, sr_ref: str, result: Any, command: str) -> VDIRecord:
        """The VDI a snapshot or clone made, found as xapi finds it: by location."""
        self._result_uuid(result, command)
        found = self.db.select(VDIRecord, sr_ref=sr_ref, location=str(result.get("location")))
        if not found:
            raise ToolstackError(
                "SR_BACKEND_FAILURE",
                f"{command}: the driver did not introduce location {result.get('location')!r}",
            )
        return found[0]

    def vdi_destroy(self, vdi: VDIRecord) -> None:
        """Delete on the SR, then forget the record and unplug it from VMs."""
        self.call_vdi(vdi, "vdi_delete")
        self._forget_vdi(vdi)

    def _forget_vdi(self, vdi: VDIRecord) -> None:
        with self.db.transaction():
            self.db.conn.execute("DELETE FROM vbd WHERE vdi_ref = ?", [vdi.ref])
            self.db.conn.execute(
                "UPDATE vm SET suspend_vdi = NULL WHERE suspend_vdi = ?", [vdi.ref]
            )
            self.db.delete(vdi)

    def vdi_snapshot(
        self, vdi: VDIRecord, driver_params: "Optional[dict[str, str]]" = None
    ) -> VDIRecord:
        result = self.call_vdi(vdi, "vdi_snapshot", driver_params=dict(driver_params or {}))
        return self._copied(vdi, self._by_location(vdi.sr_ref, result, "vdi_snapshot"),
                            is_a_snapshot=True, snapshot_of=vdi.ref, snapshot_time=now_stamp(),
                            name_label=vdi.name_label, name_description=vdi.name_description)

    def vdi_clone(
        self,
        vdi: VDIRecord,
        driver_params: "Optional[dict[str, str]]" = None,
        *,
        name_label: Optional[str] = None,
        name_description: Optional[str] = None,
    ) -> VDIRecord:
        check_xml_text(name_label=name_label or "", name_description=name_description or "",
                       driver_params=driver_params or {})
        result = self.call_vdi(vdi, "vdi_clone", driver_params=dict(driver_params or {}))
        return self._copied(
            vdi, self._by_location(vdi.sr_ref, result, "vdi_clone"),
            is_a_snapshot=False, snapshot_of=None, snapshot_time="",
            name_label=vdi.name_label if name_label is None else name_label,
            name_description=(
                vdi.name_description if name_description is None else name_description
            ),
        )

    def _copied(self, source: VDIRecord, new: VDIRecord, **fields: Any) -> VDIRecord:
        """What xapi does after a snapshot or clone: its own fields on the new
        record, then vdi_update so that the driver refreshes the rest."""
        new = self.db.update(new, type=source.type, **fields)
        self.call_vdi(new, "vdi_update")
        return self.db.get(VDIRecord, new.ref) or new

    def vdi_resize(self, vdi: VDIRecord, new_size: int) -> VDIRecord:
        self.call_vdi(vdi, "vdi_resize", args=[str(new_size)])
        # As xapi: the size is what the driver recorded.
        return self.vdi_by_ref(vdi.ref)

    def vdi_set(self, vdi: VDIRecord, **fields: Any) -> VDIRecord:
        """Change toolstack-only fields (names); the driver keeps no copy we rely on."""
        check_xml_text(**fields)
        return self.db.update(vdi, **fields)

    # VMs ------------------------------------------------------------------

    def vm_create(
        self,
        name_label: str,
        disks: "list[VDIRecord]",
        *,
        cds: "Optional[list[Optional[VDIRecord]]]" = None,
        name_description: str = "",
    ) -> VMRecord:
        check_xml_text(name_label=name_label, name_description=name_description)
        vm = VMRecord(new_ref(), str(uuidlib.uuid4()), name_label, name_description)
        with self.db.transaction():
            self.db.insert(vm)
            for index, disk in enumerate(disks):
                self.add_vbd(vm, disk.ref, str(index), "disk", "RO" if disk.read_only else "RW")
            # CD drives go after the disks, at xapi's usual device 3 when free.
            next_device = max(len(disks), 3)
            for cd in cds or []:
                self.add_vbd(vm, cd.ref if cd else None, str(next_device), "cd", "RO")
                next_device += 1
        return vm

    def add_vbd(
        self, vm: VMRecord, vdi_ref: Optional[str], device: str, kind: str, mode: str
    ) -> VBDRecord:
        return self.db.insert(
            VBDRecord(new_ref(), str(uuidlib.uuid4()), vm.ref, vdi_ref, device, kind, mode)
        )

    def vm_destroy(self, vm: VMRecord) -> None:
        """Forget the VM and its VBDs; its disks stay (xe vm-destroy)."""
        self.db.delete(vm)

    def vm_snapshot(self, vm: VMRecord, name_label: str = "") -> VMRecord:
        """Snapshot every disk (and the suspend disk); all or none of them."""
        check_xml_text(name_label=name_label)
        if vm.is_a_snapshot:
            raise ToolstackError("VM_IS_SNAPSHOT", f"VM {vm.uuid} is a snapshot")
        taken: dict[str, VDIRecord] = {}
        # Recorded while it runs: a killed snapshot is undone by the next smctl.
        pending = self.db.pending_add(PENDING_VM_SNAPSHOT, {"taken": []})
        disks = [v.vdi_ref for v in self.vbds(vm) if v.type == "disk" and v.vdi_ref]
        try:
            for ref in disks + ([vm.suspend_vdi] if vm.suspend_vdi else []):
                if ref not in taken:
                    taken[ref] = self.vdi_snapshot(self.vdi_by_ref(ref))
                    self.db.pending_set(pending, {"taken": [t.ref for t in taken.values()]})
        except (ToolstackError, KeyboardInterrupt):
            self.discard(list(taken.values()))
            self.db.pending_remove(pending)
            raise
        snap = VMRecord(
            new_ref(), str(uuidlib.uuid4()), name_label or vm.name_label, vm.name_description,
            is_a_snapshot=True, snapshot_of=vm.ref, snapshot_time=now_stamp(),
            suspend_vdi=taken[vm.suspend_vdi].ref if vm.suspend_vdi else None,
        )
        with self.db.transaction():
            self.db.insert(snap)
            for vbd in self.vbds(vm):
                # A CD keeps pointing at the same image, as xapi does.
                disk = taken[vbd.vdi_ref].ref if vbd.type == "disk" and vbd.vdi_ref else vbd.vdi_ref
                self.add_vbd(snap, disk, vbd.device, vbd.type, vbd.mode)
            self.db.pending_remove(pending)
        return snap

    def vdi_by_ref(self, ref: str) -> VDIRecord:
        rec = self.db.get(VDIRecord, ref)
        if rec is None:
            raise ToolstackError("HANDLE_INVALID", f"VDI {ref} is not in the database")
        return rec

    def discard(self, vdis: "list[VDIRecord]") -> "list[str]":
        """Best-effort destroy of VDIs this operation made; returns what failed."""
        failed = []
        for vdi in vdis:
            try:
                self.vdi_destroy(vdi)
            except ToolstackError as exc:
                failed.append(f"{vdi.uuid}: {exc}")
        return failed
