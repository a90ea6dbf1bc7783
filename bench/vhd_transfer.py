"""VHD data-path benchmarks: export, import and coalesce of 1 GiB, against cat / cp.

Each pair runs side by side in one process on the same files (warm page
cache for both sides); the ratio is raw-tool time / library time, so 1.0
means as fast as the raw tool and the goal is >= 0.5. The library fsyncs a
written image when it closes it, so import and coalesce are also compared
with `cp` followed by `sync FILE`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

from smlib import vhd

GiB = 1024 ** 3
CHUNK = 16 * 1024 * 1024


def _timed(fn: Callable[[], object], reps: int,
           setup: Optional[Callable[[], object]] = None) -> float:
    """Best of reps; ``setup`` runs before each, untimed."""
    best = float("inf")
    for _ in range(reps):
        if setup is not None:
            setup()
        os.sync()    # no write-back of the previous step is billed to this one
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _random_raw(path: str, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // CHUNK):
            f.write(os.urandom(CHUNK))


def _fresh(path: str, size: int) -> None:
    if os.path.exists(path):
        os.unlink(path)
    vhd.create(path, size)


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def _report(name: str, lib: float, raw: float, raw_name: str) -> None:
    print(f"  {name:<34} library {lib:6.2f} s   {raw_name:<12} {raw:6.2f} s"
          f"   ratio {raw / lib:5.2f}  (goal >= 0.5)")


def main(size: int = GiB, reps: int = 3) -> None:
    print(f"VHD transfer benchmarks ({size // (1024 * 1024)} MiB, best of {reps})")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        raw, img = os.path.join(d, "disk.raw"), os.path.join(d, "disk.vhd")
        _random_raw(raw, size)
        _fresh(img, size)
        with open(raw, "rb") as inp:
            vhd.import_raw(img, inp)

        def export() -> None:
            with open(os.devnull, "wb") as out:
                vhd.export_raw(img, out)
        _report("export (to /dev/null)", _timed(export, reps),
                _timed(lambda: _sh("sh", "-c", f"cat {raw} > /dev/null"), reps), "cat")
        dump = os.path.join(d, "export.raw")

        def export_file() -> None:
            with open(dump, "wb") as out:
                vhd.export_raw(img, out)
        _report("export (to a file)", _timed(export_file, reps),
                _timed(lambda: _sh("sh", "-c", f"cat {raw} > {dump}"), reps), "cat")
        os.unlink(dump)

        target, copy = os.path.join(d, "import.vhd"), os.path.join(d, "copy.raw")

        def drop_target() -> None:
            # Unlinking the previous 1 GiB target (the kernel frees its
            # blocks, ~0.2 s here) is not part of an import: done untimed.
            if os.path.exists(target):
                os.unlink(target)

        def do_import() -> None:
            vhd.create(target, size)
            with open(raw, "rb") as inp:
                vhd.import_raw(target, inp)
        lib = _timed(do_import, reps, setup=drop_target)
        _report("import", lib, _timed(lambda: _sh("cp", raw, copy), reps), "cp")
        _report("import", lib, _timed(lambda: _sh("sh", "-c", f"cp {raw} {copy} && sync {copy}"),
                                      reps), "cp+sync")
        os.unlink(target)

        base, child = os.path.join(d, "base.vhd"), os.path.join(d, "child.vhd")

        def do_coalesce() -> None:
            _fresh(base, size)
            if os.path.exists(child):
                os.unlink(child)
            vhd.snapshot(child, base)
            with open(raw, "rb") as inp:
                vhd.import_raw(child, inp)
            os.sync()
            start = time.perf_counter()
            vhd.coalesce(child)
            return time.perf_counter() - start
        lib = min(do_coalesce() for _ in range(reps))
        _report("coalesce 1 GiB child", lib, _timed(lambda: _sh("cp", img, copy), reps), "cp")
        _report("coalesce 1 GiB child", lib,
                _timed(lambda: _sh("sh", "-c", f"cp {img} {copy} && sync {copy}"), reps),
                "cp+sync")


if __name__ == "__main__":
    main(int(sys.argv[1]) * 1024 * 1024 if len(sys.argv) > 1 else GiB)
