"""vdi import / export of raw images, through the driver as a toolstack does it.

attach (+ activate when the SR has it) gives the path of the disk's VHD;
the bytes go through the VHD library's chain reader / leaf writer; then
deactivate and detach, also on error.
"""

import contextlib
import os
from typing import Iterator, Optional

from smlib.toolstack.db import VDIRecord
from smlib.toolstack.ops import Progress, Toolstack
from smlib.toolstack.runner import ToolstackError

CHUNK = 2 * 1024 * 1024  # one VHD block: writes stay block-aligned


@contextlib.contextmanager
def attached(ts: Toolstack, vdi: VDIRecord, writable: bool) -> Iterator[str]:
    """The VHD path of an attached, activated VDI; detached again on exit."""
    sr = ts.sr_of(vdi)
    if not ts.can(sr, "VDI_ATTACH"):
        raise ToolstackError(
            "SR_OPERATION_NOT_SUPPORTED", f"SR {sr.uuid} ({sr.type}) cannot attach disks"
        )
    flag = "true" if writable else "false"
    result = ts.call_vdi(vdi, "vdi_attach", args=[flag])
    try:
        activated = False
        if ts.can(sr, "VDI_ACTIVATE"):
            ts.call_vdi(vdi, "vdi_activate", args=[flag])
            activated = True
        try:
            path = result.get("params") if isinstance(result, dict) else None
            if not path:
                raise ToolstackError(
                    "SR_BACKEND_FAILURE", f"vdi_attach of {vdi.uuid} returned no params path"
                )
            yield str(path)
        finally:
            if activated:
                ts.call_vdi(vdi, "vdi_deactivate")
    finally:
        ts.call_vdi(vdi, "vdi_detach")


def _vhd_error(exc: Exception, vdi: VDIRecord) -> ToolstackError:
    return ToolstackError("VDI_IO_ERROR", f"VDI {vdi.uuid}: {exc}")


def vdi_import(
    ts: Toolstack, vdi: VDIRecord, filename: str, progress: Optional[Progress] = None
) -> int:
    """Write a raw image into the disk from offset 0; returns bytes imported."""
    from smlib import vhd

    try:
        total = os.path.getsize(filename)
    except OSError as exc:
        raise ToolstackError("FILE_NOT_FOUND", f"{filename}: {exc.strerror}") from None
    if total > vdi.virtual_size:
        raise ToolstackError(
            "VDI_TOO_SMALL",
            f"{filename} holds {total} bytes; VDI {vdi.uuid} has {vdi.virtual_size}",
        )
    if vdi.read_only:
        raise ToolstackError("VDI_READONLY", f"VDI {vdi.uuid} is read-only")
    done = 0
    with open(filename, "rb") as src, attached(ts, vdi, writable=True) as path:
        try:
            with vhd.open_image(path, writable=True) as image:
                while done < total:
                    data = src.read(min(CHUNK, total - done))
                    if not data:
                        break
                    # Skip what the chain already holds: zeros over an empty
                    # parent stay unallocated, and a parent's equal block is
                    # not copied up.
                    if image.read(done, len(data)) != data:
                        image.write(done, data)
                    done += len(data)
                    if progress:
                        progress(done, total)
        except vhd.VHDError as exc:
            raise _vhd_error(exc, vdi) from None
    return done


def vdi_export(
    ts: Toolstack, vdi: VDIRecord, filename: str, progress: Optional[Progress] = None
) -> int:
    """Write the disk's whole contents, through its chain, to a raw file."""
    from smlib import vhd

    done = 0
    with attached(ts, vdi, writable=False) as path:
        created = False
        try:
            with vhd.open_image(path) as image, open(filename, "wb") as out:
                created = True
                total = image.virtual_size
                while done < total:
                    length = min(CHUNK, total - done)
                    data = image.read(done, length)
                    if data.count(0) == len(data):
                        out.seek(length, os.SEEK_CUR)  # keep the raw file sparse
                    else:
                        out.write(data)
                    done += length
                    if progress:
                        progress(done, total)
                out.truncate(done)
        except BaseException as exc:
            # No half-written image left behind to be mistaken for an export.
            if created:
                os.remove(filename)
            if isinstance(exc, vhd.VHDError):
                raise _vhd_error(exc, vdi) from None
            raise
    return done
