"""The database: schema version, transactions, default location."""

from __future__ import annotations

import sqlite3

import pytest

from smlib.toolstack import db as dbmod
from smlib.toolstack.db import Database, SchemaError, SRRecord, VDIRecord


def test_schema_version_is_recorded(tmp_path):
    path = str(tmp_path / "s.db")
    Database(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == dbmod.SCHEMA_VERSION


def test_newer_schema_and_foreign_files_are_refused(tmp_path):
    path = str(tmp_path / "s.db")
    Database(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {dbmod.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="newer"):
        Database(path)
    other = str(tmp_path / "other.db")
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="not an smctl database"):
        Database(other)


def test_transaction_rolls_back_everything(db):
    sr = db.insert(SRRecord("OpaqueRef:sr", "sr-uuid", "file", device_config={"a": "b"}))
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.insert(VDIRecord("OpaqueRef:v", "v-uuid", sr.ref, virtual_size=1 << 40))
            db.update(sr, name_label="changed")
            raise RuntimeError("stop")
    assert db.select(VDIRecord) == []
    assert db.get(SRRecord, sr.ref).name_label == ""


def test_records_round_trip(db):
    sr = db.insert(SRRecord("OpaqueRef:sr", "sr-uuid", "file", "n", "d", {"location": "/x"},
                            ["VDI_CREATE"]))
    vdi = db.insert(VDIRecord("OpaqueRef:v", "v", sr.ref, is_a_snapshot=True,
                              snapshot_of="OpaqueRef:w", virtual_size=5 << 40))
    assert db.get(SRRecord, sr.ref) == sr
    assert db.by_uuid(VDIRecord, "v") == vdi
    assert db.select(VDIRecord, is_a_snapshot=True) == [vdi]
    assert db.repoint_snapshot_of("OpaqueRef:w", "OpaqueRef:z") == 1
    assert db.get(VDIRecord, vdi.ref).snapshot_of == "OpaqueRef:z"


def test_a_vdi_needs_its_sr(db):
    with pytest.raises(sqlite3.IntegrityError):
        db.insert(VDIRecord("OpaqueRef:v", "v", "OpaqueRef:nosuch"))


def test_default_path(monkeypatch, tmp_path):
    monkeypatch.setenv("SMCTL_DB", str(tmp_path / "x.db"))
    assert dbmod.default_path() == str(tmp_path / "x.db")
    monkeypatch.delenv("SMCTL_DB")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dbmod.default_path() == str(tmp_path / ".local/share/smctl/state.db")


def test_a_version_1_database_is_upgraded_in_place(tmp_path):
    path = str(tmp_path / "v1.db")
    conn = sqlite3.connect(path)
    for statement in dbmod.SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO sr (ref, uuid, type) VALUES ('OpaqueRef:a', 'sr-a', 'file')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    db = Database(path)
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == dbmod.SCHEMA_VERSION == 3
    sr = db.by_uuid(SRRecord, "sr-a")
    assert sr.type == "file" and sr.physical_size == 0  # version 3's columns, defaulted
    pending_id = db.pending_add("vm_revert", {"phase": "prepare"})
    db.pending_set(pending_id, {"phase": "commit"})
    assert db.pending() == [(pending_id, "vm_revert", {"phase": "commit"})]
    db.pending_remove(pending_id)
    assert db.pending() == []
