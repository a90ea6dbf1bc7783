"""Concurrency: 4 workers, each running 100 mixed commands as real
drivers/FileSR processes on one SR at the same time.

Each worker owns its own VDIs (so it can keep an exact model of their
contents) while sharing the SR: its metadata, journal, lock and GC.
Every command must succeed or fail with an SR error (never 1200, never
hang); afterwards every image passes the check, every VDI holds what the
last successful write or revert left, nothing leaked, and the metadata
agrees with the images.
"""

from __future__ import annotations

import random
import threading

import pytest
from helpers.filesr_helpers import DISK, FileSRHarness, pattern

from smlib import vhd

WORKERS = 4
COMMANDS = 100
LEN = 8192


class Worker:
    def __init__(self, sr: FileSRHarness, seed: int) -> None:
        self.sr = sr
        self.rng = random.Random(seed)
        self.seed = seed
        self.model: dict[str, bytes] = {}  # uuid -> first LEN bytes
        self.snaps: dict[str, list[str]] = {}  # disk -> its snapshots
        self.commands = 0
        self.faults: list[tuple[str, int, str]] = []
        self.error: BaseException | None = None

    def call(self, command: str, **keys):
        """One driver run; the result, or None after an SR error."""
        self.commands += 1
        r = self.sr.run(command, **keys)
        assert r.returncode == 0, r.stderr
        if r.fault is not None:
            assert r.fault.faultCode != 1200, r.fault.faultString
            self.faults.append((command, r.fault.faultCode, r.fault.faultString))
            return None
        return r.result if r.result is not None else True

    def step(self) -> None:
        disks = list(self.snaps)
        choice = self.rng.random()
        if not disks or (choice < 0.1 and len(disks) < 3):
            res = self.call("vdi_create", args=[str(DISK), f"w{self.seed}"])
            if res:
                self.model[res["uuid"]] = bytes(LEN)
                self.snaps[res["uuid"]] = []
            return
        disk = self.rng.choice(disks)
        snaps = self.snaps[disk]
        if choice < 0.35:
            att = self.call("vdi_attach", vdi_uuid=disk, args=["true"])
            if att:
                data = pattern(f"{self.seed}{self.commands}", LEN)
                with vhd.open_image(att["params"], writable=True) as img:
                    img.write(0, data)
                self.model[disk] = data
                self.call("vdi_detach", vdi_uuid=disk)
        elif choice < 0.55:
            res = self.call("vdi_snapshot", vdi_uuid=disk)
            if res:
                snaps.append(res["uuid"])
                self.model[res["uuid"]] = self.model[disk]
        elif choice < 0.75 and snaps:
            snap = self.rng.choice(snaps)
            if self.call("vdi_revert", vdi_uuid=snap, args=[disk]):
                self.model[disk] = self.model[snap]
        elif choice < 0.85 and snaps:
            snap = snaps.pop(0)
            if self.call("vdi_delete", vdi_uuid=snap):
                del self.model[snap]
            else:
                snaps.insert(0, snap)
        elif choice < 0.9:
            res = self.call("vdi_clone", vdi_uuid=disk)
            if res:
                self.model[res["uuid"]] = self.model[disk]
                self.snaps[res["uuid"]] = []
        else:
            self.call(self.rng.choice(["vdi_list", "sr_scan", "sr_update"]))

    def run(self) -> None:
        try:
            while self.commands < COMMANDS:
                self.step()
        except BaseException as e:  # reported by the test thread
            self.error = e


@pytest.mark.slow
def test_four_processes_hundred_commands(filesr):
    sr = filesr
    workers = [Worker(sr, seed) for seed in range(WORKERS)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
        assert not t.is_alive(), "a worker hung"
    for w in workers:
        if w.error is not None:
            raise w.error
    # The SR error paths are allowed but none is expected here.
    assert [f for w in workers for f in w.faults] == []
    sr.ok("sr_scan")
    listing = sr.check_consistent()
    expected = {u: d for w in workers for u, d in w.model.items()}
    assert sorted(u for u, v in listing.items() if not v["hidden"]) == sorted(expected)
    for uuid, data in expected.items():
        assert sr.read(uuid, 0, LEN) == data, uuid
