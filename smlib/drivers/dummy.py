"""DummySR: a stateless SR that answers every command and stores nothing.

It is the framework's end-to-end witness (a real process answering
xapi-shaped calls) and the toolstack's fallback case: it does not implement
vdi_revert, so the answer is Unimplemented (38) and VDI_REVERT is not
advertised, which makes a toolstack revert by clone. Like sm's DummySR it
keeps its VDIs in xapi's database alone: what it makes is introduced, what
it deletes forgotten, what it resizes updated (smlib/xapi/db.py).
"""

from smlib.protocol.sr import SR, attach_info, vdi_info


def _new_uuid() -> str:
    import uuid  # only the commands that mint a VDI pay for it

    return str(uuid.uuid4())


class DummySR(SR):
    DRIVER_INFO = {
        "name": "Dummy",
        "description": "SR plugin which manages fake data",
        "vendor": "smlib",
        "copyright": "(C) smlib authors, LGPL-2.1",
        "driver_version": "1.0",
        "required_api_version": "1.0",
        "configuration": [],
    }
    CONTENT_TYPE = "phy"  # as sm's DummySR

    def sr_create(self) -> None:
        return None

    def sr_delete(self) -> None:
        return None

    def sr_attach(self) -> None:
        return None

    def sr_detach(self) -> None:
        return None

    def sr_scan(self) -> None:
        return None

    def sr_probe(self) -> str:
        # sm answers a probe with an XML list of the SRs found: none here.
        return '<?xml version="1.0" ?>\n<SRlist/>\n'

    def sr_update(self) -> None:
        return None

    def vdi_create(self) -> dict:
        size = self.call.size_arg(0, "virtual size")
        args = self.call.args + [""] * 8
        # xapi sends vdi_uuid with vdi_create only when it chose the uuid.
        uuid = self.call.vdi_uuid or _new_uuid()
        self._tell(introduce=self._facts(
            uuid, uuid, size, name_label=args[1], name_description=args[2],
            metadata_of_pool=args[3], is_a_snapshot=args[4] == "true", snapshot_time=args[5],
            snapshot_of=args[6], read_only=args[7] == "true", type=self.call.vdi_type or "user"))
        return vdi_info(uuid, uuid)

    def vdi_delete(self) -> None:
        self._tell(forget=self.call.vdi_uuid)
        return None

    def vdi_attach(self) -> dict:
        # No data and no server: sm's params_nbd for a disk without a tapdisk.
        return attach_info("/dev/null", params_nbd="")

    def vdi_detach(self) -> None:
        return None

    def vdi_activate(self) -> None:
        return None

    def vdi_deactivate(self) -> None:
        return None

    def vdi_clone(self) -> dict:
        return self._copy(read_only=False)

    def vdi_snapshot(self) -> dict:
        return self._copy(read_only=True)

    def vdi_resize(self) -> dict:
        size = self.call.size_arg(0, "new virtual size")
        uuid, location = self.call.vdi_uuid or "", self.call.vdi_location or ""
        self._tell(update=self._facts(uuid, location, size))
        return vdi_info(uuid, location)

    def vdi_introduce(self) -> dict:
        uuid, location = self.call.new_uuid or "", self.call.vdi_location or ""
        self._tell(introduce=self._facts(uuid, location, 0))
        return vdi_info(uuid, location)

    # ------------------------------------------------- xapi's database

    def _copy(self, read_only: bool) -> dict:
        from smlib.xapi import db

        # Nothing here knows the source's size: xapi's record does.
        size = db.virtual_size(self.call, type(self).__name__) or 0
        uuid = _new_uuid()
        self._tell(introduce=self._facts(uuid, uuid, size, read_only=read_only))
        return vdi_info(uuid, uuid)

    @staticmethod
    def _facts(uuid: str, location: str, size: int, **fields):
        from smlib.xapi.db import VDIFacts

        # sm's DummySR: the utilisation is the size.
        return VDIFacts(uuid, location, virtual_size=size, physical_utilisation=size, **fields)

    def _tell(self, introduce=None, forget: "str | None" = None, update=None) -> None:
        from smlib.xapi import db

        changes = db.Changes()
        changes.introduced = [introduce] if introduce else []
        changes.forgotten = [forget] if forget else []
        changes.updated = [update] if update else []
        db.tell(self.call, changes, type(self).__name__)

    def vdi_update(self) -> None:
        return None
