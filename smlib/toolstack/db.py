"""The toolstack's own database: SRs, VDIs, VMs and VBDs in SQLite.

Every change runs in a transaction (BEGIN IMMEDIATE, so two smctl processes
serialise instead of interleaving). The schema version is SQLite's
user_version; a database written by a newer schema is refused.
"""

import contextlib
import json
import os
import sqlite3
from typing import Any, Iterator, Optional, TypeVar

from smlib import config
from smlib.toolstack.record import field, fields, record, replace

SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE sr (
    ref TEXT PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    name_label TEXT NOT NULL DEFAULT '',
    name_description TEXT NOT NULL DEFAULT '',
    device_config TEXT NOT NULL DEFAULT '{}',
    capabilities TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE vdi (
    ref TEXT PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    sr_ref TEXT NOT NULL REFERENCES sr(ref),
    location TEXT NOT NULL DEFAULT '',
    name_label TEXT NOT NULL DEFAULT '',
    name_description TEXT NOT NULL DEFAULT '',
    is_a_snapshot INTEGER NOT NULL DEFAULT 0,
    snapshot_of TEXT,
    snapshot_time TEXT NOT NULL DEFAULT '',
    read_only INTEGER NOT NULL DEFAULT 0,
    managed INTEGER NOT NULL DEFAULT 1,
    virtual_size INTEGER NOT NULL DEFAULT 0,
    type TEXT NOT NULL DEFAULT 'user'
);
CREATE INDEX vdi_snapshot_of ON vdi(snapshot_of);
CREATE TABLE vm (
    ref TEXT PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    name_label TEXT NOT NULL DEFAULT '',
    name_description TEXT NOT NULL DEFAULT '',
    is_a_snapshot INTEGER NOT NULL DEFAULT 0,
    snapshot_of TEXT,
    snapshot_time TEXT NOT NULL DEFAULT '',
    suspend_vdi TEXT
);
CREATE TABLE vbd (
    ref TEXT PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    vm_ref TEXT NOT NULL REFERENCES vm(ref) ON DELETE CASCADE,
    vdi_ref TEXT,
    device TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'disk' CHECK (type IN ('disk', 'cd')),
    mode TEXT NOT NULL DEFAULT 'RW' CHECK (mode IN ('RO', 'RW'))
);
"""


# Kinds of `pending` records (operations in progress); recovery.py finishes them.
PENDING_VM_SNAPSHOT = "vm_snapshot"
PENDING_VDI_REVERT = "vdi_revert"
PENDING_VM_REVERT = "vm_revert"
PENDING_VDI_IMPORT = "vdi_import"  # transfer.rollback_point: the snapshot to revert to


# Version n's changes, applied in order to a database at version n-1. SCHEMA
# above is version 1.
MIGRATIONS: "dict[int, str]" = {
    # Multi-step operations in progress (VM revert), so that the next smctl
    # can finish or undo one that was killed part way.
    2: """
CREATE TABLE pending (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
""",
    # The fields of xapi's VDI and SR records that drivers keep themselves
    # through the served XenAPI (smlib/toolstack/server.py, smlib/xapi/db.py).
    3: """
ALTER TABLE vdi ADD COLUMN physical_utilisation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE vdi ADD COLUMN sm_config TEXT NOT NULL DEFAULT '{}';
ALTER TABLE vdi ADD COLUMN other_config TEXT NOT NULL DEFAULT '{}';
ALTER TABLE vdi ADD COLUMN sharable INTEGER NOT NULL DEFAULT 0;
ALTER TABLE vdi ADD COLUMN cbt_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE vdi ADD COLUMN metadata_of_pool TEXT NOT NULL DEFAULT '';
ALTER TABLE sr ADD COLUMN virtual_allocation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sr ADD COLUMN physical_size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sr ADD COLUMN physical_utilisation INTEGER NOT NULL DEFAULT 0;
CREATE INDEX vdi_location ON vdi(sr_ref, location);
""",
}


def default_path() -> str:
    env = config.toolstack_db()
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".local", "share", "smctl", "state.db")


class SchemaError(Exception):
    pass


@record
class SRRecord:
    ref: str
    uuid: str
    type: str
    name_label: str = ""
    name_description: str = ""
    device_config: dict = field(default_factory=dict)
    capabilities: list = field(default_factory=list)
    virtual_allocation: int = 0
    physical_size: int = 0
    physical_utilisation: int = 0


@record
class VDIRecord:
    ref: str
    uuid: str
    sr_ref: str
    location: str = ""
    name_label: str = ""
    name_description: str = ""
    is_a_snapshot: bool = False
    snapshot_of: Optional[str] = None
    snapshot_time: str = ""
    read_only: bool = False
    managed: bool = True
    virtual_size: int = 0
    type: str = "user"
    physical_utilisation: int = 0
    sm_config: dict = field(default_factory=dict)
    other_config: dict = field(default_factory=dict)
    sharable: bool = False
    cbt_enabled: bool = False
    metadata_of_pool: str = ""


@record
class VMRecord:
    ref: str
    uuid: str
    name_label: str = ""
    name_description: str = ""
    is_a_snapshot: bool = False
    snapshot_of: Optional[str] = None
    snapshot_time: str = ""
    suspend_vdi: Optional[str] = None


@record
class VBDRecord:
    ref: str
    uuid: str
    vm_ref: str
    vdi_ref: Optional[str]
    device: str
    type: str = "disk"
    mode: str = "RW"


Record = TypeVar("Record", SRRecord, VDIRecord, VMRecord, VBDRecord)

_TABLES: "dict[type, str]" = {SRRecord: "sr", VDIRecord: "vdi", VMRecord: "vm", VBDRecord: "vbd"}
_JSON_FIELDS = {"device_config", "capabilities", "sm_config", "other_config"}


def _to_column(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool):
        return int(value)
    return value


def _from_row(cls: type, row: sqlite3.Row) -> Any:
    values = {}
    for f in fields(cls):
        value = row[f.name]
        if f.name in _JSON_FIELDS:
            value = json.loads(value)
        elif f.type in ("bool", bool):
            value = bool(value)
        values[f.name] = value
    return cls(**values)


class Database:
    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path or default_path()
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        # isolation_level=None: transactions are ours, explicit, never implicit.
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA foreign_keys = ON")
        self._depth = 0
        self._check_pages()
        self._migrate()
        self._check_tables()

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def operation_lock(self) -> Iterator[None]:
        """One changing operation at a time: its driver calls and records must
        not interleave with another smctl's (a transaction covers one record
        change, not a revert's whole sequence)."""
        if self.path == ":memory:":
            yield
            return
        import fcntl

        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _migrate(self) -> None:
        with self.transaction():
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path}: schema version {version} is newer than this smctl "
                    f"understands ({SCHEMA_VERSION})"
                )
            if version == 0:
                tables = self.conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                ).fetchone()[0]
                if tables:
                    raise SchemaError(f"{self.path}: not an smctl database (no schema version)")
                self._run_script(SCHEMA)
                version = 1
            for step in range(version + 1, SCHEMA_VERSION + 1):
                self._run_script(MIGRATIONS[step])
            if version != SCHEMA_VERSION:  # else the file stays byte for byte as it was
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # A damaged database is refused before anything acts on it (a command
    # run on it could change an SR and fail to record the change), and
    # before anything is written to it: bad pages first, then (once the
    # schema is current) a table or column missing, a JSON column that
    # does not parse.

    def _check_pages(self) -> None:
        if self.path == ":memory:":
            return
        problems = [row[0] for row in self.conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise SchemaError(f"{self.path} is damaged: {'; '.join(problems[:3])}")

    def _check_tables(self) -> None:
        for cls, table in _TABLES.items():
            have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
            want = {f.name for f in fields(cls)}
            if not want <= have:
                raise SchemaError(f"{self.path}: table {table!r} " + (
                    "is missing" if not have else
                    f"lacks {', '.join(sorted(want - have))}"))
            for name in sorted(want & _JSON_FIELDS):
                for (value,) in self.conn.execute(f"SELECT {name} FROM {table}"):
                    try:
                        json.loads(value)
                    except (TypeError, ValueError):
                        raise SchemaError(f"{self.path}: {table}.{name} holds {value!r},"
                                          " not JSON") from None

    def _run_script(self, script: str) -> None:
        # executescript() would commit the open transaction: one statement at a time.
        for statement in script.split(";"):
            if statement.strip():
                self.conn.execute(statement)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All statements inside commit together or not at all; nests."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    # Generic record access: one table per record class.

    def insert(self, record: Record) -> Record:
        table = _TABLES[type(record)]
        names = [f.name for f in fields(record)]
        values = [_to_column(n, getattr(record, n)) for n in names]
        with self.transaction():
            self.conn.execute(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                values,
            )
        return record

    def update(self, record: Record, **changes: Any) -> Record:
        """Set fields of a stored record; returns the updated copy."""
        table = _TABLES[type(record)]
        if not changes:
            return record
        assignments = ", ".join(f"{k} = ?" for k in changes)
        values = [_to_column(k, v) for k, v in changes.items()]
        with self.transaction():
            cur = self.conn.execute(
                f"UPDATE {table} SET {assignments} WHERE ref = ?", [*values, record.ref]
            )
            if cur.rowcount != 1:
                raise KeyError(f"{table} {record.ref} is not in the database")
        return replace(record, **changes)

    def delete(self, record: Record) -> None:
        table = _TABLES[type(record)]
        with self.transaction():
            self.conn.execute(f"DELETE FROM {table} WHERE ref = ?", [record.ref])

    def select(self, cls: "type[Record]", order: str = "rowid", **where: Any) -> "list[Record]":
        table = _TABLES[cls]
        clauses, values = [], []
        for key, value in where.items():
            if value is None:
                clauses.append(f"{key} IS NULL")
            else:
                clauses.append(f"{key} = ?")
                values.append(_to_column(key, value))
        sql = f"SELECT * FROM {table}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        rows = self.conn.execute(f"{sql} ORDER BY {order}", values).fetchall()
        return [_from_row(cls, row) for row in rows]

    def get(self, cls: "type[Record]", ref: str) -> Optional[Record]:
        found = self.select(cls, ref=ref)
        return found[0] if found else None

    def by_uuid(self, cls: "type[Record]", uuid: str) -> Optional[Record]:
        found = self.select(cls, uuid=uuid)
        return found[0] if found else None

    # Relations the operations need in one statement.

    def repoint_snapshot_of(self, old_ref: str, new_ref: str) -> int:
        """Every VDI that was a snapshot of old_ref becomes one of new_ref."""
        with self.transaction():
            cur = self.conn.execute(
                "UPDATE vdi SET snapshot_of = ? WHERE snapshot_of = ?", [new_ref, old_ref]
            )
        return cur.rowcount

    def move_vbds(self, old_vdi_ref: str, new_vdi_ref: str) -> int:
        with self.transaction():
            cur = self.conn.execute(
                "UPDATE vbd SET vdi_ref = ? WHERE vdi_ref = ?", [new_vdi_ref, old_vdi_ref]
            )
        return cur.rowcount

    # Operations in progress ---------------------------------------------

    def pending_add(self, kind: str, body: dict) -> int:
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO pending (kind, body) VALUES (?, ?)", [kind, json.dumps(body)]
            )
        return int(cur.lastrowid)

    def pending_set(self, pending_id: int, body: dict) -> None:
        with self.transaction():
            self.conn.execute(
                "UPDATE pending SET body = ? WHERE id = ?", [json.dumps(body), pending_id]
            )

    def pending_remove(self, pending_id: int) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM pending WHERE id = ?", [pending_id])

    def pending(self) -> "list[tuple[int, str, dict]]":
        rows = self.conn.execute("SELECT id, kind, body FROM pending ORDER BY id").fetchall()
        return [(row[0], row[1], json.loads(row[2])) for row in rows]
