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
from typing import Any, Callable, Dict

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

    def pending(self) -> "list[tuple[str, Record]]":
        out = []
        for key, data in sorted(self.store.journal_items().items()):
            try:
                out.append((key, json.loads(data)))
            except ValueError:
                # A torn record cannot exist (writes are atomic); an
                # unreadable one is reported rather than guessed at.
                from smlib.protocol.errors import SRError

                raise SRError.from_name("MetadataError", f"bad journal record {key}") from None
        return out

    def replay(self, handlers: "dict[str, Handler]") -> int:
        """Run the handler of every pending record, then drop the record.
        Returns how many records were replayed."""
        done = 0
        for key, record in self.pending():
            handlers[record["op"]](record)
            self.end(key)
            done += 1
        return done
