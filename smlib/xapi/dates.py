"""xapi's DateTime text, as snapshot_time and the other date fields carry it."""

import time


def now_stamp() -> str:
    """Now in xapi's DateTime form, UTC, e.g. 20261129T14:23:31Z."""
    return time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime())
