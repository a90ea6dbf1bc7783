"""The SR lock: one exclusive ``flock`` on a file the store names.

Every command that reads-then-changes the SR holds it. Waiting is bounded
so that no command hangs: after ``timeout`` seconds it fails with LockErr.
"""

import fcntl
import os
import time
from types import TracebackType
from typing import Optional, Type

DEFAULT_TIMEOUT = 120.0
# Short sleeps first so an uncontended or briefly held lock costs little.
_POLL_START = 0.001
_POLL_MAX = 0.05


class SRLock:
    """Context manager holding an exclusive flock on ``path``."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            # A directory or a dangling link where the lock file belongs: an
            # operator must look (181 with the path), not a crash (1200).
            from smlib.protocol.errors import SRError

            raise SRError.from_name("MetadataError", f"SR lock {self.path}: {e.strerror}") \
                from None
        deadline = time.monotonic() + self.timeout
        delay = _POLL_START
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    from smlib.protocol.errors import SRError

                    raise SRError.from_name(
                        "LockErr", f"SR lock {self.path} held for {self.timeout:.0f}s"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, _POLL_MAX)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the fd drops the flock
            self._fd = None

    def __enter__(self) -> "SRLock":
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.release()
