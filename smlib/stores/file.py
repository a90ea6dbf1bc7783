"""FileStore: an SR that is a directory of VHD files.

Volume ``N`` is ``<location>/N.vhd``; a child names its parent with the
locator ``<uuid>.vhd`` (relative to the child's directory, as blktap
writes it). Bookkeeping lives in ``<location>/.sm/``: ``metadata.xml``,
``journal/<key>``, ``lock``. Works unchanged under pyfakefs: only
``os``/``shutil`` calls that pyfakefs fakes are used here.
"""

import errno
import os
import stat
import sys
from typing import Optional

from smlib.protocol.errors import SRError
from smlib.stores.base import Store, fsync_path, is_uuid, is_volume_name

SUFFIX = ".vhd"
SM_DIR = ".sm"
METADATA = "metadata.xml"
JOURNAL_DIR = "journal"
LOCK = "lock"
# Partial files are built under this suffix and renamed into place, so a
# volume name never names a half-written image.
PART = ".part"


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or new file.
    A failure (a full filesystem, an entry of the wrong kind in the way) is
    an SRError naming the path, and leaves no partial file."""
    tmp = path + PART
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(os.path.dirname(path))
    except OSError as e:
        _unlink_quietly(tmp)
        raise bookkeeping_error(path, e) from None


def bookkeeping_error(path: str, e: OSError) -> SRError:
    """ENOSPC is SRNoSpace (44); anything else about the SR's own files is a
    MetadataError (181) naming the path, for an operator to look at."""
    if e.errno == errno.ENOSPC:
        return SRError.from_name("SRNoSpace", f"{path}: {e.strerror}")
    return SRError.from_name("MetadataError", f"{path}: {e.strerror or e}")


def entry_kind(path: str) -> Optional[str]:
    """None for a regular file; otherwise what the entry is (never follows
    a symlink, never opens anything: a FIFO would block the open)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISCHR, "a character device")):
        if test(mode):
            return kind
    return "not a regular file"


