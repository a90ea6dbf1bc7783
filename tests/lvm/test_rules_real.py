"""The rule table of lvm_rules.py against real lvm2 (the fake must agree)."""

from __future__ import annotations

import pytest
from lvm_rules import RULES, apply_rules

from smlib.stores import lvm

pytestmark = pytest.mark.lvm
EXTENT = 4 * 1024 * 1024


def test_real_lvm2_follows_the_rule_table(loop_pv):
    dev = loop_pv()
    lvm.pvcreate([dev])
    lvm.vgcreate("VG_smlib_rules_" + dev.rsplit("/", 1)[-1], [dev])
    results, final = apply_rules(lvm, "VG_smlib_rules_" + dev.rsplit("/", 1)[-1], dev)
    assert results == [expected for _, expected in RULES]
    assert final == {"a": 1 * EXTENT, "b": 3 * EXTENT}


def test_error_carries_lvm2_message(loop_pv):
    dev = loop_pv()
    lvm.vgcreate("VG_smlib_msg_" + dev.rsplit("/", 1)[-1], [dev])
    vg = "VG_smlib_msg_" + dev.rsplit("/", 1)[-1]
    lvm.lvcreate(vg, "a", 1)
    with pytest.raises(Exception) as err:
        lvm.lvcreate(vg, "a", 1)
    assert 'Logical Volume "a" already exists' in err.value.opterr
    before = lvm.total_runs()
    lvm.layout(vg)
    assert lvm.total_runs() == before + 1 and lvm.RUNS["pvs"] >= 1
