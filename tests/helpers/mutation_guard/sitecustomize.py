"""Put on PYTHONPATH of a driver run as a program by a crash test
(``helpers.crashes.crash_env``): with SMLIB_TEST_GUARD_STORE naming a store
class, every mutation of that store must follow a mutation point
(``helpers.crashes.guard_mutations``); one that does not ends the driver
with MissingPoint's traceback and status 1, which the crash test reports.
"""

import importlib
import os

_STORE = os.environ.get("SMLIB_TEST_GUARD_STORE")
if _STORE:
    from helpers.crashes import guard_mutations

    class _Patch:
        """The one monkeypatch method guard_mutations uses (nothing is undone:
        the process ends after its one command)."""

        @staticmethod
        def setattr(obj: object, name: str, value: object) -> None:
            setattr(obj, name, value)

    _module, _, _cls = _STORE.rpartition(".")
    guard_mutations(_Patch, getattr(importlib.import_module(_module), _cls))