class FileStore(Store):
    """Volumes are ``<location>/<name>.vhd`` files."""

    SIZED_CONTAINERS = False

    def __init__(self, device_config: "dict[str, str]", sr_uuid: Optional[str]) -> None:
        super().__init__(device_config, sr_uuid)
        location = device_config.get("location", "")
        if not location:
            raise SRError.from_name("ConfigLocationMissing")
        if not os.path.isabs(location):
            # Relative to whatever directory the driver happens to run in.
            raise SRError.from_name("BadRequest",
                                    f"location {location!r} is not an absolute path")
        self.dir = os.path.abspath(location)
        self.sm_dir = os.path.join(self.dir, SM_DIR)
        self.journal_dir = os.path.join(self.sm_dir, JOURNAL_DIR)
        # Entries of self.dir changed since its last fsync (see sync()).
        self._dirty = False

    # ----------------------------------------------------------------- SR

    def sr_exists(self) -> bool:
        return os.path.isdir(self.sm_dir)

    def sr_create(self) -> None:
        if self.sr_exists():
            raise SRError.from_name("SRExists", f"{self.dir} already holds an SR")
        if os.path.exists(self.dir):
            if not os.path.isdir(self.dir):
                raise SRError.from_name("SRUnavailable", f"{self.dir} is not a directory")
            entries = sorted(os.listdir(self.dir))
            if entries:
                shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
                raise SRError.from_name(
                    "SRExists", f"{self.dir} holds no SR but is not empty: "
                    f"{len(entries)} entries ({shown})")
        try:
            os.makedirs(self.dir, exist_ok=True)
            os.makedirs(self.journal_dir)
        except OSError as e:
            where = e.filename or self.dir
            raise SRError.from_name("SRUnavailable",
                                    f"cannot create {where}: {e.strerror}") from None
        fsync_path(self.sm_dir)
        fsync_path(self.dir)

    def adopt(self) -> bool:
        """A stock file SR (sm's FileSR: ``<uuid>.vhd`` chains, hidden bases
        marked in their footers, no ``.sm/``) becomes ours: only ``.sm/`` is
        made, no image is touched. A directory without such an image is not
        adopted (``sr_create`` makes an SR of an empty one)."""
        if self.sr_exists() or not os.path.isdir(self.dir):
            return False
        if not any(is_uuid(name) for name in self.list_volumes()):
            return False
        os.makedirs(self.journal_dir, exist_ok=True)  # a concurrent adopter is harmless
        fsync_path(self.sm_dir)
        fsync_path(self.dir)
        return True

    def sr_delete(self) -> None:
        import shutil

        shutil.rmtree(self.sm_dir, ignore_errors=True)
        fsync_path(self.dir)

    def probe(self) -> "list[dict[str, str]]":
        # The SR's uuid is in its metadata, which the tree reads (TreeSR.sr_probe).
        return [{"uuid": ""}] if self.sr_exists() else []

    def free_space(self) -> int:
        return _disk_usage(self.dir)[1]

    def total_space(self) -> int:
        return _disk_usage(self.dir)[0]

    # ------------------------------------------------------------ volumes

    def _path(self, name: str) -> str:
        if not is_volume_name(name):
            # The tree validates names; reaching here is a programming error.
            raise ValueError(f"not a volume name: {name!r}")
        return os.path.join(self.dir, name + SUFFIX)

    def _named_entries(self) -> "dict[str, Optional[str]]":
        """Entries named like volumes -> None (a regular file) or their kind."""
        out = {}
        for entry in os.listdir(self.dir):
            if entry.endswith(SUFFIX) and is_volume_name(entry[: -len(SUFFIX)]):
                out[entry[: -len(SUFFIX)]] = entry_kind(os.path.join(self.dir, entry))
        return out

    def list_volumes(self) -> "list[str]":
        # Only regular files are volumes: a symlink could lead out of the SR
        # and a FIFO would block the open that reads it.
        return [name for name, kind in self._named_entries().items() if kind is None]

    def strays(self) -> "dict[str, str]":
        return {name: kind for name, kind in self._named_entries().items()
                if kind not in (None, "missing")}

    def exists(self, name: str) -> bool:
        # Anything at the name counts (a stray must not be overwritten by a
        # new volume); only activate() decides whether it may be opened.
        return os.path.lexists(self._path(name))

    def locator(self, name: str) -> str:
        return name + SUFFIX

    def name_of_locator(self, locator: str) -> Optional[str]:
        # blktap locators may carry "./"; nothing with a directory part is ours.
        if locator.startswith("./"):
            locator = locator[2:]
        if not locator.endswith(SUFFIX):
            return None
        name = locator[: -len(SUFFIX)]
        return name if is_volume_name(name) else None

    def location(self, name: str) -> str:
        return name

    def _build(self, name: str, make) -> None:
        """Create volume ``name`` by ``make(tmp_path)`` then rename it in."""
        from smlib import vhd

        path = self._path(name)
        if os.path.lexists(path):
            raise SRError.from_name("VDIExists", name)
        tmp = path + PART
        try:
            make(tmp, vhd)
            os.rename(tmp, path)
            self._dirty = True
        except (OSError, vhd.VHDError) as e:
            _unlink(tmp)
            if e.errno == errno.ENOSPC:
                raise SRError.from_name("SRNoSpace", str(e)) from e
            raise
        except BaseException:
            _unlink(tmp)
            raise

    def create_vhd(self, name: str, virtual_size: int, *, hidden: bool = False) -> None:
        self._build(name, lambda tmp, vhd: vhd.create(tmp, virtual_size, hidden=hidden))

    def create_child(self, name: str, parent: str, *, hidden: bool = False) -> None:
        parent_path = self.activate(parent)
        locator = self.locator(parent)
        self._build(name, lambda tmp, vhd: vhd.snapshot(
            tmp, parent_path, parent_locator=locator, hidden=hidden, resolver=self.resolver))

    def rename(self, old: str, new: str) -> None:
        dst = self._path(new)
        if os.path.lexists(dst):
            raise SRError.from_name("VDIExists", new)
        os.rename(self._path(old), dst)
        self._dirty = True

    def replace(self, src: str, dst: str) -> None:
        src_path = self._path(src)
        if not os.path.exists(src_path):
            return  # already done: resumable by contract
        dst_path = self._path(dst)
        held = _hold_if_large(dst_path)
        try:
            os.replace(src_path, dst_path)
            self.sync()
        finally:
            _release_in_background(held)  # also when the swap failed: no fd kept

    def remove(self, name: str) -> None:
        path = self._path(name)
        if entry_kind(path) == "a directory":
            try:
                os.rmdir(path)
            except OSError as e:
                raise SRError.from_name("VDIDelete", f"{path} is a directory: {e.strerror};"
                                        " an operator must remove it") from None
            self._dirty = True
            return
        held = _hold_if_large(path)
        try:
            _unlink(path)
            self._dirty = True
        finally:
            _release_in_background(held)

    def activate(self, name: str, *, keep: bool = False) -> str:
        path = self._path(name)
        kind = entry_kind(path)
        if kind is not None:
            raise SRError.from_name("VDIUnavailable", f"{path} is {kind}, not a regular file")
        return path

    def utilisation(self, name: str) -> int:
        try:
            return os.lstat(self._path(name)).st_size
        except FileNotFoundError:
            return 0

    def sync(self) -> None:
        if self._dirty:
            fsync_path(self.dir)
            self._dirty = False

    def close(self) -> None:
        return None

    def garbage_files(self) -> "list[str]":
        """Leftover ``*.part`` files of interrupted creations (cleaned by GC)."""
        return [e for e in os.listdir(self.dir) if e.endswith(SUFFIX + PART)]

    def remove_garbage(self) -> None:
        for entry in self.garbage_files():
            _unlink(os.path.join(self.dir, entry))
        for where in (self.sm_dir, self.journal_dir):
            try:
                entries = os.listdir(where)
            except OSError as e:
                raise bookkeeping_error(where, e) from None
            for entry in entries:
                if entry.endswith(PART):  # a write_atomic cut short
                    _unlink(os.path.join(where, entry))

    # -------------------------------------------------- SR bookkeeping

    def read_metadata(self) -> Optional[bytes]:
        path = os.path.join(self.sm_dir, METADATA)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise bookkeeping_error(path, e) from None

    def write_metadata(self, data: bytes) -> None:
        write_atomic(os.path.join(self.sm_dir, METADATA), data)

    def journal_put(self, key: str, data: bytes) -> None:
        write_atomic(os.path.join(self.journal_dir, key), data)

    def journal_items(self) -> "dict[str, bytes]":
        out = {}
        try:
            entries = os.listdir(self.journal_dir)
        except FileNotFoundError:
            return out
        except OSError as e:
            raise bookkeeping_error(self.journal_dir, e) from None
        for key in entries:
            if key.endswith(PART):
                continue  # an unfinished put: its intent was never recorded
            path = os.path.join(self.journal_dir, key)
            try:
                if entry_kind(path) is not None:
                    raise SRError.from_name("MetadataError",
                                            f"{path}: {entry_kind(path)} among the journal records")
                with open(path, "rb") as f:
                    out[key] = f.read()
            except OSError as e:
                raise bookkeeping_error(path, e) from None
        return out

    def journal_location(self, key: str) -> str:
        return os.path.join(self.journal_dir, key)

    def journal_remove(self, key: str) -> None:
        # No fsync: the change's last writes are durable already (sync()
        # and the metadata's fsync come first), so if this unlink is lost
        # to a power cut, replay re-runs an idempotent forward step.
        _unlink(os.path.join(self.journal_dir, key))

    def lock_path(self) -> str:
        return os.path.join(self.sm_dir, LOCK)


