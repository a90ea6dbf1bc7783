"""Serving an active VDI: pick the backend, start, find, pause, stop, forget.

The SR's commands call these (smlib/drivers/tree_sr.py): attach answers
``attach_result``, activate ``start``, deactivate ``stop``, detach
``forget``; a command that changes the tree pauses the SR's servers
around its work (``paused``). The backend is tapdisk where blktap's
tap-ctl is installed (a Xen host, as stock sm), nbdkit elsewhere, none
(logged) where neither is installed;
``$SMLIB_DATAPATH`` = ``tapdisk`` | ``nbdkit`` forces one, ``none``
serves nothing (tests under pyfakefs, where no process can start). Every call is
idempotent, and a server or socket a crash left behind is found and
replaced.
"""

import os
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional

from smlib import config

from . import paths, record

SERVER_KEYS = ("backend", "pid", "socket", "leaf", "readonly")


def backend() -> str:
    chosen = config.datapath_backend()
    if chosen in ("tapdisk", "nbdkit", "none"):
        return chosen
    from . import nbdkit, tapdisk

    if tapdisk.binary():
        return "tapdisk"
    # Neither server installed (a bare development machine): the disk is not
    # served, which start() logs; the VHD files stay usable as files
    # (smctl's import and export read them directly).
    return "nbdkit" if nbdkit.binary() else "none"


def xenstore_data(vdi_uuid: str, storage_type: str) -> "Dict[str, str]":
    """What sm puts in xenstore for a VHD disk: the uuid, synthetic SCSI
    inquiry pages 0x80 (serial: the uuid's first 16 characters) and 0x83
    (vendor XENSRC, the uuid), base64; the storage type."""
    import base64

    page80 = b"\x00\x80\x00\x12" + vdi_uuid[:16].encode() + b"  "
    page83 = b"\x00\x83\x00\x31\x02\x01\x00\x2d" + b"XENSRC  " + vdi_uuid.encode() + b" "
    data = {"vdi-uuid": vdi_uuid,
            "scsi/0x12/0x80": base64.b64encode(page80).decode(),
            "scsi/0x12/0x83": base64.b64encode(page83).decode(),
            "storage-type": storage_type}
    if storage_type == "lvm":
        data["vdi-type"] = "vhd"
    return data


def attach_result(sr_uuid: str, vdi_uuid: str, params: str, storage_type: str) -> dict:
    """vdi_attach's struct: sm's params_nbd, o_direct, o_direct_reason and
    xenstore_data, plus ``params`` (the leaf's path, for tools that read
    the VHD themselves)."""
    # sm: o_direct unless the SR is nfs/ext/smb; file and lvm SRs are not.
    return {"params": params,
            "params_nbd": paths.params_nbd(sr_uuid, vdi_uuid),
            "o_direct": True,
            "o_direct_reason": "SR_NOT_SUPPORTED",
            "xenstore_data": xenstore_data(vdi_uuid, storage_type)}


def note_mode(sr_uuid: str, vdi_uuid: str, writable: bool) -> None:
    """Remember how the VDI was attached (vdi_activate may come without a mode)."""
    base = paths.state_base(sr_uuid, vdi_uuid)
    rec = record.read(base) or {}
    rec["mode"] = "rw" if writable else "ro"
    record.write(base, rec)


def attached_writable(sr_uuid: str, vdi_uuid: str) -> bool:
    """The mode noted at attach; writable when none was."""
    rec = record.read(paths.state_base(sr_uuid, vdi_uuid)) or {}
    return rec.get("mode", "rw") == "rw"


def find(sr_uuid: str, vdi_uuid: str) -> "Optional[Dict[str, str]]":
    """The record of a server that still serves this VDI, else None."""
    rec = record.read(paths.state_base(sr_uuid, vdi_uuid))
    if rec is None or "backend" not in rec:
        return None
    if rec["backend"] == "nbdkit":
        from . import nbdkit

        return rec if nbdkit.alive(rec) else None
    return rec


def _save(base: str, rec: "Optional[Dict[str, str]]", server: "Dict[str, str]") -> None:
    kept = {k: v for k, v in (rec or {}).items() if k not in SERVER_KEYS}
    kept.update(server)
    record.write(base, kept)


