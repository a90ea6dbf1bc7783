"""A served disk over NBD: our nbdkit export of a FileSR VDI vs qemu-nbd raw.

Both servers listen on a Unix socket; the same client (``qemu-img bench``,
one request in flight) drives both, rounds interleaved, median of each:

- sequential write of 256 MiB in 1 MiB requests, one flush at the end,
  into a fresh disk (our VHD allocates every block; qemu-nbd's raw file is
  a fresh sparse file);
- sequential read of the same 256 MiB in 1 MiB requests;
- 4 KiB reads, 20000 of them, at a large stride (a pseudo-random walk that
  defeats read-ahead) over the written 256 MiB;
- vdi_activate to first byte: the FileSR executable's vdi_activate (which
  starts nbdkit and waits until it serves) plus a connect and a 512-byte
  read by a minimal NBD client, against starting qemu-nbd and the same read.

Ratio = qemu-nbd time / our time for throughput (goal >= 0.5 for the
sequential 1 MiB figures), our time / qemu-nbd time for start-up.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import time

from bench._filesr_util import BenchSR

MiB = 1 << 20
SIZE = 256 * MiB
GOAL = 0.5
STRIDE = 1003 * MiB + 4096      # 4 KiB reads walk the disk at this step (mod SIZE)


def first_byte(sock: str, export: str, deadline: float = 10.0) -> None:
    """Connect (retrying until the socket answers), negotiate and read 512 bytes."""
    end = time.monotonic() + deadline
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            break
        except OSError:
            s.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.001)
    with s:
        f = s.makefile("rwb", buffering=0)
        assert f.read(16) == b"NBDMAGICIHAVEOPT"
        f.read(2)                                            # handshake flags
        f.write(struct.pack(">I", 3))                        # fixed newstyle, no zeroes
        name = export.encode()
        f.write(b"IHAVEOPT" + struct.pack(">II", 1, len(name)) + name)   # EXPORT_NAME
        f.read(10)                                           # size, flags
        f.write(struct.pack(">IHHQQI", 0x25609513, 0, 0, 1, 0, 512))    # READ
        reply = f.read(16)
        magic, error, _ = struct.unpack(">IIQ", reply)
        assert magic == 0x67446698 and error == 0, reply
        assert len(f.read(512)) == 512


def qemu_bench(target: str, *args: str) -> float:
    argv = ["qemu-img", "bench", "-f", "raw", "-d", "1", *args, target]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def start_qemu_nbd(sock: str, raw: str) -> None:
    subprocess.run(["qemu-nbd", "-t", "-f", "raw", "-k", sock, "-x", "raw", "--fork",
                    "--pid-file", sock + ".pid", raw], check=True, capture_output=True)


def stop_qemu_nbd(sock: str) -> None:
    with open(sock + ".pid") as f:
        pid = int(f.read())
    os.kill(pid, 15)
    while os.path.exists(f"/proc/{pid}"):
        time.sleep(0.001)


def main(rounds: int = 3) -> dict:
    for tool in ("qemu-img", "qemu-nbd", "nbdkit"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not installed (qemu-utils, nbdkit, nbdkit-plugin-python)")
    results: dict = {k: ([], []) for k in ("write", "read", "rand4k", "first")}
    with tempfile.TemporaryDirectory(prefix="dpb", dir="/tmp") as tmp:
        os.environ["SMLIB_NBD_DIR"] = os.path.join(tmp, "nbd")
        os.environ["SMLIB_DATAPATH_DIR"] = os.path.join(tmp, "run")
        os.environ["SMLIB_DATAPATH"] = "nbdkit"
        sr = BenchSR(tmp)
        sr.env.update({k: os.environ[k] for k in
                       ("SMLIB_NBD_DIR", "SMLIB_DATAPATH_DIR", "SMLIB_DATAPATH")})
        qsock, raw = os.path.join(tmp, "q.sock"), os.path.join(tmp, "disk.raw")
        qtarget = f"nbd:unix:{qsock}:exportname=raw"
        for _ in range(rounds):
            vdi = sr.create(SIZE)
            ours = sr.call("vdi_attach", vdi=vdi, args=("true",))["params_nbd"]
            link = ours[len("nbd:unix:"):].rpartition(":exportname=")[0]
            results["first"][0].append(sr.timed("vdi_activate", vdi, ("true",)))
            t = time.perf_counter()
            first_byte(link, vdi)
            results["first"][0][-1] += time.perf_counter() - t
            with open(raw, "wb") as f:
                f.truncate(SIZE)
            os.sync()
            t = time.perf_counter()
            start_qemu_nbd(qsock, raw)
            first_byte(qsock, "raw")
            results["first"][1].append(time.perf_counter() - t)
            for key, args in (("write", ("-w", "-c", "256", "-s", "1M", "--flush-interval=256")),
                              ("read", ("-c", "256", "-s", "1M")),
                              ("rand4k", ("-c", "20000", "-s", "4k", "-S", str(STRIDE)))):
                results[key][0].append(qemu_bench(ours, *args))
                results[key][1].append(qemu_bench(qtarget, *args))
            stop_qemu_nbd(qsock)
            sr.call("vdi_deactivate", vdi=vdi)
            sr.call("vdi_detach", vdi=vdi)
            sr.call("vdi_delete", vdi=vdi)
            os.remove(raw)
    return _report(results)


def _report(results: dict) -> dict:
    ratios = {}
    labels = {"write": "sequential write 256 MiB, 1 MiB requests",
              "read": "sequential read 256 MiB, 1 MiB requests",
              "rand4k": "20000 strided 4 KiB reads",
              "first": "vdi_activate to first byte"}
    for key, (ours, ref) in results.items():
        mo, mr = statistics.median(ours), statistics.median(ref)
        if key == "first":
            ratio = mo / mr
            print(f"  {labels[key]:<42} ours {mo * 1000:7.1f} ms, qemu-nbd start "
                  f"{mr * 1000:7.1f} ms: {ratio:.2f}x the time")
        else:
            per = SIZE if key != "rand4k" else 20000 * 4096
            ratio = mr / mo
            goal = f" (goal >= {GOAL})" if key in ("write", "read") else ""
            print(f"  {labels[key]:<42} ours {per / MiB / mo:7.0f} MiB/s, qemu-nbd "
                  f"{per / MiB / mr:7.0f} MiB/s: ratio {ratio:.2f}{goal}")
        ratios[key] = ratio
    return ratios


if __name__ == "__main__":
    main()
