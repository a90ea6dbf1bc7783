"""Shared pieces of the driver benchmarks: calls built the way xapi builds
them, timing of a real driver process (DriverBench; the LVMSR benchmark's
SR is one too), a FileSR in a temp dir (BenchSR), the ratio report."""

from __future__ import annotations

import abc
import os
import statistics
import subprocess
import sys
import time
import uuid as uuidlib
import xmlrpc.client

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(REPO, "drivers", "FileSR")
GiB = 1 << 30
TiB = 1 << 40
BLOCK = 2 << 20


def ref() -> str:
    return f"OpaqueRef:{uuidlib.uuid4()}"


def driver_env(tmp: str) -> dict:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["SM_LOG"] = os.path.join(tmp, "SMlog")
    env["ORIGINATOR"] = "SM"
    # An installed driver runs from compiled .pyc files; this build machine
    # sets PYTHONDONTWRITEBYTECODE, which would bill a recompile of every
    # module to every call. Let the warm-up run write the cache.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class DriverBench(abc.ABC):
    """One SR of a driver: ``call`` in process, ``timed`` as the real
    executable. A subclass sets DRIVER (the executable), ``driver_class()``
    and ``device_config``, and ``sr_uuid`` before calling."""

    DRIVER = ""
    device_config: dict
    sr_uuid: str
    env: dict

    @staticmethod
    @abc.abstractmethod
    def driver_class() -> type:
        """The driver's class, for in-process calls."""

    def xml(self, command: str, vdi: str = "", args: tuple = (), **extra) -> str:
        params = {"host_ref": ref(), "command": command, "args": list(args),
                  "device_config": self.device_config, "session_ref": ref(),
                  "sr_ref": ref(), "sr_uuid": self.sr_uuid, **extra}
        if vdi:
            params.update(vdi_ref=ref(), vdi_uuid=vdi, vdi_location=vdi)
        return xmlrpc.client.dumps((params,), methodname=command)

    def call(self, command: str, vdi: str = "", args: tuple = (), **extra):
        from smlib.protocol import smapi

        text = smapi.handle(self.driver_class(), [self.xml(command, vdi, args, **extra)])
        (result,), _ = xmlrpc.client.loads(text)  # a fault raises here
        return result

    def timed(self, command: str, vdi: str = "", args: tuple = ()) -> float:
        """Seconds for one run of the real executable (must succeed)."""
        argv = [self.DRIVER, self.xml(command, vdi, args)]
        start = time.perf_counter()
        proc = subprocess.run(argv, env=self.env, capture_output=True,
                              stdin=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        try:
            xmlrpc.client.loads(proc.stdout.decode())
        except xmlrpc.client.Fault as f:
            raise RuntimeError(f"{command} failed: {f.faultString}") from None
        return elapsed


class BenchSR(DriverBench):
    """A FileSR in ``root``; ``call`` in process, ``timed`` as a process."""

    DRIVER = DRIVER

    def __init__(self, root: str) -> None:
        self.location = os.path.join(root, "sr")
        self.device_config = {"location": self.location}
        self.sr_uuid = str(uuidlib.uuid4())
        self.env = driver_env(root)
        os.environ["SM_LOG"] = self.env["SM_LOG"]  # in-process calls log here too
        self.call("sr_create")

    @staticmethod
    def driver_class() -> type:
        from smlib.drivers.file import FileSR

        return FileSR

    def path(self, uuid: str) -> str:
        return os.path.join(self.location, uuid + ".vhd")

    def create(self, size: int) -> str:
        return self.call("vdi_create", args=(str(size), "bench"))["uuid"]

    def fill(self, uuid: str, nbytes: int, tag: int) -> None:
        """Write nbytes of data into the VDI's own image (whole blocks)."""
        from smlib import vhd

        chunk = bytes([tag & 0xFF]) * min(BLOCK, nbytes)
        with vhd.open_image(self.path(uuid), writable=True) as img:
            for off in range(0, nbytes, len(chunk)):
                img.write(off, chunk)
        os.sync()  # so no write-back of the fill is billed to a timed step

    def snapshot(self, uuid: str) -> str:
        return self.call("vdi_snapshot", vdi=uuid)["uuid"]


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def report(label_a: str, a: list[float], label_b: str, b: list[float],
           goal: float | None = None) -> float:
    """Print both medians and the ratio b / a."""
    ma, mb = median_ms(a), median_ms(b)
    ratio = mb / ma
    print(f"  {label_a:<44} median {ma:8.1f} ms ({len(a)} runs)")
    print(f"  {label_b:<44} median {mb:8.1f} ms ({len(b)} runs)")
    if goal is None:
        print(f"  ratio {ratio:6.2f}x")
    else:
        verdict = "within" if ratio <= goal else "OVER"
        print(f"  ratio {ratio:6.2f}x ({verdict} the {goal}x goal)")
    return ratio


def python_pass(env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True,
                   stdin=subprocess.DEVNULL)
    return time.perf_counter() - start
