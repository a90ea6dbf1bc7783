"""vdi import / export / copy, raw or VHD, through the driver as a toolstack does it.

attach (+ activate when the SR has it) gives the path of the disk's VHD;
the bytes go through the VHD library: the chain reader, the leaf writer,
and a new dynamic image for a VHD export. Then deactivate and detach, also
on error.

- Import writes what the image holds from offset 0: a raw file's bytes, a
  VHD's allocated sectors. Elsewhere (past a short raw file, a VHD's
  unallocated blocks) the disk keeps its bytes, as xe does and as a delta
  VHD needs; ``exact=True`` makes those places read as zeros instead. An
  image is checked whole before the disk is touched; with ``rollback=True``
  (smctl's way), where the SR can snapshot and revert in place, an import
  that fails or is interrupted part way is reverted to a snapshot taken first.
- Export writes a temporary file beside the target and renames it over the
  target only when complete: an existing file is replaced whole or not at
  all (and only with force). ``base=`` (VHD only) writes just the blocks
  whose contents differ from the base disk's, as xe's delta export does.
"""

import contextlib
import os
import signal
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Set, Tuple

from smlib.toolstack.db import PENDING_VDI_IMPORT, SRRecord, VDIRecord
from smlib.toolstack.ops import Progress, Toolstack
from smlib.toolstack.runner import ToolstackError
from smlib.toolstack.sources import BLOCK, check_format, open_source

if TYPE_CHECKING:  # imported where used: the VHD library is not needed to list or revert
    from smlib.vhd import Image


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
    what = getattr(exc, "what", str(exc))  # VHDError.what has no internal path
    return ToolstackError("VDI_IO_ERROR", f"VDI {vdi.uuid}: {what}")


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Clean-up that a second Ctrl-C must not cut short (and that the
    drivers it runs, which inherit the disposition, finish too)."""
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to defer
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


# Chains: which blocks may hold data -------------------------------------


def _chain_blocks(image: "Image") -> "List[Tuple[str, Set[int]]]":
    """(real path, allocated blocks) of each image of a chain, leaf first."""
    found = []
    img = image
    while img is not None:
        found.append((os.path.realpath(img.path), set(img.allocated_blocks())))
        img = img.parent()
    return found


def _any_blocks(chain: "List[Tuple[str, Set[int]]]") -> Set[int]:
    blocks: Set[int] = set()
    for _path, own in chain:
        blocks |= own
    return blocks


# Import ----------------------------------------------------------------


@contextlib.contextmanager
def rollback_point(ts: Toolstack, vdi: VDIRecord) -> Iterator[None]:
    """A snapshot of the disk to revert to in place if the body does not finish.

    Only where the SR can snapshot and revert in place: elsewhere an
    interrupted import leaves the disk part-written. The step reached is
    kept in the database (a ``vdi_import`` pending record), so the next
    smctl finishes what a killed one left: before the import completed it
    reverts, after it only deletes the snapshot (finish_vdi_import).
    """
    sr = ts.sr_of(vdi)
    if not (ts.can(sr, "VDI_SNAPSHOT") and ts.can(sr, "VDI_REVERT")):
        yield
        return
    pending = ts.db.pending_add(PENDING_VDI_IMPORT, {"disk": vdi.ref})
    try:
        snap = ts.vdi_snapshot(vdi)
    except BaseException:
        ts.db.pending_remove(pending)
        raise
    ts.db.pending_set(pending, {"disk": vdi.ref, "snapshot": snap.ref})
    try:
        yield
    except BaseException as exc:
        with _sigint_deferred():
            try:
                ts.vdi_revert(snap)
            except ToolstackError as undo:
                note = f"rollback failed: {undo}; the disk's old contents are in snapshot" \
                       f" {snap.uuid}"
                if isinstance(exc, ToolstackError):
                    exc.annotate(note)
                    raise
                raise ToolstackError("VDI_IO_ERROR", f"interrupted; {note}") from None
            ts.discard([snap])
            ts.db.pending_remove(pending)
        raise
    # The point of no return: from here the import stands, whatever happens.
    ts.db.pending_set(pending, {"disk": vdi.ref, "snapshot": snap.ref, "done": True})
    with _sigint_deferred():
        ts.discard([snap])
        ts.db.pending_remove(pending)


def finish_vdi_import(ts: Toolstack, body: dict) -> str:
    """What a killed smctl's import left: roll back (or only tidy up once it was done)."""
    disk = ts.db.get(VDIRecord, body.get("disk") or "")
    snap = ts.db.get(VDIRecord, body.get("snapshot") or "")
    outcome = "nothing to do"
    if snap is not None and disk is not None and not body.get("done"):
        # The killed import never detached the disk: a revert refuses an attached one.
        for command in ("vdi_deactivate", "vdi_detach"):
            with contextlib.suppress(ToolstackError):
                ts.call_vdi(disk, command)
        ts.vdi_revert(snap)
        outcome = "rolled back"
    elif body.get("done"):
        outcome = "completed"
    if snap is not None:
        failed = ts.discard([snap])
        if failed:
            raise ToolstackError("VDI_IO_ERROR", "; ".join(failed))
    return outcome


