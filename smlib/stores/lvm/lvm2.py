"""A thin wrapper over the lvm2 commands the LVM store uses.

One function per lvm2 command. Every run goes through ``run``, which adds
the extra ``--config`` text of ``$SMLIB_LVM_CONFIG`` (this machine has no
device-mapper, so tests set ``global{activation=0}``), enforces a timeout,
counts the run in ``RUNS`` (the benchmarks read it: a run costs 45-75 ms)
and turns a failure into an ``SRError`` carrying lvm2's own message.

Reports use ``--reportformat json`` with byte units. The one report the
store needs, ``layout``, is a single ``pvs --segments`` run: it gives every
LV, its size and physical extents, the free gaps and each PV's data
offset, so a command learns the whole VG in one run.
"""

import collections
import os
from typing import Iterable, Optional, Sequence

from smlib import config
from smlib.protocol.errors import SRError

DEFAULT_TIMEOUT = 120.0

#: lvm2 runs made by this process, by command name (benchmarks reset it).
RUNS: "collections.Counter[str]" = collections.Counter()

# lvm2 prints these on stderr on success too; they are noise in an error.
_NOISE_PREFIXES = ("WARNING:", "File descriptor ")


def total_runs() -> int:
    """lvm2 runs made by this process so far."""
    return sum(RUNS.values())


def _lvm_bin() -> str:
    explicit = config.lvm_bin()
    if explicit:
        return explicit
    import shutil  # deferred: keep driver start-up light

    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    found = shutil.which("lvm", path=path)
    if found is None:
        raise SRError.from_name("SMGeneral", "lvm2 is not installed (no 'lvm' binary found)")
    return found


def _message(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_NOISE_PREFIXES)]
    return "; ".join(useful or lines) or "no message"


def run(command: str, args: Sequence[str], *, error: str,
        timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run ``lvm <command> [--config ...] <args>`` and return its stdout.

    ``error`` names the SRError raised on failure; a failure lvm2 reports as
    lack of space is ``SRNoSpace`` whatever ``error`` says.
    """
    import subprocess  # deferred: keep driver start-up light

    argv = [_lvm_bin(), command]
    extra = config.lvm_config()
    if extra:
        argv += ["--config", extra]
    argv += list(args)
    env = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")
    RUNS[command] += 1
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SRError.from_name(error, f"{command} timed out after {timeout:g}s") from exc
    except OSError as exc:  # the binary is missing or cannot run
        raise SRError.from_name("SMGeneral", f"cannot run {argv[0]}: {exc.strerror or exc}") \
            from None
    if proc.returncode != 0:
        raise failure(command, args, _message(proc.stderr), error)
    return proc.stdout


def failure(command: str, args: Sequence[str], message: str, error: str) -> SRError:
    """The SRError for a failed lvm2 run: ``error``, or ``SRNoSpace`` when
    lvm2 says space ran out; lvm2's message goes into opterr."""
    name = "SRNoSpace" if "insufficient free space" in message.lower() else error
    return SRError.from_name(name, f"{command} {' '.join(args)}: {message}")


def _report(stdout: str, kind: str) -> "list[dict[str, str]]":
    import json  # deferred: keep driver start-up light

    try:
        doc = json.loads(stdout)
        rows: list[dict[str, str]] = []
        for part in doc["report"]:
            rows.extend(part.get(kind, []))
        return rows
    except (ValueError, KeyError, TypeError) as exc:
        raise SRError.from_name("PVSfailed", f"unreadable lvm2 {kind} report: {exc}") from exc


# ------------------------------------------------------------------ reports
# Plain classes, not dataclasses: that import costs every driver call ~5 ms.

class Extents:
    """A run of physical extents ``start .. start+count-1`` on one PV."""

    __slots__ = ("pv", "start", "count")

    def __init__(self, pv: str, start: int, count: int) -> None:
        self.pv = pv
        self.start = start
        self.count = count

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Extents):
            return NotImplemented
        return (self.pv, self.start, self.count) == (other.pv, other.start, other.count)

    __hash__ = None  # mutable (placement grows and cuts runs in place)

    def __repr__(self) -> str:
        return f"Extents({self.pv!r}, {self.start}, {self.count})"


class LVInfo:
    __slots__ = ("name", "size", "segments")

    def __init__(self, name: str, size: int,
                 segments: "Optional[list[tuple[int, Extents]]]" = None) -> None:
        self.name = name
        self.size = size                        # bytes
        # (logical extent, physical run), sorted by logical extent
        self.segments = segments if segments is not None else []


class PVInfo:
    __slots__ = ("name", "pe_start", "pe_count")

    def __init__(self, name: str, pe_start: int, pe_count: int) -> None:
        self.name = name
        self.pe_start = pe_start                # byte offset of extent 0
        self.pe_count = pe_count


