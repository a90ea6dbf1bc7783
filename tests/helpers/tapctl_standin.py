"""A recording stand-in for blktap's ``tap-ctl`` (this machine has no blktap).

A mock, said plainly: no tapdisk runs and no NBD socket appears; what the
tests check is that the driver calls tap-ctl exactly as sm's blktap2 module
does (verbs, arguments, order) and reacts to its answers. The script
appends each argv to ``calls.jsonl``, keeps the state a real blktap would
(allocated minors, spawned and opened tapdisks) in ``state.json``, and
rejects any argument shape sm never uses. ``$TAPCTL_FAIL=<verb>`` makes
that verb fail (exit 1), to drive the unwinding.
"""

from __future__ import annotations

import json
import os
import stat
import sys

SCRIPT = r'''#!@PYTHON@
import json, os, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
calls, state_path = os.path.join(here, "calls.jsonl"), os.path.join(here, "state.json")
argv = sys.argv[1:]
with open(calls, "a") as f:
    f.write(json.dumps(argv) + "\n")
try:
    with open(state_path) as f:
        state = json.load(f)
except FileNotFoundError:
    state = {"next": 0, "minors": [], "taps": {}}


def save():
    with open(state_path, "w") as f:
        json.dump(state, f)


def bad(why):
    sys.stderr.write("stand-in tap-ctl: %s: %r\n" % (why, argv))
    sys.exit(2)


def opts(args, allowed, flags=()):
    out, i = {}, 0
    while i < len(args):
        if args[i] in flags:
            out[args[i]] = True
            i += 1
        elif args[i] in allowed and i + 1 < len(args):
            out[args[i]] = args[i + 1]
            i += 2
        else:
            bad("unexpected argument " + args[i])
    return out


verb, rest = (argv[0], argv[1:]) if argv else ("", [])
if os.environ.get("TAPCTL_FAIL") == verb:
    sys.stderr.write("injected failure of %s\n" % verb)
    sys.exit(1)
if verb == "allocate":
    opts(rest, ())
    minor = state["next"]
    state["next"] += 1
    state["minors"].append(minor)
    save()
    print("/run/blktap-control/tapdisk/tapdisk-%d" % minor)
elif verb == "spawn":
    opts(rest, ())
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state["taps"][str(proc.pid)] = {"minor": None, "path": None}
    save()
    print(proc.pid)
elif verb == "attach":
    o = opts(rest, ("-p", "-m"))
    if set(o) != {"-p", "-m"} or int(o["-m"]) not in state["minors"]:
        bad("attach needs -p <spawned pid> -m <allocated minor>")
    state["taps"][o["-p"]]["minor"] = int(o["-m"])
    save()
elif verb == "open":
    o = opts(rest, ("-p", "-m", "-a"), flags=("-R",))
    if not {"-p", "-m", "-a"} <= set(o) or not o["-a"].startswith("vhd:"):
        bad("open needs -p -m -a vhd:<path>")
    tap = state["taps"][o["-p"]]
    if tap["minor"] != int(o["-m"]):
        bad("open of a minor the tapdisk is not attached to")
    tap["path"] = o["-a"][len("vhd:"):]
    save()
elif verb == "list":
    o = opts(rest, ("-m", "-p", "-t", "-f"))
    for pid, tap in sorted(state["taps"].items()):
        if tap["path"] is None:
            continue
        if "-m" in o and int(o["-m"]) != tap["minor"] or "-p" in o and o["-p"] != pid \
                or "-f" in o and o["-f"] != tap["path"]:
            continue
        print("pid=%s minor=%d state=0 args=vhd:%s" % (pid, tap["minor"], tap["path"]))
elif verb == "pause":
    o = opts(rest, ("-p", "-m"))
    if set(o) != {"-p", "-m"} or state["taps"][o["-p"]]["minor"] != int(o["-m"]):
        bad("pause needs -p <pid> -m <its minor>")
    state["taps"][o["-p"]]["paused"] = True
    save()
elif verb == "unpause":
    o = opts(rest, ("-p", "-m", "-a", "-2", "-c"))
    tap = state["taps"][o["-p"]]
    if not tap.get("paused") or tap["minor"] != int(o["-m"]):
        bad("unpause of a tapdisk not paused")
    tap["paused"] = False
    if "-a" in o:
        tap["path"] = o["-a"][len("vhd:"):]
    save()
elif verb == "close":
    o = opts(rest, ("-p", "-m", "-t"), flags=("-f",))
    if o.get("-t") != "120":
        bad("sm closes with -t 120")
    state["taps"][o["-p"]]["path"] = None
    save()
elif verb == "detach":
    o = opts(rest, ("-p", "-m"))
    tap = state["taps"].pop(o["-p"])
    subprocess.run(["kill", o["-p"]])           # tapdisk exits once detached
    save()
elif verb == "free":
    o = opts(rest, ("-m",))
    state["minors"].remove(int(o["-m"]))
    save()
else:
    bad("unknown verb")
'''


def install(directory: str) -> str:
    """Write the stand-in as ``<directory>/tap-ctl``; returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "tap-ctl")
    with open(path, "w") as f:
        f.write(SCRIPT.replace("@PYTHON@", sys.executable))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def calls(directory: str) -> list[list[str]]:
    try:
        with open(os.path.join(directory, "calls.jsonl")) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


def spawned(directory: str) -> list[int]:
    """Pids the stand-in's spawn started that still have a record."""
    try:
        with open(os.path.join(directory, "state.json")) as f:
            return [int(p) for p in json.load(f)["taps"]]
    except FileNotFoundError:
        return []
