"""The rule table of lvm_rules.py against real lvm2 (the fake must agree)."""

from __future__ import annotations

import uuid

import pytest
from helpers.lvm_rules import RULES, apply_rules

from smlib.protocol.errors import SRError
from smlib.stores.lvm import lvm2 as lvm

pytestmark = pytest.mark.lvm
EXTENT = 4 * 1024 * 1024


def test_real_lvm2_follows_the_rule_table(loop_pv):
    dev = loop_pv()
    vg = f"VG_smlib_rules_{uuid.uuid4().hex}"
    lvm.pvcreate([dev])
    lvm.vgcreate(vg, [dev])
    results, final = apply_rules(lvm, vg, dev)
    assert results == [expected for _, expected in RULES]
    assert final == {"a": 1 * EXTENT, "b": 3 * EXTENT}


def test_error_carries_lvm2_message(loop_pv):
    dev = loop_pv()
    vg = f"VG_smlib_msg_{uuid.uuid4().hex}"
    lvm.vgcreate(vg, [dev])
    lvm.lvcreate(vg, "a", 1)
    with pytest.raises(SRError) as err:
        lvm.lvcreate(vg, "a", 1)
    assert 'Logical Volume "a" already exists' in err.value.opterr
    before = lvm.total_runs()
    lvm.layout(vg)
    assert lvm.total_runs() == before + 1 and lvm.RUNS["pvs"] >= 1
