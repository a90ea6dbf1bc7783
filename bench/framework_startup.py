"""Driver start-up: one sr_get_driver_info call vs `python -c pass`, side by side.

xapi runs a driver process per storage operation, so start-up is every
call's latency floor. Both commands use the same interpreter (the driver's
`#!/usr/bin/env python3` resolves to it through PATH), run interleaved so
that machine load hits both alike; the ratio of medians is the figure.
Goal: <= 2.5.
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
    answered = argv[0] != DRIVER or b"<methodResponse>" in proc.stdout
    if proc.returncode != 0 or not answered:
        raise RuntimeError(f"{argv[0]} failed: {proc.stderr.decode()[-500:]}")
    return elapsed


def main(rounds: int = 40) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env["SM_LOG"] = os.path.join(tmp, "SMlog")  # the log write is part of a call
        env["ORIGINATOR"] = "SM"
        bare = [sys.executable, "-c", "pass"]
        driver = [DRIVER, CALL]
        _time(bare, env), _time(driver, env)  # warm caches and .pyc files
        bare_times, driver_times = [], []
        for _ in range(rounds):
            bare_times.append(_time(bare, env))
            driver_times.append(_time(driver, env))
    bare_ms = statistics.median(bare_times) * 1000
    driver_ms = statistics.median(driver_times) * 1000
    ratio = driver_ms / bare_ms
    print(f"python -c pass        median {bare_ms:6.1f} ms  ({rounds} runs, {sys.executable})")
    print(f"DummySR driver_info   median {driver_ms:6.1f} ms  ({rounds} runs, interleaved)")
    verdict = "within" if ratio <= GOAL else "OVER"
    print(f"ratio driver / python {ratio:5.2f}x  ({verdict} the {GOAL}x goal)")
    return ratio


if __name__ == "__main__":
    main()
