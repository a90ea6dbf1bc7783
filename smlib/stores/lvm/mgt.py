"""The bookkeeping inside the LVM SR's ``MGT`` volume: metadata + journal.

A raw LV offers no atomic rename, so the whole bookkeeping state (the SR
metadata document and every journal record) is written as one blob into
one of two slots, alternating; each slot carries a generation number and a
SHA-256 over (SR uuid, generation, payload). A reader takes the valid slot
with the highest generation, so a torn write leaves the previous state.
Stale bytes of an earlier SR on the same disk never validate (other uuid).

Slot layout (slot ``i`` starts at ``i * slot_size``)::

    0   8  magic  b"SMLIBMGT"
    8   4  format version (1)
    12  4  reserved (0)
    16  8  generation
    24  8  payload length
    32 32  sha256(sr_uuid || generation || length || payload)
    4096   payload

Payload: records, each ``kind u8 | key_len u16 | key | data_len u32 | data``
(big-endian); kind 1 = metadata (empty key), kind 2 = journal record.
"""

import os
import struct
from typing import Optional

from smlib.protocol.errors import SRError

MAGIC = b"SMLIBMGT"
# Stock sm's MGT (libs/sm/srmetadata.py) starts with a 512-byte header
# sector "XSSM:<used length>:<major>:<minor>", padded with spaces.
STOCK_MAGIC = b"XSSM:"
VERSION = 1
SLOTS = 2
S_MAGIC = 0
S_VERSION = 8
S_GENERATION = 16
S_LENGTH = 24
S_DIGEST = 32
SLOT_HEADER = struct.Struct(">8sII QQ 32s")
PAYLOAD_OFFSET = 4096

REC_METADATA = 1
REC_JOURNAL = 2
REC_HEAD = struct.Struct(">BH")
REC_LEN = struct.Struct(">I")


class State:
    """The bookkeeping of one generation (a plain class: dataclasses costs
    every driver call ~5 ms of import)."""

    __slots__ = ("metadata", "journal", "generation")

    def __init__(self, metadata: Optional[bytes] = None,
                 journal: "Optional[dict[str, bytes]]" = None, generation: int = 0) -> None:
        self.metadata = metadata
        self.journal = journal if journal is not None else {}
        self.generation = generation


def _digest(sr_uuid: str, generation: int, payload: bytes) -> bytes:
    import hashlib  # deferred: ~2 ms of import that sr_get_driver_info skips

    h = hashlib.sha256(sr_uuid.encode())
    h.update(struct.pack(">QQ", generation, len(payload)))
    h.update(payload)
    return h.digest()


def pack_payload(state: State) -> bytes:
    out = bytearray()
    records = [] if state.metadata is None else [(REC_METADATA, "", state.metadata)]
    records += [(REC_JOURNAL, key, data) for key, data in sorted(state.journal.items())]
    for kind, key, data in records:
        raw_key = key.encode()
        out += REC_HEAD.pack(kind, len(raw_key)) + raw_key + REC_LEN.pack(len(data)) + data
    return bytes(out)


def unpack_payload(payload: bytes, generation: int) -> State:
    state = State(generation=generation)
    pos = 0
    while pos < len(payload):
        kind, key_len = REC_HEAD.unpack_from(payload, pos)
        pos += REC_HEAD.size
        key = payload[pos:pos + key_len].decode()
        pos += key_len
        (data_len,) = REC_LEN.unpack_from(payload, pos)
        pos += REC_LEN.size
        data = payload[pos:pos + data_len]
        pos += data_len
        if kind == REC_METADATA:
            state.metadata = data
        elif kind == REC_JOURNAL:
            state.journal[key] = data
        else:
            raise SRError.from_name("MetadataError", f"MGT: unknown record kind {kind}")
    return state


def _read_slot(f, slot: int, slot_size: int, sr_uuid: str) -> Optional[State]:
    f.seek(slot * slot_size)
    head = f.read(SLOT_HEADER.size)
    if len(head) < SLOT_HEADER.size:
        return None
    magic, version, _, generation, length, digest = SLOT_HEADER.unpack(head)
    if magic != MAGIC or version != VERSION or length > slot_size - PAYLOAD_OFFSET:
        return None
    f.seek(slot * slot_size + PAYLOAD_OFFSET)
    payload = f.read(length)
    if len(payload) != length or _digest(sr_uuid, generation, payload) != digest:
        return None  # torn write or another SR's leftovers
    return unpack_payload(payload, generation)


def load(path: str, size: int, sr_uuid: str) -> State:
    """The newest valid state in the MGT container at ``path``: an empty
    state when no slot is valid but every slot header is ours or zero (a
    freshly formatted MGT, or a torn first write). Anything else is another
    program's MGT (stock sm's LVHD, most often): MetadataError, before any
    command could write to it."""
    slot_size = size // SLOTS
    with open(path, "rb") as f:
        states = [s for s in (_read_slot(f, i, slot_size, sr_uuid) for i in range(SLOTS)) if s]
        if states:
            return max(states, key=lambda s: s.generation)
        heads = []
        for slot in range(SLOTS):
            f.seek(slot * slot_size)
            heads.append(f.read(SLOT_HEADER.size))
    if all(h[:len(MAGIC)] == MAGIC or not h.strip(b"\0") for h in heads):
        return State()
    if heads[0][:len(STOCK_MAGIC)] == STOCK_MAGIC:
        why = (f"the MGT volume of SR {sr_uuid} holds the stock storage manager's metadata"
               " (an LVHD SR made by sm)")
    else:
        why = f"the MGT volume of SR {sr_uuid} holds data smlib did not write"
    raise SRError.from_name(
        "MetadataError",
        f"{why}: smlib's LVMSR did not create this SR and changes nothing on it;"
        " use the host's own LVHD driver",
    )


def save(path: str, size: int, sr_uuid: str, state: State) -> None:
    """Write ``state`` as the next generation into the older slot, durably.
    Updates ``state.generation``."""
    slot_size = size // SLOTS
    payload = pack_payload(state)
    if len(payload) > slot_size - PAYLOAD_OFFSET:
        raise SRError.from_name("MetadataError",
                                f"MGT full: {len(payload)} bytes of bookkeeping do not fit")
    generation = state.generation + 1
    head = SLOT_HEADER.pack(MAGIC, VERSION, 0, generation, len(payload),
                            _digest(sr_uuid, generation, payload))
    slot = generation % SLOTS
    with open(path, "r+b", buffering=0) as f:
        f.seek(slot * slot_size + PAYLOAD_OFFSET)
        f.write(payload)
        os.fsync(f.fileno())
        # The header last: until it lands, the slot does not validate.
        f.seek(slot * slot_size)
        f.write(head)
        os.fsync(f.fileno())
    state.generation = generation


def format_container(path: str, size: int) -> None:
    """Invalidate both slots (an LV is created without zeroing)."""
    slot_size = size // SLOTS
    with open(path, "r+b", buffering=0) as f:
        for slot in range(SLOTS):
            f.seek(slot * slot_size)
            f.write(bytes(SLOT_HEADER.size))
        os.fsync(f.fileno())
