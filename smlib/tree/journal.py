"""Intent records for multi-step changes.

A multi-step change (snapshot, clone, revert, delete, GC step) writes an
intent record through the store (fsynced) before its first mutation and
removes it after its last. The next command that changes the SR replays
whatever records remain, under the SR lock, before doing its own work;
each record names the handler (``op``) that knows how to roll it forward
or back.

``begin`` and ``end`` are mutation points (smlib.faults) like every other
change of the SR.
"""

import json
from typing import Any, Callable, Dict, Optional

from smlib.faults import mutation_point
from smlib.stores.base import Store

Record = Dict[str, Any]
Handler = Callable[[Record], None]


class Journal:
    """Intent records kept by a store, as JSON documents by key."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def begin(self, key: str, record: Record) -> None:
        """Record an intent durably; call before the change's first mutation."""
        mutation_point("journal.begin")
        self.store.journal_put(key, json.dumps(record, sort_keys=True).encode())

    def end(self, key: str) -> None:
        """Drop a finished intent (after the change's last mutation)."""
        self.store.sync()
        mutation_point("journal.end")
        self.store.journal_remove(key)

    def pending(self, handlers: "Optional[dict[str, Handler]]" = None
                ) -> "list[tuple[str, Record]]":
        """The records to replay, oldest key first; set-aside ones are left out.
        A record that is not one (unreadable, not an object, no op or one
        without a handler) is a MetadataError naming where it is: nobody can
        tell what it was about, so an operator must look before anything
        else changes the SR."""
        out = []
        for key, data in sorted(self.store.journal_items().items()):
            if key.startswith(ASIDE):
                continue
            try:
                record = json.loads(data)
            except ValueError:
                record = None   # a torn record cannot exist: writes are atomic
            op = record.get("op") if isinstance(record, dict) else None
            if not isinstance(op, str) or (handlers is not None and op not in handlers):
                from smlib.protocol.errors import SRError

                raise SRError.from_name(
                    "MetadataError", f"{self.store.journal_location(key)} is not a journal"
                    f" record this driver can replay (op {op!r}); remove it") from None
            out.append((key, record))
        return out

    def replay(self, handlers: "dict[str, Handler]") -> int:
        """Run the handler of every pending record, then drop the record.
        A record whose replay cannot proceed (the volume it names is damaged
        or gone) is set aside instead, so that it does not fail every later
        command. Returns how many records were replayed or set aside."""
        done = 0
        for key, record in self.pending(handlers):
            try:
                handlers[record["op"]](record)
            except Exception as e:  # noqa: BLE001 - judged by _stuck
                if not _stuck(e):
                    raise
                self.set_aside(key, record, e)
            else:
                self.end(key)
            done += 1
        return done

    def set_aside(self, key: str, record: Record, e: Exception) -> None:
        """Keep the record under ``aside-<key>`` (never replayed) and say so."""
        from smlib.protocol import log

        mutation_point("journal.set-aside")
        self.store.journal_put(ASIDE + key, json.dumps(record, sort_keys=True).encode())
        self.store.journal_remove(key)
        log.write("journal", f"record {key} set aside for an operator, its replay failed: "
                  f"{type(e).__name__}: {e}")

    def set_aside_keys(self) -> "list[str]":
        return sorted(k for k in self.store.journal_items() if k.startswith(ASIDE))


# Records a replay could not finish are kept under this prefix.
ASIDE = "aside-"


def _stuck(e: Exception) -> bool:
    """Whether a replay failure is about the record or the images it names
    (retrying cannot help) rather than the moment (no space, a lock)."""
    from smlib.protocol.errors import SRError
    from smlib.vhd import VHDError

    if isinstance(e, SRError):
        return e.name not in ("SRNoSpace", "LockErr", "SRUnavailable")
    if isinstance(e, VHDError):
        return e.errno is None
    return isinstance(e, (KeyError, TypeError, ValueError, AttributeError))
