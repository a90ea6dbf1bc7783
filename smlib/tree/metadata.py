"""Per-SR VDI records, kept as one XML document written atomically.

The images are the truth for contents, parents and the hidden flag; the
metadata is the SR's index (so that GC and the tree need not open every
image) plus what only the toolstack knows (names, snapshot links, attach
state). ``sr_scan`` re-derives parents and hidden flags from the images.

Document shape::

    <sr uuid="..." version="1">
      <vdi uuid="..." parent="" hidden="0" empty="0" virtual_size="1073741824"
           name_label="..." name_description="..." read_only="0"
           is_a_snapshot="0" snapshot_of="" snapshot_time="" type="user"
           attached="0" active="0"/>
    </sr>
"""

import xml.etree.ElementTree as ET
from typing import Optional

VERSION = "1"
XML_DECLARATION = b"<?xml version='1.0' encoding='utf-8'?>\n"
_BOOLS = ("hidden", "empty", "read_only", "is_a_snapshot", "attached", "active")
_INTS = ("virtual_size",)


# Field -> default; the order is the order of attributes in the document.
# (A plain class: dataclasses would cost every driver call its import.)
DEFAULTS: dict = {
    "uuid": "",
    "parent": "",  # parent volume's uuid, "" for a root
    "hidden": False,
    "empty": False,  # a base with no allocated block (bases are immutable)
    "virtual_size": 0,
    "name_label": "",
    "name_description": "",
    "read_only": False,
    "is_a_snapshot": False,
    "snapshot_of": "",
    "snapshot_time": "",
    "type": "user",
    "attached": False,
    "active": False,
    # Why the volume cannot be used ("" when it can): sr_scan found its image
    # damaged, its parent missing, or no regular file where it belongs. Such a
    # VDI is listed (so a toolstack can see and delete it) and refused by
    # every other command; GC never touches it. Written only when set.
    "damaged": "",
}


class VolumeRecord:
    """One volume of the SR, a VDI or a hidden base (the toolstack's own VDI
    record is toolstack.db.VDIRecord); attributes are the DEFAULTS keys."""

    __slots__ = tuple(DEFAULTS)

    def __init__(self, **fields) -> None:
        unknown = set(fields) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown VDI record fields {sorted(unknown)}")
        for name, default in DEFAULTS.items():
            setattr(self, name, fields.get(name, default))

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in DEFAULTS}

    @classmethod
    def from_dict(cls, d: dict) -> "VolumeRecord":
        return cls(**{k: v for k, v in d.items() if k in DEFAULTS})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VolumeRecord) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"VolumeRecord({self.to_dict()!r})"


_FIELDS = list(DEFAULTS)


def _attr(rec: VolumeRecord, name: str) -> str:
    value = getattr(rec, name)
    if name in _BOOLS:
        return "1" if value else "0"
    return str(value)


def _value(name: str, text: str):
    if name in _BOOLS:
        return text == "1"
    if name in _INTS:
        return int(text)
    return text


class Metadata:
    """The SR's VDI records by uuid."""

    def __init__(self, sr_uuid: str = "", vdis: "Optional[dict[str, VolumeRecord]]" = None) -> None:
        self.sr_uuid = sr_uuid
        self.vdis: dict[str, VolumeRecord] = vdis if vdis is not None else {}

    @classmethod
    def parse(cls, data: Optional[bytes]) -> "Metadata":
        """Parse a document (None: an SR with no metadata yet)."""
        if not data:
            return cls()
        try:
            root = ET.fromstring(data)
            vdis = {}
            for el in root.iter("vdi"):
                rec = VolumeRecord(
                    **{n: _value(n, el.get(n)) for n in _FIELDS if el.get(n) is not None}
                )
                vdis[rec.uuid] = rec
        except (ET.ParseError, ValueError, TypeError) as e:
            from smlib.protocol.errors import SRError

            raise SRError.from_name("MetadataError", f"SR metadata unreadable: {e}") from None
        return cls(root.get("uuid", ""), vdis)

    def serialise(self) -> bytes:
        root = ET.Element("sr", uuid=self.sr_uuid, version=VERSION)
        for uuid in sorted(self.vdis):
            rec = self.vdis[uuid]
            ET.SubElement(root, "vdi", {n: _attr(rec, n) for n in _FIELDS
                                        if n != "damaged" or rec.damaged})
        # The declaration by hand: tostring's xml_declaration= is 3.8 (dom0: 3.6).
        return XML_DECLARATION + ET.tostring(root, encoding="unicode").encode("utf-8")

    # ---------------------------------------------------------- queries

    def children(self, uuid: str) -> "list[str]":
        return sorted(u for u, r in self.vdis.items() if r.parent == uuid)

    def child_counts(self) -> "dict[str, int]":
        counts: dict[str, int] = {}
        for rec in self.vdis.values():
            if rec.parent:
                counts[rec.parent] = counts.get(rec.parent, 0) + 1
        return counts

    def depth(self, uuid: str) -> int:
        """Images in the chain from ``uuid`` to its root (a root alone is 1)."""
        n = 0
        seen = set()
        while uuid and uuid in self.vdis and uuid not in seen:
            seen.add(uuid)
            n += 1
            uuid = self.vdis[uuid].parent
        return n

    def visible(self) -> "list[VolumeRecord]":
        return [r for r in self.vdis.values() if not r.hidden]