class Layout:
    """What one ``pvs --segments`` run says about a VG."""

    __slots__ = ("vg", "extent_size", "pvs", "lvs", "free")

    def __init__(self, vg: str, extent_size: int, pvs: "dict[str, PVInfo]",
                 lvs: "dict[str, LVInfo]", free: "list[Extents]") -> None:
        self.vg = vg
        self.extent_size = extent_size
        self.pvs = pvs
        self.lvs = lvs
        self.free = free

    def free_extents(self) -> int:
        return sum(gap.count for gap in self.free)

    def total_extents(self) -> int:
        return sum(pv.pe_count for pv in self.pvs.values())


_LAYOUT_FIELDS = ("pv_name,pe_start,pv_pe_count,pvseg_start,pvseg_size,vg_name,"
                  "vg_extent_size,lv_name,lv_size,seg_start_pe")


def layout(vg: str) -> Optional[Layout]:
    """The VG's PVs, LVs, extents and free gaps; None when the VG is absent."""
    # Every PV's segments, filtered here: a VG name never goes into a
    # --select expression, where text could change what is selected.
    out = run("pvs", ["--reportformat", "json", "--units", "b", "--nosuffix", "--segments",
                      "-o", _LAYOUT_FIELDS], error="PVSfailed")
    rows = [row for row in _report(out, "pvseg") if row.get("vg_name") == vg]
    if not rows:
        return None
    found = Layout(vg=vg, extent_size=int(rows[0]["vg_extent_size"]), pvs={}, lvs={}, free=[])
    for row in rows:
        pv = row["pv_name"]
        found.pvs.setdefault(pv, PVInfo(pv, int(row["pe_start"]), int(row["pv_pe_count"])))
        run_ = Extents(pv, int(row["pvseg_start"]), int(row["pvseg_size"]))
        name = row["lv_name"]
        if not name:
            found.free.append(run_)
            continue
        lv = found.lvs.setdefault(name, LVInfo(name, int(row["lv_size"])))
        lv.segments.append((int(row["seg_start_pe"]), run_))
    for lv in found.lvs.values():
        lv.segments.sort(key=lambda seg: seg[0])
    return found


def pv_owners() -> "dict[str, str]":
    """Every PV lvm2 sees, by real path, with its VG name ('' when none)."""
    out = run("pvs", ["--reportformat", "json", "-o", "pv_name,vg_name"], error="PVSfailed")
    return {os.path.realpath(row["pv_name"]): row["vg_name"] for row in _report(out, "pv")}


# ----------------------------------------------------------------- changes

def _ranges(ranges: Optional[Iterable[Extents]]) -> "list[str]":
    return [f"{r.pv}:{r.start}-{r.start + r.count - 1}" for r in ranges or ()]


def pvcreate(devices: Sequence[str]) -> None:
    # -ff/-y are not used: a device that holds anything lvm2 recognises is
    # refused by lvm2 itself rather than wiped.
    run("pvcreate", list(devices), error="LVMCreate")


def pvremove(devices: Sequence[str]) -> None:
    run("pvremove", list(devices), error="LVMDelete")


def vgcreate(vg: str, devices: Sequence[str]) -> None:
    run("vgcreate", [vg, *devices], error="LVMGroupCreate")


def vgremove(vg: str) -> None:
    run("vgremove", ["-f", vg], error="LVMDelete")


def lvcreate(vg: str, lv: str, extents: int, *,
             where: Optional[Iterable[Extents]] = None) -> None:
    """Create ``vg/lv`` of ``extents`` extents, optionally on given extents.

    -Zn -Wn: no zeroing or signature wiping; both need an active LV and the
    VHD written next defines every byte that is read.
    """
    run("lvcreate", ["-Zn", "-Wn", "-l", str(extents), "-n", lv, vg, *_ranges(where)],
        error="LVMCreate")


def lvrename(vg: str, old: str, new: str) -> None:
    run("lvrename", [vg, old, new], error="LVMCreate")


def lvresize(vg: str, lv: str, extents: int, *,
             where: Optional[Iterable[Extents]] = None) -> None:
    """Set ``vg/lv`` to ``extents`` extents (grow onto ``where`` if given).

    -f: shrinking an inactive LV that holds a deflated VHD is intended.
    """
    run("lvresize", ["-f", "-l", str(extents), f"{vg}/{lv}", *_ranges(where)],
        error="LVMResize")


def lvremove(vg: str, lvs: Sequence[str]) -> None:
    """Remove several LVs in one run."""
    run("lvremove", ["-f", *[f"{vg}/{lv}" for lv in lvs]], error="LVMDelete")


def lvchange_activate(vg: str, lvs: Sequence[str], active: bool) -> None:
    """Activate (or deactivate) several LVs in one run (production only)."""
    run("lvchange", ["-ay" if active else "-an", *[f"{vg}/{lv}" for lv in lvs]],
        error="LVMMount" if active else "LVMUnMount")

