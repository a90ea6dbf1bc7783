"""Named mutation points, for crash-injection tests.

Code that changes the SR calls ``mutation_point("<op>.<step>")`` right
before each mutation (a rename, a write, a journal record). With
``SMLIB_CRASH_AT`` unset (production) that is one environment lookup. With
``SMLIB_CRASH_AT=N`` the Nth point this process passes ends it at once with
``os._exit(CRASH_STATUS)``, as a power cut would (no cleanup, no flush);
with ``SMLIB_CRASH_AT=<name>`` the first point of that name does. Before it
dies the hook writes ``crash at mutation point N: <name>`` on stderr, so a
crash test says where it stopped.

A leaf module (it imports only smlib.config): the tree, the journal and the
stores all call it without depending on each other.
"""

import os
import sys
from typing import Optional

from smlib import config

CRASH_ENV = "SMLIB_CRASH_AT"
CRASH_STATUS = 99

_points_seen = 0
_last_point: Optional[str] = None


def mutation_point(name: str) -> None:
    """Count a mutation point; die here if SMLIB_CRASH_AT names this one."""
    global _points_seen, _last_point
    at = config.crash_at()
    if not at:
        return
    _points_seen += 1
    _last_point = name
    if at in (name, str(_points_seen)):
        sys.stderr.write(f"crash at mutation point {_points_seen}: {name}\n")
        sys.stderr.flush()
        os._exit(CRASH_STATUS)


def last_point() -> Optional[str]:
    """The name of the last point passed while armed (None before any)."""
    return _last_point


def points_passed() -> int:
    """How many points this process passed while armed (since the last reset)."""
    return _points_seen


def reset_points() -> None:
    """Restart the count (in-process tests run several operations)."""
    global _points_seen, _last_point
    _points_seen = 0
    _last_point = None
