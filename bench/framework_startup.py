"""Driver start-up: one sr_get_driver_info call vs `python -c pass`, side by side.

xapi runs a driver process per storage operation, so start-up is every
call's latency floor. Both commands use the same interpreter (the driver's
`#!/usr/bin/env python3` resolves to it through PATH), run interleaved so
that machine load hits both alike; the ratio of medians is the figure.
Goal: <= 2.5 for every driver (DummySR is the headline). The same is
measured on dom0's CPython 3.6 when one is found (the dom0 tier's .venv36,
else .ci/find-python36), printed beside it: goal <= 1.5 there.
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
GOAL_DOM0 = 1.5  # dom0's CPython 3.6 (issue 14)
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
    answered = argv[1:] == ["-c", "pass"] or b"<params>" in proc.stdout
    if proc.returncode != 0 or not answered:
        raise RuntimeError(f"{argv[0]} failed: {proc.stdout[-300:]!r} {proc.stderr[-300:]!r}")
    return elapsed


def _drivers() -> list[str]:
    """DummySR first (the headline), then every other driver of the checkout."""
    names = sorted(n for n in os.listdir(os.path.dirname(DRIVER)) if n.endswith("SR"))
    return [DRIVER] + [os.path.join(os.path.dirname(DRIVER), n) for n in names
                       if n != "DummySR"]


def _python36() -> tuple[str, str] | None:
    """(interpreter, directory whose python3 is it) of a CPython 3.6, dom0's:
    the dom0 tier's .venv36 when made, else what .ci/find-python36 finds."""
    venv = os.path.join(REPO, ".venv36", "bin")
    if os.path.exists(os.path.join(venv, "python3")):
        return os.path.join(venv, "python3"), venv
    found = subprocess.run([os.path.join(REPO, ".ci", "find-python36")],
                           capture_output=True, text=True)
    py = found.stdout.strip()
    if found.returncode != 0 or not py:
        return None
    bin_dir = os.path.dirname(py)
    if not os.path.exists(os.path.join(bin_dir, "python3")):
        return None  # a python3.6 with no python3 beside it cannot run the shebang
    return py, bin_dir


def measure(python: str, bin_dir: str, drivers: list[str], rounds: int) -> dict:
    """Median ms of `python -c pass` and of each driver's sr_get_driver_info,
    the drivers' `python3` being the one in bin_dir; interleaved rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env["SM_LOG"] = os.path.join(tmp, "SMlog")  # the log write is part of a call
        env["ORIGINATOR"] = "SM"
        # An installed driver runs from compiled .pyc files; a machine that
        # sets PYTHONDONTWRITEBYTECODE would bill a recompile of every
        # changed module to every call. The warm-up run writes the cache.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        bare = [python, "-c", "pass"]
        for argv in [bare] + [[d, CALL] for d in drivers]:
            _time(argv, env)  # warm caches and .pyc files
        times: dict[str, list[float]] = {"python -c pass": []}
        times.update({os.path.basename(d): [] for d in drivers})
        for _ in range(rounds):  # interleaved: load hits every command alike
            times["python -c pass"].append(_time(bare, env))
            for d in drivers:
                times[os.path.basename(d)].append(_time([d, CALL], env))
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def main(rounds: int = 40) -> float:
    """Print each driver's median against the bare interpreter's, on this
    interpreter and on dom0's CPython 3.6 side by side; return DummySR's
    ratio on this interpreter."""
    drivers = _drivers()
    here = measure(sys.executable, os.path.dirname(sys.executable), drivers, rounds)
    py36 = _python36()
    dom0 = measure(py36[0], py36[1], drivers, rounds) if py36 else None
    columns = [(f"{sys.version_info[0]}.{sys.version_info[1]}", here, GOAL)]
    if dom0:
        columns.append(("3.6 (dom0)", dom0, GOAL_DOM0))
    print(f"{rounds} rounds each; {sys.executable}" + (f" and {py36[0]}" if py36 else
                                                       "; no CPython 3.6 found"))
    print(f"{'':28}" + "".join(f"{label:>28}" for label, _, _ in columns))
    print(f"{'python -c pass':28}" + "".join(f"{m['python -c pass']:>22.1f} ms   "
                                             for _, m, _ in columns))
    for d in drivers:
        name = os.path.basename(d)
        cells = []
        for _, m, goal in columns:
            ratio = m[name] / m["python -c pass"]
            verdict = "ok" if ratio <= goal else "OVER"
            cells.append(f"{m[name]:6.1f} ms {ratio:4.2f}x {verdict:>4}    ")
        print(f"{name + ' sr_get_driver_info':28}" + "".join(f"{c:>28}" for c in cells))
    print("goals: " + ", ".join(f"{label} <= {goal}x" for label, _, goal in columns))
    return here["DummySR"] / here["python -c pass"]


if __name__ == "__main__":
    main()