def _disk_usage(path: str) -> "tuple[int, int]":
    """(total, free) bytes of the filesystem holding path.

    shutil.disk_usage when shutil is loaded already (pyfakefs fakes it, and
    always has it loaded; os.statvfs it does not fake), else os.statvfs,
    sparing a driver call the import of shutil (bz2, lzma, ...)."""
    shutil = sys.modules.get("shutil")
    if shutil is not None:
        usage = shutil.disk_usage(path)
        return usage.total, usage.free
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# Dropping the last name of a large file frees its blocks inside that
# unlink or rename (about 200 ms per GiB on ext4), a cost that grows with
# the data the disk held. Holding a descriptor across the unlink moves the
# freeing to the last close, and a detached grandchild makes that close, so
# a revert or delete returns without waiting for it. The directory changes
# exactly as before; if the grandchild dies, its descriptor closes anyway.
RELEASE_IN_BACKGROUND = 64 << 20


def _hold_if_large(path: str) -> Optional[int]:
    """A read-only descriptor on path when it is worth freeing in the background
    (a large regular file only: never follows a symlink nor opens a FIFO)."""
    if not hasattr(os, "fork"):
        return None
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size < RELEASE_IN_BACKGROUND:
            return None
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None


def _release_in_background(fd: Optional[int]) -> None:
    """Close ``fd`` (whose file is unlinked) in a detached grandchild process."""
    if fd is None:
        return
    try:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
    except OSError:
        os.close(fd)  # no process to spare: free it here
        return
    if pid == 0:  # child: start the grandchild and go, so nobody waits on it
        try:
            if os.fork() == 0:
                os.close(ready_w)
                keep = sorted((fd, ready_r))
                os.closerange(0, keep[0])  # stdout too: the caller sees EOF now
                os.closerange(keep[0] + 1, keep[1])
                os.closerange(keep[1] + 1, os.sysconf("SC_OPEN_MAX"))
                os.read(ready_r, 1)  # EOF once the caller has closed its copy
                os.close(fd)  # the last descriptor: the kernel frees the blocks
        finally:
            os._exit(0)
    os.close(ready_r)
    os.close(fd)  # cheap: the grandchild still holds the file
    os.close(ready_w)
    os.waitpid(pid, 0)
