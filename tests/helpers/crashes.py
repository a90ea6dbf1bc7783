"""Crash-test helpers shared by the FileSR and LVMSR crash tests.

A driver killed by ``SMLIB_CRASH_AT`` (smlib.faults) writes
``crash at mutation point N: <name>`` on stderr before it dies; these read
that line and make a failed check say which point it followed.
"""

import contextlib
import re
from typing import Iterator, Optional

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
