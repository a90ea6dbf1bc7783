"""What the FileSR and LVMSR test harnesses share: test data, the pyvhdi
chain reader and the calls into a driver made the way xapi makes them.

``SRHarness.run`` executes drivers/<driver> as a program with xapi-shaped
XML (tests/conftest.py builds it); ``SRHarness.inproc`` sends the same XML
through smlib.protocol.smapi.handle in this process. Each store's harness
(filesr_helpers.FileSRHarness, lvmsr_helpers.LVMSRHarness) adds how a guest
writes and how the bytes are read back.
"""

from __future__ import annotations

import abc
import os
import xmlrpc.client
from typing import Callable, Optional

MiB = 1 << 20
KiB = 1 << 10
DISK = 16 * MiB  # default test disk: 8 VHD blocks


def pattern(tag: str, length: int = 64 * KiB) -> bytes:
    """A recognisable 4 KiB-aligned pattern (pyvhdi mis-decodes sub-4-KiB
    bitmaps, so test writes stay 4 KiB-aligned)."""
    unit = (tag.encode() * 4096)[:4096]
    return unit * (length // 4096)


def pyvhdi_chain_read(directory: str, leaf_file: str, offset: int, length: int) -> bytes:
    """Read through a chain with pyvhdi (libvhdi, an independent reader):
    parents are found from each header's parent name, looked up in
    ``directory``, and opened base first."""
    import pyvhdi

    chain = [os.path.join(directory, leaf_file)]
    while True:
        f = pyvhdi.file()
        f.open(chain[-1])
        parent = f.get_parent_filename() if f.get_disk_type() == 4 else None
        f.close()
        if not parent:
            break
        chain.append(os.path.join(directory, os.path.basename(parent)))
    files = []
    try:
        for p in reversed(chain):
            f = pyvhdi.file()
            f.open(p)
            if files:
                f.set_parent(files[-1])
            files.append(f)
        return files[-1].read_buffer_at_offset(length, offset)
    finally:
        for f in reversed(files):
            f.close()


class SRHarness(abc.ABC):
    """One SR of ``DRIVER``; ``fns`` = (run_driver, xapi_params, dispatch),
    the shared fixtures' functions (tests/conftest.py). A store's harness
    adds ``write`` (as a guest writes), ``read`` (through pyvhdi),
    ``fingerprint`` (hashes of every byte the SR keeps) and ``check_all``."""

    DRIVER = ""                 # executable name under drivers/
    DRIVER_CLASS: type = object  # the same driver, for in-process calls

    def __init__(self, fns: tuple, sr_uuid: str, device_config: dict) -> None:
        self.fns = fns
        self.sr_uuid = sr_uuid
        self.dc = device_config

    def params(self, command: str, **keys) -> dict:
        keys = {"device_config": self.dc, "sr_uuid": self.sr_uuid, **keys}
        return self.fns[1](command, **keys)

    def run(self, command: str, *, env: Optional[dict] = None, timeout: float = 60, **keys):
        """The real executable; returns the DriverRun."""
        return self.fns[0](self.DRIVER, self.params(command, **keys), env=env, timeout=timeout)

    def ok(self, command: str, **keys):
        r = self.run(command, **keys)
        assert r.returncode == 0, r.stderr
        return r.ok()

    def fault(self, command: str, **keys) -> xmlrpc.client.Fault:
        r = self.run(command, **keys)
        assert r.returncode == 0, r.stderr
        assert r.fault is not None, f"{command} succeeded: {r.result}"
        return r.fault

    def inproc(self, command: str, **keys):
        """Same XML, in this process (raises xmlrpc.client.Fault)."""
        return self.fns[2](self.DRIVER_CLASS, command, device_config=self.dc,
                           sr_uuid=self.sr_uuid, **keys)

    @abc.abstractmethod
    def setup(self, command: str, **keys):
        """How a set-up step runs when the test names no way: the FileSR
        tests run everything as a process, the LVMSR tests set up in
        process (lvm2 runs make each driver process slow)."""

    # -------------------------------------------------------- helpers

    def create(self, size: int = DISK, name: str = "disk",
               call: Optional[Callable] = None) -> str:
        call = call or self.setup
        return call("vdi_create", args=[str(size), name, "", "", "false", "", "", "false"])["uuid"]

    def snapshot(self, uuid: str, call: Optional[Callable] = None, **keys) -> str:
        return (call or self.setup)("vdi_snapshot", vdi_uuid=uuid, **keys)["uuid"]

    def vdis(self, call: Optional[Callable] = None) -> dict[str, dict]:
        call = call or self.setup
        return {v["uuid"]: v for v in call("vdi_list")}

    # -------------------------------------------------------- consistency

    @abc.abstractmethod
    def volume_facts(self) -> dict[str, tuple[str, bool, str]]:
        """Every volume in the store (transient ones too) -> (parent uuid
        from its image's locator or "", the image's hidden flag, its
        virtual size as a decimal string): what the images say."""

    @abc.abstractmethod
    def check_all(self) -> None:
        """Every image passes the VHD check; no journal, no leftovers."""

    def check_consistent(self, call: Optional[Callable] = None) -> dict[str, dict]:
        """After GC: no volume the metadata does not know (and the reverse),
        no base without children, metadata parents / hidden flags / sizes
        as the images say, every image valid, no journal. Returns vdi_list."""
        listing = self.vdis(call=call)
        facts = self.volume_facts()
        assert sorted(facts) == sorted(listing), "volumes and metadata differ"
        parents = {v["parent"] for v in listing.values()}
        for uuid, v in listing.items():
            if v["hidden"]:
                assert uuid in parents, f"leaked base {uuid}"
            assert facts[uuid] == (v["parent"], v["hidden"], v["virtual_size"]), uuid
        self.check_all()
        return listing

    # ---------------------------------------- behind the driver's back
    # What a failing disk, a careless operator or an attacker does to the
    # SR's storage (tests/helpers/hostile_scenarios.py); each store says how.

    @abc.abstractmethod
    def volume_hashes(self) -> dict[str, object]:
        """Volume name -> a digest of every byte it holds."""

    @abc.abstractmethod
    def damage(self, uuid: str, how: Callable[[str], None]) -> None:
        """Call ``how(path)`` on the volume's bytes (a file or a device)."""

    @abc.abstractmethod
    def edit_metadata(self, edit: Callable[[bytes], bytes]) -> None:
        """Replace the SR metadata document by ``edit(document)``."""

    @abc.abstractmethod
    def put_journal(self, key: str, data: bytes) -> None:
        """Add (or overwrite) a raw journal record."""

    @abc.abstractmethod
    def drop_journal(self, key: str) -> None:
        """Remove a journal record, as an operator would."""

    @abc.abstractmethod
    def journal_keys(self) -> list[str]:
        """The keys of the journal records present."""

    @abc.abstractmethod
    def volumes(self) -> list[str]:
        """Names of the volumes present (files / LVs), bookkeeping excluded."""

    @abc.abstractmethod
    def drop_volume(self, uuid: str) -> None:
        """Remove a volume without telling the driver."""
