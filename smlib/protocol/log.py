"""The storage-manager log: /var/log/SMlog, or $SMLIB_LOG; stderr when unwritable.

Never stdout: stdout carries nothing but the driver's methodResponse.
"""

import os
import sys
import time

from smlib import config


def log_path() -> str:
    return config.log_path()


def write(ident: str, message: str) -> None:
    """Append one entry (a line, or a line and a traceback) in one write."""
    stamp = time.strftime("%b %d %H:%M:%S")
    text = "".join(f"{stamp} {ident}[{os.getpid()}] {line}\n" for line in message.splitlines())
    try:
        # O_APPEND: concurrent drivers' lines interleave whole, not torn.
        with open(log_path(), "a", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
    except OSError:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # nowhere left to log; the response on stdout still matters
