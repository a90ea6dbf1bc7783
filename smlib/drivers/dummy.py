"""DummySR: a stateless SR that answers every command and stores nothing.

It is the framework's end-to-end witness (a real process answering
xapi-shaped calls) and the toolstack's fallback case: it does not implement
vdi_revert, so the answer is Unimplemented (38) and VDI_REVERT is not
advertised, which makes a toolstack revert by clone.
"""

from smlib.protocol.errors import SRError
from smlib.protocol.sr import SR, attach_info, vdi_info


def _new_uuid() -> str:
    import uuid  # only the commands that mint a VDI pay for it

    return str(uuid.uuid4())


def _size(text: str) -> int:
    if not text or not all("0" <= c <= "9" for c in text):
        raise SRError.from_name("VDISize", opterr=f"size {text!r} is not a byte count")
    return int(text)


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
        _size(self.call.arg(0, "virtual size"))
        # xapi sends vdi_uuid with vdi_create only when it chose the uuid.
        uuid = self.call.vdi_uuid or _new_uuid()
        return vdi_info(uuid, uuid)

    def vdi_delete(self) -> None:
        return None

    def vdi_attach(self) -> dict:
        return attach_info("/dev/null")

    def vdi_detach(self) -> None:
        return None

    def vdi_activate(self) -> None:
        return None

    def vdi_deactivate(self) -> None:
        return None

    def vdi_clone(self) -> dict:
        uuid = _new_uuid()
        return vdi_info(uuid, uuid)

    def vdi_snapshot(self) -> dict:
        uuid = _new_uuid()
        return vdi_info(uuid, uuid)

    def vdi_resize(self) -> dict:
        _size(self.call.arg(0, "new virtual size"))
        return vdi_info(self.call.vdi_uuid or "", self.call.vdi_location or "")

    def vdi_introduce(self) -> dict:
        return vdi_info(self.call.new_uuid or "", self.call.vdi_location or "")

    def vdi_update(self) -> None:
        return None
