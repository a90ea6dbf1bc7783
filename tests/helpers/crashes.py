"""Crash-test helpers shared by the FileSR and LVMSR crash tests.

A driver killed by ``SMLIB_CRASH_AT`` (smlib.faults) writes
``crash at mutation point N: <name>`` on stderr before it dies; these read
that line and make a failed check say which point it followed.
"""

import contextlib
import os
import re
from typing import Iterator, Optional

from smlib import faults

_LINE = re.compile(r"^crash at mutation point (\d+): (\S+)$", re.M)


def crash_point(stderr: str) -> Optional[str]:
    """The name of the point a driver run stopped at (None: it did not crash)."""
    found = _LINE.findall(stderr)
    return found[-1][1] if found else None


@contextlib.contextmanager
def after_crash(n: int, name: Optional[str]) -> Iterator[None]:
    """Run checks; a failure names the crash it followed (and is printed)."""
    where = f"point {n} ({name})" if name else f"point {n} (ran to the end)"
    print(f"crash at {where}")
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"after the crash at {where}: {exc}") from exc


# The Store methods that change what an SR holds (smlib.stores.base.Store).
MUTATING = ("create_vhd", "create_child", "rename", "replace", "remove", "set_container_size",
            "write_metadata", "journal_put", "journal_remove", "remove_garbage")


class MissingPoint(BaseException):
    """A store mutation with no mutation point before it (a BaseException:
    the driver's fault handling must not turn it into a fault)."""


def guard_mutations(monkeypatch, store_cls: type) -> "list[str]":
    """Wrap ``store_cls``'s mutating methods: while crash injection is armed
    (faults counts points only then), each outermost call must come after a
    mutation point passed since the previous one, else a crash test could
    never stop between the two. Returns the calls seen, for a test to
    check that the guard saw anything."""
    seen: list[str] = []
    state = {"last": 0, "depth": 0}   # points passed at the last mutation
    real_reset = faults.reset_points

    def reset() -> None:
        real_reset()
        state["last"] = 0

    monkeypatch.setattr(faults, "reset_points", reset)

    def wrap(name: str, real):
        def guarded(self, *args, **kwargs):
            if state["depth"] == 0 and os.environ.get(faults.CRASH_ENV):
                passed = faults.points_passed()
                if passed <= state["last"]:
                    raise MissingPoint(
                        f"{store_cls.__name__}.{name}{args} follows no mutation point since "
                        f"the previous store mutation (last point: {faults.last_point()})")
                state["last"] = passed
                seen.append(name)
            state["depth"] += 1
            try:
                return real(self, *args, **kwargs)
            finally:
                state["depth"] -= 1
        return guarded

    for name in MUTATING:
        monkeypatch.setattr(store_cls, name, wrap(name, getattr(store_cls, name)))
    return seen


_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUARD_SITE = os.path.join(_TESTS, "helpers", "mutation_guard")


def crash_env(n: int, store: str) -> "dict[str, str]":
    """The environment of a driver run crashed at point ``n``, with the
    mutation guard on ``store`` ("module.Class") loaded at start-up
    (helpers/mutation_guard/sitecustomize.py)."""
    path = [GUARD_SITE, _TESTS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                   if p]
    return {faults.CRASH_ENV: str(n), "PYTHONPATH": os.pathsep.join(path),
            "SMLIB_TEST_GUARD_STORE": store}