def _zero_uncovered(image: "Image", covered: "List[Tuple[int, int]]", size: int,
                    blocks: Set[int]) -> None:
    """Write zeros where the chain holds data and the image gave none."""
    gaps = []
    at = 0
    for start, end in covered + [(size, size)]:
        if start > at:
            gaps.append((at, min(start, size)))
        at = max(at, end)
    for start, end in gaps:
        pos = start
        while pos < end:
            block = pos // BLOCK
            stop = min(end, (block + 1) * BLOCK)
            if block in blocks:
                length = stop - pos
                if image.read(pos, length).count(0) != length:
                    image.write(pos, bytes(length))
            pos = stop


def vdi_import(ts: Toolstack, vdi: VDIRecord, filename: str,
               progress: Optional[Progress] = None, *, fmt: str = "raw",
               exact: bool = False, rollback: bool = False) -> int:
    """Write an image into the disk (see the module doc); returns bytes read from it.

    rollback: take a snapshot first and revert to it if the import does not
    finish (smctl does; costs a snapshot, a delete and their GC).
    """
    from smlib import vhd

    if vdi.read_only:
        raise ToolstackError("VDI_READONLY", f"VDI {vdi.uuid} is read-only")
    source = open_source(filename, fmt)
    try:
        if source.virtual_size > vdi.virtual_size:
            past = [e for s, e in source.covered() if e > vdi.virtual_size]
            # qemu-img rounds a VHD's size up to a CHS geometry: a few sectors
            # with no data past the disk's end are no reason to refuse.
            if fmt == "raw" or past:
                raise ToolstackError(
                    "VDI_TOO_SMALL", f"{filename} holds {source.virtual_size} bytes;"
                    f" VDI {vdi.uuid} has {vdi.virtual_size}")
        total, done = source.data_bytes, 0
        guard = rollback_point(ts, vdi) if rollback else contextlib.ExitStack()
        with guard, attached(ts, vdi, writable=True) as path:
            try:
                with vhd.open_image(path, writable=True) as image:
                    blocks = _any_blocks(_chain_blocks(image)) if exact else set()
                    for offset, data in source.extents():
                        # Skip what the chain already holds: zeros over an empty
                        # parent stay unallocated, a parent's equal block is not
                        # copied up.
                        if image.read(offset, len(data)) != data:
                            image.write(offset, data)
                        done += len(data)
                        if progress:
                            progress(done, total)
                    if exact:
                        _zero_uncovered(image, source.covered(), vdi.virtual_size, blocks)
                    if progress and not total:
                        progress(0, 0)
            except vhd.VHDError as exc:
                raise _vhd_error(exc, vdi) from None
    finally:
        source.close()
    return done


# Export ----------------------------------------------------------------


def _temp_beside(filename: str) -> str:
    import tempfile

    directory = os.path.dirname(os.path.abspath(filename))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(filename)}.", suffix=".part",
                               dir=directory)
    os.close(fd)
    # mkstemp makes it 0600: give the export the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def _check_target(filename: str, force: bool) -> None:
    directory = os.path.dirname(os.path.abspath(filename))
    if not os.path.isdir(directory):
        raise ToolstackError("EXPORT_PATH_INVALID", f"{filename}: no such directory {directory}")
    if os.path.isdir(filename):
        raise ToolstackError("EXPORT_PATH_INVALID", f"{filename} is a directory")
    if os.path.lexists(filename) and not force:
        raise ToolstackError(
            "FILE_ALREADY_EXISTS", f"{filename} exists; give force=true to replace it")


def _refuse_sr_storage(ts: Toolstack, filename: str) -> None:
    """An export never lands in an SR's own storage (its directory, or one
    of its devices): written over an SR's metadata or a volume, it would
    break the SR, whatever force= says."""
    target = os.path.realpath(filename)
    for sr in ts.db.select(SRRecord):
        places = [sr.device_config.get("location", "")]
        places += sr.device_config.get("device", "").split(",")
        for place in filter(None, (p.strip() for p in places)):
            real = os.path.realpath(place)
            if target == real or target.startswith(real.rstrip(os.sep) + os.sep):
                raise ToolstackError("EXPORT_PATH_INVALID",
                                     f"{filename} is inside SR {sr.uuid}'s storage ({place})")


