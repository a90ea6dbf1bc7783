"""smctl against damaged input (issue 10 items 11 and 12): a damaged
database, names XML cannot carry, sizes in other digits, an export aimed at
the SR's own storage. Each is refused up front with a clear error and
nothing written; the SR keeps working.
"""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest
from helpers.filesr_helpers import tree_hashes
from helpers.smctl_run import file_sr, new_uuid, ok


def _sql(db: str, statement: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute(statement)
    conn.commit()
    conn.close()


def _bad_pages(db: str) -> None:
    with open(db, "r+b") as f:
        f.seek(4096)
        f.write(b"\xde\xad" * 2048)


DAMAGE = {
    "bad pages": _bad_pages,
    "a dropped table": lambda db: _sql(db, "DROP TABLE vdi"),
    "bad JSON in a column": lambda db: _sql(db, "UPDATE sr SET device_config = '{not json'"),
    "not a database": lambda db: open(db, "wb").write(b"junk" * 1024),
}


@pytest.mark.parametrize("what", sorted(DAMAGE))
def test_damaged_database_is_refused_before_any_write(smctl, tmp_path, what):
    sr, location = file_sr(smctl, tmp_path)
    db = str(tmp_path / "cli.db")
    DAMAGE[what](db)
    saved = str(tmp_path / "damaged.db")
    shutil.copy(db, saved)
    before = tree_hashes(location)
    for argv in (("vdi-list",), ("sr-list",),
                 ("vdi-create", f"sr-uuid={sr}", "name-label=d", "virtual-size=16MiB")):
        r = smctl(*argv)
        assert r.returncode == 1, r
        assert "cannot open the database" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert tree_hashes(location) == before
    with open(db, "rb") as a, open(saved, "rb") as b:
        assert a.read() == b.read()


@pytest.mark.parametrize("name", ["a\x01b", "tab\x0bvt", "\ufffe"])
def test_names_xml_cannot_carry_are_refused_up_front(smctl, tmp_path, name):
    sr, location = file_sr(smctl, tmp_path)
    before = tree_hashes(location)
    for argv in (("vdi-create", f"sr-uuid={sr}", f"name-label={name}", "virtual-size=16MiB"),
                 ("vm-create", f"name-label={name}")):
        r = smctl(*argv)
        assert r.returncode == 1, r
        assert "IllegalXMLChar" in r.stderr, r.stderr
    assert tree_hashes(location) == before
    assert ok(smctl("vdi-list", "--minimal")).strip() == ""


@pytest.mark.parametrize("size", ["\u0661\u0660", "\U0001d7d7MiB", "\u00b2"])
def test_sizes_in_other_digits_are_refused(smctl, tmp_path, size):
    sr, location = file_sr(smctl, tmp_path)
    before = tree_hashes(location)
    r = smctl("vdi-create", f"sr-uuid={sr}", "name-label=d", f"virtual-size={size}")
    assert r.returncode == 2 and "not a size" in r.stderr, r
    assert tree_hashes(location) == before


def test_export_onto_the_srs_own_storage_is_refused(smctl, tmp_path):
    sr, location = file_sr(smctl, tmp_path)
    disk = new_uuid(smctl("vdi-create", f"sr-uuid={sr}", "name-label=d", "virtual-size=16MiB"))
    before = tree_hashes(location)
    for target in (os.path.join(location, ".sm", "metadata.xml"),
                   os.path.join(location, disk + ".vhd"),
                   os.path.join(location, "new.raw")):
        r = smctl("vdi-export", f"uuid={disk}", f"filename={target}", "force=true")
        assert r.returncode == 1 and "EXPORT_PATH_INVALID" in r.stderr, r
        assert tree_hashes(location) == before
    assert ok(smctl("vdi-list", "--minimal")).strip() == disk
    ok(smctl("vdi-snapshot", f"uuid={disk}"))
