"""Random command sequences against a model (Hypothesis stateful testing).

In process, on a real temporary directory, through the same xapi-shaped
XML as the executable gets. After every step: each visible VDI holds what
the model says (read with smlib.vhd; the written regions are checked),
the metadata agrees with the images, no base is leaked, no journal is left.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import xmlrpc.client

import pytest
from helpers.filesr_helpers import DISK, FileSRHarness, pattern
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from smlib import vhd

OFFSETS = (0, 3 << 20, DISK - 4096 * 2)  # three VDI blocks, one at the end
LEN = 4096


class TreeModel(RuleBasedStateMachine):
    fns: tuple = ()

    @initialize()
    def start(self) -> None:
        self.root = tempfile.mkdtemp(prefix="filesr-model-")
        self.sr = FileSRHarness(self.root, self.fns)
        self.sr.inproc("sr_create")
        self.model: dict[str, dict[int, bytes]] = {}
        self.sizes: dict[str, int] = {}
        self.counter = 0
        self.new_disk()

    def teardown(self) -> None:
        shutil.rmtree(getattr(self, "root", ""), ignore_errors=True)

    def call(self, command: str, **keys):
        return self.sr.inproc(command, **keys)

    def new_disk(self) -> None:
        uuid = self.sr.create(call=self.call)
        self.model[uuid] = {o: bytes(LEN) for o in OFFSETS}
        self.sizes[uuid] = DISK

    def pick(self, data, writable_only: bool = False) -> str:
        names = list(self.model)  # creation order: uuids are random, this is not
        if writable_only:
            children = {v["parent"] for v in self.call("vdi_list")}
            names = [n for n in names if n not in children]
        return data.draw(st.sampled_from(names)) if names else ""

    @rule()
    @precondition(lambda self: len(self.model) < 6)
    def create(self) -> None:
        self.new_disk()

    @rule(data=st.data(), slot=st.sampled_from(OFFSETS))
    def write(self, data, slot: int) -> None:
        uuid = self.pick(data, writable_only=True)
        if not uuid:
            return
        self.counter += 1
        blob = pattern(f"{self.counter:x}", LEN)
        self.sr.write(uuid, slot, blob, call=self.call)
        self.model[uuid][slot] = blob

    @rule(data=st.data(), kind=st.sampled_from(["double", "single", "clone"]))
    @precondition(lambda self: len(self.model) < 8)
    def snapshot(self, data, kind: str) -> None:
        uuid = self.pick(data)
        if kind == "clone":
            new = self.call("vdi_clone", vdi_uuid=uuid)["uuid"]
        else:
            params = {"type": "single"} if kind == "single" else {}
            new = self.call("vdi_snapshot", vdi_uuid=uuid, driver_params=params)["uuid"]
        self.model[new] = dict(self.model[uuid])
        self.sizes[new] = self.sizes[uuid]

    def has_children(self, uuid: str) -> bool:
        """Whether some image on disk names ``uuid`` as its parent (read
        from the images' locators, not from the driver's metadata)."""
        for name in self.sr.files():
            if name.endswith(".vhd"):
                with vhd.open_image(os.path.join(self.sr.location, name)) as img:
                    if img.parent_locator == uuid + ".vhd":
                        return True
        return False

    @rule(data=st.data())
    def revert(self, data) -> None:
        target, snap = self.pick(data), self.pick(data)
        parent_of_others = self.has_children(target)
        try:
            self.call("vdi_revert", vdi_uuid=snap, args=[target])
        except xmlrpc.client.Fault as f:
            # The only refusals possible here: the same VDI (143), or a
            # target that other images are built on (46; 46 is also "cannot
            # open the image", which must not pass for it).
            assert (f.faultCode, snap == target) in ((143, True), (46, False)), f
            assert f.faultCode != 46 or parent_of_others, f
            return
        assert not parent_of_others, "a revert rewrote a VDI that others are built on"
        self.model[target] = dict(self.model[snap])
        self.sizes[target] = self.sizes[snap]

    @rule(data=st.data())
    @precondition(lambda self: len(self.model) > 1)
    def delete(self, data) -> None:
        uuid = self.pick(data)
        self.call("vdi_delete", vdi_uuid=uuid)
        del self.model[uuid], self.sizes[uuid]

    @rule(data=st.data())
    def resize(self, data) -> None:
        uuid = self.pick(data, writable_only=True)
        if uuid:
            self.sizes[uuid] += 2 << 20
            self.call("vdi_resize", vdi_uuid=uuid, args=[str(self.sizes[uuid])])

    @rule()
    def scan(self) -> None:
        self.call("sr_scan")

    @invariant()
    def contents_and_consistency(self) -> None:
        if not hasattr(self, "sr"):
            return
        listing = self.sr.check_consistent(call=self.call)
        assert sorted(u for u, v in listing.items() if not v["hidden"]) == sorted(self.model)
        for uuid, regions in self.model.items():
            assert listing[uuid]["virtual_size"] == str(self.sizes[uuid])
            with vhd.open_image(self.sr.path(uuid)) as img:
                for offset, want in regions.items():
                    assert img.read(offset, LEN) == want, (uuid, offset)
            assert max_depth(listing, uuid) <= 30


def max_depth(listing: dict, uuid: str) -> int:
    n = 0
    while uuid:
        n += 1
        uuid = listing[uuid]["parent"]
    return n


@pytest.mark.slow
def test_tree_against_model(harness_fns):
    class Machine(TreeModel):
        fns = harness_fns

    Machine.TestCase.settings = settings(
        max_examples=12, stateful_step_count=20, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    Machine.TestCase().runTest()
