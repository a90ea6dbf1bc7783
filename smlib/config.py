"""Every environment knob of smlib, read here and nowhere else.

One prefix, ``SMLIB_``. The names documented before it (``SM_LOG``,
``SM_CRASH_AT``, ``SM_XAPI_SOCKET``, ``SMCTL_DB``, ``SMCTL_DRIVER_DIR``,
``SMCTL_TRACE``) are still accepted; the ``SMLIB_`` name wins when both are
set. An empty value counts as unset. Each knob is read when asked for, not at
import: a test sets the environment after importing the modules.

This module is a leaf (it imports only ``os``): anything may import it.
"""

import os

# Every driver call loads this module: no typing at run time (dom0's 3.6
# pays several ms for it), so the annotations are strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

#: name -> the older names it also answers to.
ALIASES = {
    "SMLIB_LOG": ("SM_LOG",),
    "SMLIB_CRASH_AT": ("SM_CRASH_AT",),
    "SMLIB_XAPI_SOCKET": ("SM_XAPI_SOCKET",),
    "SMLIB_DB": ("SMCTL_DB",),
    "SMLIB_DRIVER_DIR": ("SMCTL_DRIVER_DIR",),
    "SMLIB_TRACE": ("SMCTL_TRACE",),
}

DEFAULT_LOG = "/var/log/SMlog"
DEFAULT_XAPI_SOCKET = "/var/lib/xcp/xapi"
DEFAULT_XAPI_TIMEOUT = 30.0
DEFAULT_LVM_LOCK_DIR = "/run/lock/smlib"
DEFAULT_LVM_ACTIVATION = "lvchange"
DEFAULT_NBD_DIR = "/run/blktap-control/nbd"
DEFAULT_DATAPATH_DIR = "/run/smlib/datapath"


def get(name: str) -> "Optional[str]":
    """The value of knob ``name`` (or of an older name of it); None when unset or empty."""
    for key in (name,) + ALIASES.get(name, ()):
        value = os.environ.get(key)
        if value:
            return value
    return None


# Driver side -------------------------------------------------------------


def log_path() -> str:
    """``SMLIB_LOG`` (or ``SM_LOG``): the file each driver call appends its log
    line to. Default /var/log/SMlog; stderr when the file cannot be written."""
    return get("SMLIB_LOG") or DEFAULT_LOG


def crash_at() -> "Optional[str]":
    """``SMLIB_CRASH_AT`` (or ``SM_CRASH_AT``), tests only: ``N`` ends the process
    at its Nth mutation point, a name (``snapshot.rename-leaf``) at the first
    point of that name (smlib.faults)."""
    return get("SMLIB_CRASH_AT")


def xapi_socket() -> str:
    """``SMLIB_XAPI_SOCKET`` (or ``SM_XAPI_SOCKET``): xapi's Unix socket, for the
    calls back to xapi (smlib.xapi). Default /var/lib/xcp/xapi."""
    return get("SMLIB_XAPI_SOCKET") or DEFAULT_XAPI_SOCKET


def xapi_timeout() -> float:
    """``SMLIB_XAPI_TIMEOUT``: seconds one call back to xapi may take (default
    30): a hung xapi must not hold the SR lock forever."""
    try:
        value = float(get("SMLIB_XAPI_TIMEOUT") or DEFAULT_XAPI_TIMEOUT)
    except ValueError:
        return DEFAULT_XAPI_TIMEOUT
    return value if value > 0 else DEFAULT_XAPI_TIMEOUT


def lvm_config() -> "Optional[str]":
    """``SMLIB_LVM_CONFIG``: extra lvm2 configuration text passed as ``--config``
    to every lvm2 run (on machines without device-mapper: ``global{activation=0}``)."""
    return get("SMLIB_LVM_CONFIG")


def lvm_bin() -> "Optional[str]":
    """``SMLIB_LVM_BIN``: the lvm2 binary. Default: ``lvm`` on PATH, /usr/sbin, /sbin."""
    return get("SMLIB_LVM_BIN")


def lvm_activation() -> str:
    """``SMLIB_LVM_ACTIVATION``: how LVMSR reaches an LV's bytes: ``lvchange``
    (production, the default) or ``loop`` (tests without device-mapper)."""
    return get("SMLIB_LVM_ACTIVATION") or DEFAULT_LVM_ACTIVATION


def lvm_lock_dir() -> str:
    """``SMLIB_LVM_LOCK_DIR``: where LVMSR keeps its per-SR lock and presence
    marker files. Default /run/lock/smlib."""
    return get("SMLIB_LVM_LOCK_DIR") or DEFAULT_LVM_LOCK_DIR


# Data path (smlib.datapath) ----------------------------------------------


def nbd_dir() -> str:
    """``SMLIB_NBD_DIR``: where ``<sr uuid>/<vdi uuid>``, the link params_nbd
    names, is made. Default /run/blktap-control/nbd (where sm makes it);
    tapdisk's own sockets are in its parent directory."""
    return get("SMLIB_NBD_DIR") or DEFAULT_NBD_DIR


def datapath_dir() -> str:
    """``SMLIB_DATAPATH_DIR``: the records of running servers
    (``<sr uuid>/<vdi uuid>.{state,sock,pid,ctl,log}``). Default /run/smlib/datapath."""
    return get("SMLIB_DATAPATH_DIR") or DEFAULT_DATAPATH_DIR


def datapath_backend() -> "Optional[str]":
    """``SMLIB_DATAPATH``: ``tapdisk``, ``nbdkit`` or ``none`` (serve nothing:
    pyfakefs tests). Default (None): tapdisk where tap-ctl is installed, else nbdkit."""
    return get("SMLIB_DATAPATH")


def tapctl() -> "Optional[str]":
    """``SMLIB_TAPCTL``: blktap's tap-ctl. Default: ``tap-ctl`` on PATH."""
    return get("SMLIB_TAPCTL")


def nbdkit() -> "Optional[str]":
    """``SMLIB_NBDKIT``: the nbdkit binary. Default: ``nbdkit`` on PATH."""
    return get("SMLIB_NBDKIT")


# Toolstack side (smctl) ----------------------------------------------------


def toolstack_db() -> "Optional[str]":
    """``SMLIB_DB`` (or ``SMCTL_DB``): smctl's database. Default (None here):
    ~/.local/share/smctl/state.db."""
    return get("SMLIB_DB")


def driver_dir() -> "Optional[str]":
    """``SMLIB_DRIVER_DIR`` (or ``SMCTL_DRIVER_DIR``): where the toolstack finds
    the driver executables. Default (None here): the checkout's drivers/ when
    run from one, else /opt/xensource/sm where it exists, else the drivers
    shipped in the package (runner.default_driver_dir)."""
    return get("SMLIB_DRIVER_DIR")


def driver_bin() -> "Optional[str]":
    """``SMLIB_DRIVER_BIN``: the directory whose ``python3`` runs the drivers
    the toolstack (and the tests) start. Default (None here): the directory
    of the interpreter running the toolstack (the dom0 test tier names a
    CPython 3.6 there)."""
    return get("SMLIB_DRIVER_BIN")


def trace() -> bool:
    """``SMLIB_TRACE`` (or ``SMCTL_TRACE``): any non-empty value makes the
    toolstack print one line per driver run on stderr."""
    return get("SMLIB_TRACE") is not None