def start(sr_uuid: str, vdi_uuid: str, chain: "List[str]", readonly: bool) -> None:
    """Serve ``chain`` (leaf first) at the VDI's NBD link."""
    link = paths.nbd_link(sr_uuid, vdi_uuid)
    base = paths.state_base(sr_uuid, vdi_uuid)
    rec = record.read(base)
    flag = "1" if readonly else "0"
    kind = backend()    # one PATH search for tap-ctl and nbdkit per start
    if kind == "none":
        if config.datapath_backend() != "none":
            from smlib.protocol import log

            log.write("datapath", f"VDI {vdi_uuid} is not served over NBD: neither tap-ctl"
                      " nor nbdkit is installed")
        return
    if kind == "tapdisk":
        from . import tapdisk

        tapdisk.start(link, chain[0], readonly)
        _save(base, rec, {"backend": "tapdisk", "leaf": chain[0], "readonly": flag})
        return
    from . import nbdkit

    if rec is not None and rec.get("backend") == "nbdkit":
        same = rec.get("leaf") == chain[0] and rec.get("readonly") == flag
        if same and nbdkit.alive(rec) and os.path.exists(rec["socket"]):
            paths.make_link(link, rec["socket"])          # repeated activate
            return
        _stop_nbdkit(base, rec)                            # stale, or another mode
    paths.remove(link)
    server = nbdkit.start(base, vdi_uuid, chain, readonly)
    _save(base, rec, server)
    paths.make_link(link, server["socket"])


def stop(sr_uuid: str, vdi_uuid: str) -> None:
    """Flush and stop the VDI's server, remove its link; nothing if none."""
    link = paths.nbd_link(sr_uuid, vdi_uuid)
    base = paths.state_base(sr_uuid, vdi_uuid)
    rec = record.read(base)
    kind = (rec or {}).get("backend")
    if kind == "tapdisk" or (kind is None and backend() == "tapdisk"):
        from . import tapdisk

        tapdisk.stop(link)
    elif kind == "nbdkit":
        paths.remove(link)      # no new client finds a server going away
        _stop_nbdkit(base, rec or {})
    paths.remove(link)
    if rec is not None and kind is not None:
        _save(base, rec, {})


def _stop_nbdkit(base: str, rec: "Dict[str, str]") -> None:
    from . import nbdkit

    nbdkit.stop(base, rec)
    leaf = rec.get("leaf")
    if leaf and rec.get("readonly") != "1":
        _fsync(leaf)       # durable even when the server had to be killed


def _fsync(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def forget(sr_uuid: str, vdi_uuid: str) -> None:
    """Detach: whatever attach or activate left for this VDI goes."""
    stop(sr_uuid, vdi_uuid)
    base = paths.state_base(sr_uuid, vdi_uuid)
    record.remove(base)
    for suffix in (".sock", ".pid", ".ctl", ".log"):
        paths.remove(base + suffix)
    for d in (os.path.dirname(base), os.path.dirname(paths.nbd_link(sr_uuid, vdi_uuid))):
        try:
            os.rmdir(d)              # only when empty: other VDIs of the SR keep theirs
        except OSError:
            pass


def served(sr_uuid: str) -> "List[str]":
    """VDIs of the SR with a running server."""
    base = os.path.dirname(paths.state_base(sr_uuid, "x"))
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    return sorted(n[:-len(".state")] for n in names
                  if n.endswith(".state") and find(sr_uuid, n[:-len(".state")]) is not None)


@contextmanager
def paused(sr_uuid: str, chain_of: "Callable[[str], Optional[List[str]]]") -> Iterator[None]:
    """Hold every server of the SR between requests while the tree changes
    under it (a snapshot renames the leaf, GC relinks and removes bases);
    afterwards each goes on with the chain ``chain_of(vdi)`` gives."""
    held = []
    try:
        for vdi in served(sr_uuid):
            rec = find(sr_uuid, vdi) or {}
            if rec.get("backend") == "tapdisk":
                from . import tapdisk

                handle = tapdisk.pause(paths.nbd_link(sr_uuid, vdi))
                if handle is not None:
                    held.append((vdi, "tapdisk", handle))
            else:
                from . import nbdkit

                held.append((vdi, "nbdkit", nbdkit.pause(paths.state_base(sr_uuid, vdi))))
        yield
    finally:
        for vdi, kind, handle in held:
            chain = chain_of(vdi)
            if kind == "tapdisk":
                from . import tapdisk

                if chain:
                    tapdisk.unpause(handle, chain[0])
            else:
                from . import nbdkit

                nbdkit.resume(handle, chain)
