"""One table of lvm2 behaviours the LVM store relies on, checked against
real lvm2 (test_rules_real.py) and against the fake (test_fake_tier.py),
so the fake cannot drift from the real thing unnoticed.

Each rule is (operation, expected SRError name or None for success); the
operations run in order on an empty VG whose PV is ``pv``.
"""

from __future__ import annotations

from smlib.protocol.errors import SRError
from smlib.stores.lvm.lvm2 import Extents

RULES = [
    (("lvcreate", "a", 1), None),
    (("lvcreate", "a", 1), "LVMCreate"),                  # names are unique
    (("lvcreate", "bad/name", 1), "LVMCreate"),           # illegal characters
    (("lvcreate", "-lead", 1), "LVMCreate"),
    (("lvcreate", "huge", 10 ** 6), "SRNoSpace"),         # VG free space
    (("lvcreate", "b", 2), None),
    (("lvresize", "b", 3), None),
    (("lvresize", "b", 3), "LVMResize"),                  # same size is an error
    (("lvresize", "ghost", 2), "LVMResize"),              # missing LV
    (("lvrename", "ghost", "x"), "LVMCreate"),
    (("lvrename", "a", "b"), "LVMCreate"),                # target taken
    (("lvrename", "a", "c"), None),
    (("lvrename", "c", "a"), None),
    (("lvremove", "ghost"), "LVMDelete"),
    (("lvcreate_at", "p", 1, 100), None),                 # placed on given extents
    (("lvcreate_at", "q", 1, 100), "SRNoSpace"),          # ... which must be free
    (("lvremove", "p"), None),
]


def apply_rules(lvm, vg: str, pv: str) -> tuple[list, dict]:
    """Run RULES through ``lvm`` (the real wrapper or the fake); returns the
    outcome of each and the LVs left (name -> bytes)."""
    results = []
    for op, _ in RULES:
        name, *args = op
        try:
            if name == "lvcreate":
                lvm.lvcreate(vg, args[0], args[1])
            elif name == "lvcreate_at":
                lvm.lvcreate(vg, args[0], args[1], where=[Extents(pv, args[2], args[1])])
            elif name == "lvresize":
                lvm.lvresize(vg, args[0], args[1])
            elif name == "lvrename":
                lvm.lvrename(vg, args[0], args[1])
            elif name == "lvremove":
                lvm.lvremove(vg, [args[0]])
            results.append(None)
        except SRError as exc:
            results.append(exc.name)
    final = {n: lv.size for n, lv in lvm.layout(vg).lvs.items()}
    return results, final
