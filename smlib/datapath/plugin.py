"""nbdkit Python plugin serving one VHD chain (``nbdkit python plugin.py ...``).

Runs inside nbdkit's embedded CPython (3.11 on Debian 12; whatever the
host's nbdkit-plugin-python links), not the driver's. Parameters:

    control=<path>      the control file (smlib/datapath/nbdkit.py): which
                        chain to serve, leaf first; reread before every
                        request, under a shared flock the driver takes
                        exclusively to pause the server
    export=<name>       the only export name served besides "" (the VDI uuid)
    readonly=1          open the chain read-only (nbdkit runs -r too)

One chain is shared by every connection and nbdkit serialises all
requests, so the image state needs no lock of its own. See disk.py for
the order in which writes reach the leaf.
"""

import errno
import fcntl
import os
import sys

# smlib is importable from the directory that holds this package, in a
# checkout and when installed: this file is smlib/datapath/plugin.py.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

try:
    import nbdkit  # provided by nbdkit's embedded interpreter
except ImportError:  # imported elsewhere (a check that every module imports)
    nbdkit = None

from smlib.datapath.disk import LiveImage, chain_resolver  # noqa: E402

API_VERSION = 2

_params = {"control": None, "export": None, "readonly": "0"}
_state = {"disk": None, "control": None, "ctl_fd": -1}


def thread_model():
    return nbdkit.THREAD_MODEL_SERIALIZE_ALL_REQUESTS


def config(key, value):
    if key not in _params:
        raise RuntimeError(f"unknown parameter {key!r}")
    _params[key] = value


def config_complete():
    if not _params["control"]:
        raise RuntimeError("control=<path> is required")


def _chain(text):
    chain = []
    for line in text.decode("utf-8").splitlines():
        key, _, value = line.partition("=")
        if key in ("leaf", "parent") and value:
            chain.append(value)
    if not chain:
        raise RuntimeError("control file names no leaf")
    return chain


def _open_chain(text):
    chain = _chain(text)
    resolver = chain_resolver(chain) if len(chain) > 1 else None
    return LiveImage(chain[0], writable=_params["readonly"] != "1", resolver=resolver)


def get_ready():
    """Open the chain once, before serving (a broken image fails the start)."""
    fd = os.open(_params["control"], os.O_RDONLY)
    _state["ctl_fd"] = fd
    text = os.pread(fd, 1 << 16, 0)
    _state["disk"] = _open_chain(text)
    _state["control"] = text


def cleanup():
    disk = _state["disk"]
    if disk is not None:
        _state["disk"] = None
        disk.close()


class _Request:
    """The shared lock for one request; the chain reopened if the driver
    changed it while it held the server."""

    def __enter__(self):
        fd = _state["ctl_fd"]
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            text = os.pread(fd, 1 << 16, 0)
            if text != _state["control"]:
                old = _state["disk"]
                _state["disk"] = None
                if old is not None:
                    old.close()
                _state["disk"] = _open_chain(text)
                _state["control"] = text
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise
        return _state["disk"]

    def __exit__(self, *exc):
        fcntl.flock(_state["ctl_fd"], fcntl.LOCK_UN)


def open(readonly):
    name = nbdkit.export_name()
    if name not in ("", _params["export"]):
        nbdkit.set_error(errno.ENOENT)
        raise RuntimeError(f"no export {name!r} here")
    return {}


def get_size(h):
    with _Request() as disk:
        return disk.virtual_size


def block_size(h):
    return (512, 4096, 32 * 1024 * 1024)


def is_rotational(h):
    return False


def can_write(h):
    return _params["readonly"] != "1"


def can_flush(h):
    return True


def can_fua(h):
    return nbdkit.FUA_EMULATE


def can_zero(h):
    return True


def can_trim(h):
    # Trim would only be advice; zero (below) is the cheap part.
    return False


def can_multi_conn(h):
    # One shared chain and serialised requests: a flush on any connection
    # covers every connection's completed writes.
    return True


def can_extents(h):
    return True


def pread(h, buf, offset, flags):
    with _Request() as disk:
        disk.read_into(offset, memoryview(buf))


def pwrite(h, buf, offset, flags):
    with _Request() as disk:
        disk.write(offset, memoryview(buf))


def flush(h, flags):
    with _Request() as disk:
        disk.sync()


def zero(h, count, offset, flags):
    with _Request() as disk:
        disk.zero(offset, count)


def extents(h, count, offset, flags):
    """Blocks no image of the chain holds read as zeros (a hole)."""
    hole = nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO
    out = []
    with _Request() as disk:
        bs = disk.block_size
        pos, end = offset, offset + count
        while pos < end:
            block = pos // bs
            stop = min(end, (block + 1) * bs)
            kind = 0 if disk.allocated_anywhere(block) else hole
            if out and out[-1][2] == kind:
                out[-1] = (out[-1][0], stop - out[-1][0], kind)
            else:
                out.append((pos, stop - pos, kind))
            if flags & nbdkit.FLAG_REQ_ONE:
                break
            pos = stop
    return out