def _write_raw(out_path: str, read: Callable[[int, int], bytes], size: int,
               blocks: Set[int], step: Callable[[int], None]) -> None:
    with open(out_path, "wb") as out:
        for block in range(-(-size // BLOCK)):
            offset = block * BLOCK
            length = min(BLOCK, size - offset)
            data = read(offset, length) if block in blocks else None
            if data is not None and data.count(0) != len(data):
                out.seek(offset)
                out.write(data)
            step(offset + length)
        out.truncate(size)  # the raw file stays sparse where the disk is zero
        out.flush()
        os.fsync(out.fileno())


def _write_vhd(out_path: str, read: Callable[[int, int], bytes], size: int,
               blocks: Set[int], differs: Optional[Callable[[int, int, bytes], bool]],
               step: Callable[[int], None]) -> None:
    from smlib import vhd

    vhd.create(out_path, size)
    with vhd.open_image(out_path, writable=True) as out:
        for block in range(-(-size // BLOCK)):
            offset = block * BLOCK
            length = min(BLOCK, size - offset)
            if block in blocks:
                data = read(offset, length)
                # A full export leaves zero blocks unallocated (they read as
                # zeros); a delta writes every block that differs, zeros too.
                wanted = differs(offset, length, data) if differs else (
                    data.count(0) != len(data))
                if wanted:
                    out.write(offset, data)
            step(offset + length)


def vdi_export(ts: Toolstack, vdi: VDIRecord, filename: str,
               progress: Optional[Progress] = None, *, fmt: str = "raw",
               base: Optional[VDIRecord] = None, force: bool = False) -> int:
    """Write the disk's contents (or, with base, its difference) to filename."""
    from smlib import vhd

    check_format(fmt)
    if base is not None and fmt != "vhd":
        raise ToolstackError("FORMAT_UNKNOWN", "base= needs format=vhd (a raw file has no holes"
                             " to mark the unchanged blocks)")
    _check_target(filename, force)
    _refuse_sr_storage(ts, filename)
    size = vdi.virtual_size

    def step(done: int) -> None:
        if progress:
            progress(done, size)

    with contextlib.ExitStack() as stack:
        path = stack.enter_context(attached(ts, vdi, writable=False))
        same = base is not None and base.ref == vdi.ref   # an empty delta; attach once
        base_path = stack.enter_context(attached(ts, base, writable=False)) if (
            base is not None and not same) else None
        tmp = _temp_beside(filename)
        try:
            image = stack.enter_context(vhd.open_image(path))
            size = image.virtual_size
            chain = _chain_blocks(image)
            blocks = _any_blocks(chain)
            differs = None
            if same:
                blocks = set()
            elif base_path is not None:
                base_image = stack.enter_context(vhd.open_image(base_path))
                blocks = _delta_candidates(chain, _chain_blocks(base_image), size,
                                           base_image.virtual_size)
                differs = _differs_from(base_image)
            if fmt == "raw":
                _write_raw(tmp, image.read, size, blocks, step)
            else:
                _write_vhd(tmp, image.read, size, blocks, differs, step)
            os.replace(tmp, filename)
        except BaseException as exc:
            # No half-written image left behind to be mistaken for an export.
            with contextlib.suppress(OSError):
                os.remove(tmp)
            if isinstance(exc, vhd.VHDError):
                raise _vhd_error(exc, vdi) from None
            if isinstance(exc, OSError):
                raise ToolstackError("EXPORT_FAILED", f"{filename}: {exc.strerror}") from None
            raise
    return size


def _delta_candidates(chain: "List[Tuple[str, Set[int]]]",
                      base_chain: "List[Tuple[str, Set[int]]]", size: int,
                      base_size: int) -> Set[int]:
    """Blocks that can differ: those allocated in an image only one chain holds.

    An image both chains share (a common ancestor) shows the same bytes to
    both, so its blocks differ only where a private image covers them.
    Sizes that differ make every allocated block a candidate.
    """
    if size != base_size:
        return _any_blocks(chain) | _any_blocks(base_chain)
    mine = {p for p, _b in chain}
    theirs = {p for p, _b in base_chain}
    return _any_blocks([c for c in chain if c[0] not in theirs]) | _any_blocks(
        [c for c in base_chain if c[0] not in mine])


def _differs_from(base_image: "Image") -> Callable[[int, int, bytes], bool]:
    def differs(offset: int, length: int, data: bytes) -> bool:
        limit = base_image.virtual_size
        if offset >= limit:
            return data.count(0) != len(data)
        theirs = base_image.read(offset, min(length, limit - offset))
        return data != theirs + bytes(length - len(theirs))
    return differs


# Copy ------------------------------------------------------------------


def vdi_copy(ts: Toolstack, vdi: VDIRecord, sr: SRRecord,
             progress: Optional[Progress] = None) -> VDIRecord:
    """A new disk on sr with vdi's name and contents (xe vdi-copy); destroyed on failure."""
    from smlib import vhd

    copy = ts.vdi_create(sr, vdi.virtual_size, vdi.name_label, vdi.name_description,
                         vdi_type=vdi.type)
    try:
        with attached(ts, vdi, writable=False) as src_path, \
                attached(ts, copy, writable=True) as dst_path:
            try:
                with vhd.open_image(src_path) as src, \
                        vhd.open_image(dst_path, writable=True) as dst:
                    size = src.virtual_size
                    blocks = _any_blocks(_chain_blocks(src))
                    for block in range(-(-size // BLOCK)):
                        offset = block * BLOCK
                        length = min(BLOCK, size - offset)
                        if block in blocks:
                            data = src.read(offset, length)
                            if data.count(0) != length:  # the new disk reads zeros already
                                dst.write(offset, data)
                        if progress:
                            progress(offset + length, size)
            except vhd.VHDError as exc:
                raise _vhd_error(exc, vdi) from None
    except BaseException:
        with _sigint_deferred():
            ts.discard([copy])
        raise
    return copy
