"""The error table: real names and values, and every name the code uses exists."""

import os
import pickle
import re
import subprocess
import sys

import pytest

from smlib import errors
from smlib.errors import SRError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# DESIGN section 3: the values xapi and sm agree on.
DESIGN_CODES = {
    "SRInUse": 16, "VDIInUse": 24, "LockErr": 37, "Unimplemented": 38, "SRNotEmpty": 39,
    "SRScan": 40, "SRExists": 42, "VDIExists": 43, "SRNoSpace": 44, "VDIUnavailable": 46,
    "SRUnavailable": 47, "SRUnknownType": 48, "VDILoad": 65, "VDIType": 66, "VDICreate": 78,
    "VDISize": 79, "VDIDelete": 80, "VDIClone": 81, "VDISnapshot": 82,
    "ConfigLocationMissing": 94, "SnapshotChainTooLong": 109, "VDIResize": 110,
    "BadRequest": 143, "VDIMissing": 144, "MetadataError": 181, "EIO": 200, "SMGeneral": 202,
}


def test_design_codes_have_their_real_values():
    table = errors.codes()
    for name, value in DESIGN_CODES.items():
        assert table[name][0] == value, name
    assert table["GenericException"][0] == 1200  # the code smapi uses for surprises


def test_table_is_complete_and_values_unique():
    table = errors.codes()
    assert len(table) >= 160  # the whole sm table, not only the codes we use
    values = [value for value, _ in table.values()]
    assert len(values) == len(set(values)), "two names share a value"
    assert all(description for _, description in table.values())


def test_from_name_builds_code_name_description():
    err = SRError.from_name("VDIInUse", opterr="attached to VM x")
    assert (err.code, err.name, err.description) == (24, "VDIInUse", "The VDI is currently in use")
    assert str(err) == "The VDI is currently in use [opterr=attached to VM x]"
    assert str(SRError.from_name("SRNotEmpty")) == "The SR is not empty"
    assert SRError.from_name("SRNotEmpty").opterr is None


def test_unknown_name_is_a_key_error():
    with pytest.raises(KeyError, match="NoSuchError"):
        SRError.from_name("NoSuchError")


def test_srerror_pickles():
    # Crash-injection tests ship errors across processes.
    err = pickle.loads(pickle.dumps(SRError.from_name("SRNoSpace", opterr="need 2 GiB")))
    assert (err.code, str(err)) == (44, "There is insufficient space [opterr=need 2 GiB]")


def test_load_table_rejects_malformed_files(tmp_path):
    bad = tmp_path / "codes.xml"
    bad.write_text("<SM-errorcodes><code><name>X</name><value>nope</value></code></SM-errorcodes>")
    with pytest.raises(ValueError, match="malformed"):
        errors.load_table(str(bad))
    dup = tmp_path / "dup.xml"
    entry = "<code><name>X</name><description>d</description><value>1</value></code>"
    dup.write_text(f"<SM-errorcodes>{entry}{entry}</SM-errorcodes>")
    with pytest.raises(ValueError, match="duplicate"):
        errors.load_table(str(dup))


def _names_used_in_source():
    pattern = re.compile(r"""from_name\(\s*["']([A-Za-z0-9_]+)["']""")
    used = {}
    for top in ("smlib", "drivers"):
        for dirpath, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                path = os.path.join(dirpath, name)
                if not (name.endswith(".py") or top == "drivers"):
                    continue
                with open(path, encoding="utf-8", errors="replace") as f:
                    for found in pattern.findall(f.read()):
                        used.setdefault(found, path)
    return used


def test_every_error_name_in_the_code_exists():
    """A misspelt name would only blow up on the error path, in production."""
    used = _names_used_in_source()
    assert "Unimplemented" in used and "BadRequest" in used  # the scan sees the framework
    unknown = {name: path for name, path in used.items() if name not in errors.codes()}
    assert not unknown, f"SRError.from_name with unknown names: {unknown}"


def test_error_table_is_not_loaded_until_an_error_is_built():
    code = (
        "import sys; import smlib.smapi, smlib.drivers.dummy;"
        "assert 'lxml' not in sys.modules and 'xmlrpc.client' not in sys.modules;"
        "from smlib.errors import SRError; SRError.from_name('EIO');"
        "assert 'lxml.etree' in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "ok", out.stderr
