"""The error table: real names and values, and every name the code uses exists."""

import ast
import os
import pickle
import subprocess
import sys

import pytest

from smlib.protocol import errors
from smlib.protocol.errors import SRError

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


def _python_sources():
    for top in ("smlib", "drivers"):
        for dirpath, _, files in os.walk(os.path.join(REPO, top)):
            if "__pycache__" in dirpath:
                continue  # byte code of any interpreter that ran the drivers
            for name in files:
                if name.endswith(".py") or top == "drivers":
                    path = os.path.join(dirpath, name)
                    with open(path, encoding="utf-8") as f:
                        yield path, ast.parse(f.read(), path)


def _callee(call):
    return getattr(call.func, "attr", None) or getattr(call.func, "id", None)


def _error_name_parameters(trees):
    """from_name itself, and every function passing one of its parameters on
    as from_name's name (helpers like err(name, opterr), run(..., error=...)):
    {function name: (positional index when called, parameter name)}."""
    found = {"from_name": (0, "name")}
    for _, tree in trees:
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            params = [a.arg for a in func.args.posonlyargs + func.args.args]
            kwonly = [a.arg for a in func.args.kwonlyargs]
            for call in ast.walk(func):
                if (isinstance(call, ast.Call) and _callee(call) == "from_name" and call.args
                        and isinstance(call.args[0], ast.Name)):
                    name = call.args[0].id
                    if name in params:
                        bound = 1 if params[0] in ("self", "cls") else 0
                        found[func.name] = (params.index(name) - bound, name)
                    elif name in kwonly:
                        found[func.name] = (None, name)
            defaults = list(zip(func.args.args[::-1], func.args.defaults[::-1]))
            defaults += list(zip(func.args.kwonlyargs, func.args.kw_defaults))
            for arg, default in defaults:
                if func.name in found and arg.arg == found[func.name][1]:
                    found.setdefault(("default", func.name), (None, default))
    return found


def _names_used_in_source():
    """Every literal error name the code hands to SRError.from_name, directly
    or through a helper: {name: "path:line"}."""
    trees = list(_python_sources())
    helpers = _error_name_parameters(trees)
    used = {}
    for path, tree in trees:
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call) or _callee(call) not in helpers:
                continue
            index, param = helpers[_callee(call)]
            values = [kw.value for kw in call.keywords if kw.arg == param]
            if index is not None and len(call.args) > index:
                values.append(call.args[index])
            for value in values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    used.setdefault(value.value, f"{path}:{call.lineno}")
    for key, (_, default) in helpers.items():
        if isinstance(key, tuple) and isinstance(default, ast.Constant):
            used.setdefault(default.value, f"default of {key[1]}")
    return used


def test_every_error_name_in_the_code_exists():
    """A misspelt name would only blow up on the error path, in production."""
    used = _names_used_in_source()
    assert {"Unimplemented", "BadRequest", "VDISize"} <= set(used)  # the scan sees the framework
    unknown = {name: where for name, where in used.items() if name not in errors.codes()}
    assert not unknown, f"SRError.from_name with unknown names: {unknown}"


def test_error_table_is_not_loaded_until_an_error_is_built():
    code = (
        "import sys; import smlib.protocol.smapi, smlib.drivers.dummy;"
        "from smlib.protocol import errors;"
        "assert errors._table is None and 'xmlrpc.client' not in sys.modules;"
        "errors.SRError.from_name('EIO');"
        "assert errors._table is not None; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "ok", out.stderr


def test_error_table_loads_without_lxml(tmp_path):
    """dom0 has no lxml: with every import of it failing, the table is whole
    and a driver's coded fault keeps its code (not 1200)."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'lxml':\n"
        "            raise ImportError('lxml blocked: dom0 has none')\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    code = (
        "from smlib.protocol import errors, smapi; from smlib.drivers.dummy import DummySR;"
        "import sys; sys.path.insert(0, 'tests'); from helpers.xapi_harness import xapi_call;"
        "print(len(errors.codes()));"
        "print(smapi.handle(DummySR, [xapi_call('vdi_revert', args=['OpaqueRef:x'])]))"
    )
    env = dict(os.environ, PYTHONPATH=f"{blocker}{os.pathsep}{REPO}")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr
    count, response = out.stdout.split("\n", 1)
    assert int(count) == len(errors.codes())
    assert "<int>38</int>" in response and "not supported/implemented" in response
    blocked = subprocess.run([sys.executable, "-c", "import lxml"], env=env, cwd=REPO,
                             capture_output=True, text=True)
    assert "lxml blocked" in blocked.stderr  # the block itself works


def test_load_table_refuses_a_dtd(tmp_path):
    doc = tmp_path / "codes.xml"
    doc.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]>'
                   "<SM-errorcodes><code><name>&e;</name><description>d</description>"
                   "<value>1</value></code></SM-errorcodes>")
    with pytest.raises(ValueError, match="DTD"):
        errors.load_table(str(doc))
    doc.write_text("<other/>")
    with pytest.raises(ValueError, match="SM-errorcodes"):
        errors.load_table(str(doc))
    doc.write_text("<SM-errorcodes><code>")
    with pytest.raises(ValueError, match="well-formed"):
        errors.load_table(str(doc))
