"""Driver start-up: one sr_get_driver_info call vs `python -c pass`, side by side.

xapi runs a driver process per storage operation, so start-up is every
call's latency floor. Both commands use the same interpreter (the driver's
`#!/usr/bin/env python3` resolves to it through PATH), run interleaved so
that machine load hits both alike; the ratio of medians is the figure.
Goal: <= 2.5 for every driver (DummySR is the headline).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(REPO, "drivers", "DummySR")
GOAL = 2.5
CALL = (
    '<?xml version="1.0"?><methodCall><methodName>sr_get_driver_info</methodName>'
    "<params><param><value><struct>"
    "<member><name>host_ref</name><value>OpaqueRef:1b5b9a2c-0e43-4b8e-a3a4-7d0f1c2e9f10</value>"
    "</member><member><name>command</name><value>sr_get_driver_info</value></member>"
    "<member><name>args</name><value><array><data></data></array></value></member>"
    "<member><name>device_config</name><value><struct></struct></value></member>"
    "<member><name>session_ref</name><value>OpaqueRef:5c0e4d1a-8f7b-4a55-9c1e-2b3d4e5f6a7b"
    "</value></member></struct></value></param></params></methodCall>"
)


def _time(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    answered = argv[0] == sys.executable or b"<params>" in proc.stdout
    if proc.returncode != 0 or not answered:
        raise RuntimeError(f"{argv[0]} failed: {proc.stdout[-300:]!r} {proc.stderr[-300:]!r}")
    return elapsed


def _drivers() -> list[str]:
    """DummySR first (the headline), then every other driver of the checkout."""
    names = sorted(n for n in os.listdir(os.path.dirname(DRIVER)) if n.endswith("SR"))
    return [DRIVER] + [os.path.join(os.path.dirname(DRIVER), n) for n in names
                       if n != "DummySR"]


def main(rounds: int = 40) -> float:
    """Print each driver's median against the bare interpreter's; return DummySR's ratio."""
    drivers = _drivers()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env["SM_LOG"] = os.path.join(tmp, "SMlog")  # the log write is part of a call
        env["ORIGINATOR"] = "SM"
        # An installed driver runs from compiled .pyc files; a machine that
        # sets PYTHONDONTWRITEBYTECODE would bill a recompile of every
        # changed module to every call. The warm-up run writes the cache.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        bare = [sys.executable, "-c", "pass"]
        for argv in [bare] + [[d, CALL] for d in drivers]:
            _time(argv, env)  # warm caches and .pyc files
        times: dict[str, list[float]] = {"python -c pass": []}
        times.update({os.path.basename(d): [] for d in drivers})
        for _ in range(rounds):  # interleaved: load hits every command alike
            times["python -c pass"].append(_time(bare, env))
            for d in drivers:
                times[os.path.basename(d)].append(_time([d, CALL], env))
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    bare_ms = medians.pop("python -c pass")
    print(f"{'python -c pass':28} median {bare_ms:6.1f} ms  ({rounds} rounds, {sys.executable})")
    for name, ms in medians.items():
        ratio = ms / bare_ms
        verdict = "within" if ratio <= GOAL else "OVER"
        print(f"{name + ' sr_get_driver_info':28} median {ms:6.1f} ms  ratio {ratio:4.2f}x"
              f"  ({verdict} the {GOAL}x goal)")
    return medians["DummySR"] / bare_ms


if __name__ == "__main__":
    main()
