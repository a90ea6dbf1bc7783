"""Extent placement: where an LV's extents go when the store places them.

Only the loop activation needs this (activation.py): a loop device maps one
contiguous run of a PV, so each LV must stay one run of extents. A new LV
goes in the middle of the largest free gap, so that both it and the LV
before it can grow contiguously; growth goes right after the LV's last
extent. An LV that cannot stay contiguous is refused with a clear error,
never mapped wrongly. The store keeps ``layout.free`` up to date with
``take`` and ``give_back`` after each change, whoever placed it.
"""

from typing import Optional

from smlib.protocol.errors import SRError
from smlib.stores.lvm.lvm2 import Extents, Layout, LVInfo


def where_new(layout: Layout, extents: int, vg: str, placed: bool) -> Optional[Extents]:
    """Where a new LV of ``extents`` goes: the middle of the largest gap when
    the store places LVs (``placed``), else None (lvm2 chooses). SRNoSpace
    when it cannot fit."""
    if not placed:
        if layout.free_extents() < extents:
            raise SRError.from_name("SRNoSpace", f"{vg}: {extents} extents wanted, "
                                    f"{layout.free_extents()} free")
        return None
    gap = max(layout.free, key=lambda g: g.count, default=None)
    if gap is None or gap.count < extents:
        raise SRError.from_name(
            "SRNoSpace", f"{vg}: {extents} contiguous extents wanted, largest "
            f"free run is {gap.count if gap else 0}")
    return Extents(gap.pv, gap.start + (gap.count - extents) // 2, extents)


def where_growth(layout: Layout, info: LVInfo, more: int, placed: bool) -> Optional[Extents]:
    """Where LV ``info`` grows by ``more`` extents: right after its end when
    the store places LVs, else None (lvm2 chooses)."""
    if not placed:
        if layout.free_extents() < more:
            raise SRError.from_name("SRNoSpace", f"{info.name}: {more} more extents wanted, "
                                    f"{layout.free_extents()} free")
        return None
    gap = gap_after(layout, info.segments[-1][1])
    if gap is None or gap.count < more:
        raise SRError.from_name(
            "SRNoSpace" if layout.free_extents() < more else "LVMResize",
            f"{info.name}: {more} more extents wanted right after it; loop "
            "activation needs contiguous LVs")
    return Extents(gap.pv, gap.start, more)


def record_new(layout: Layout, info: LVInfo, where: Extents) -> None:
    """A new LV now holds the run ``where``."""
    take(layout, where.pv, where.start, where.count)
    info.segments = [(0, where)]


def record_growth(layout: Layout, info: LVInfo, where: Extents) -> None:
    """LV ``info`` grew onto the run ``where`` right after its end."""
    take(layout, where.pv, where.start, where.count)
    info.segments[-1][1].count += where.count


def gap_after(layout: Layout, run: Extents) -> Optional[Extents]:
    end = run.start + run.count
    for gap in layout.free:
        if gap.pv == run.pv and gap.start == end:
            return gap
    return None


def take(layout: Layout, pv: str, start: int, count: int) -> None:
    """Mark extents used in the free list."""
    for i, gap in enumerate(layout.free):
        if gap.pv == pv and gap.start <= start and start + count <= gap.start + gap.count:
            pieces = [Extents(pv, gap.start, start - gap.start),
                      Extents(pv, start + count, gap.start + gap.count - start - count)]
            layout.free[i:i + 1] = [p for p in pieces if p.count]
            return
    raise AssertionError(f"extents {pv}:{start}+{count} are not free")


def give_back(layout: Layout, pv: str, start: int, count: int) -> None:
    """Mark extents free, merging with neighbouring gaps."""
    layout.free.append(Extents(pv, start, count))
    layout.free.sort(key=lambda g: (g.pv, g.start))
    merged: list[Extents] = []
    for gap in layout.free:
        last = merged[-1] if merged else None
        if last and last.pv == gap.pv and last.start + last.count == gap.start:
            last.count += gap.count
        else:
            merged.append(Extents(gap.pv, gap.start, gap.count))
    layout.free = merged


def shrink_segments(layout: Layout, info: LVInfo, drop: int) -> None:
    """Give back the last ``drop`` extents of LV ``info`` (lvresize cut its end)."""
    while drop:
        _, last = info.segments[-1]
        cut = min(drop, last.count)
        give_back(layout, last.pv, last.start + last.count - cut, cut)
        last.count -= cut
        if not last.count:
            info.segments.pop()
        drop -= cut
