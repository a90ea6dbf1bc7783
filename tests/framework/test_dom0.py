"""dom0's interpreter: every module runs on CPython 3.6 with only what dom0 has.

XCP-ng 8.3 and XenServer 8 run CPython 3.6 in dom0, with the standard
library and XenAPI: a driver that does not import there is rejected by xapi.
The import check runs whenever a 3.6 is found (.ci/find-python36); with
SMLIB_REQUIRE_PY36=1 (CI) a missing 3.6 fails instead of skipping. In the
dom0 tier (`make test-dom0`, SMLIB_DRIVER_BIN set) every driver-as-program
test runs its driver on that 3.6; the tier's own check is here too.
"""

import os
import subprocess
import sys

import pytest
from helpers.xapi_harness import REPO_ROOT, driver_bin


def _python36():
    """A CPython 3.6, or a skip (a failure under SMLIB_REQUIRE_PY36=1)."""
    found = subprocess.run([os.path.join(REPO_ROOT, ".ci", "find-python36")],
                           stdout=subprocess.PIPE, text=True)
    if found.returncode == 0 and found.stdout.strip():
        return found.stdout.strip()
    if os.environ.get("SMLIB_REQUIRE_PY36") == "1":
        pytest.fail("SMLIB_REQUIRE_PY36=1 but no CPython 3.6 was found (.ci/find-python36)")
    pytest.skip("no CPython 3.6 on this machine")


def _modules():
    names = []
    for base, dirs, files in os.walk(os.path.join(REPO_ROOT, "smlib")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(base, REPO_ROOT).replace(os.sep, ".")
        # __main__ runs its program when imported: it is compiled below instead.
        names += [rel if f == "__init__.py" else f"{rel}.{f[:-3]}"
                  for f in sorted(files) if f.endswith(".py") and f != "__main__.py"]
    return names


def test_every_module_imports_on_python36():
    """Every smlib module (the toolstack too) and every driver script compiles
    and imports on 3.6 with the standard library alone: -I drops user site
    packages and PYTHONPATH, and nothing but the checkout is added."""
    py36 = _python36()
    code = (
        "import sys, importlib\n"
        f"sys.path.insert(0, {REPO_ROOT!r})\n"
        "failed = []\n"
        f"for m in {_modules()!r}:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as e:\n"
        "        failed.append('%s: %s: %s' % (m, type(e).__name__, e))\n"
        "print('\\n'.join(failed))\n"
    )
    out = subprocess.run([py36, "-I", "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, cwd="/")
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout
    drivers = [os.path.join(REPO_ROOT, "drivers", n)
               for n in sorted(os.listdir(os.path.join(REPO_ROOT, "drivers")))]
    drivers += [os.path.join(base, "__main__.py")
                for base, _, files in os.walk(os.path.join(REPO_ROOT, "smlib"))
                if "__main__.py" in files]
    compiled = subprocess.run(
        [py36, "-I", "-c", "import sys\nfor p in sys.argv[1:]:\n"
         "    compile(open(p).read(), p, 'exec')", *drivers],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert compiled.returncode == 0, compiled.stdout


def test_driver_tier_runs_on_dom0_python():
    """In the dom0 tier the drivers' `python3` is a 3.6 with XenAPI and no lxml."""
    if not os.environ.get("SMLIB_DRIVER_BIN"):
        pytest.skip("not the dom0 tier (SMLIB_DRIVER_BIN unset): drivers run on "
                    + sys.executable)
    python3 = os.path.join(driver_bin(), "python3")
    probe = subprocess.run(
        [python3, "-c",
         "import sys, importlib.util as u\n"
         "print(sys.version_info[0], sys.version_info[1],"
         " u.find_spec('XenAPI') is not None, u.find_spec('lxml') is not None)"],
        stdout=subprocess.PIPE, text=True, check=True)
    assert probe.stdout.split() == ["3", "6", "True", "False"], (
        f"{python3}: (major, minor, has XenAPI, has lxml) = {probe.stdout.split()}")


def test_driver_info_path_on_python36_is_lean():
    """What every driver process loads before its command runs (the driver
    module and the protocol, all sr_get_driver_info needs) pulls in neither a
    store nor the tree, nor typing / contextlib / re / collections: on 3.6
    those are not loaded at start-up, and typing alone costs about what the
    rest of the call does (bench/framework_startup.py measures the whole)."""
    py36 = _python36()
    costly = ("typing", "contextlib", "re", "collections", "importlib", "smlib.stores",
              "smlib.tree", "smlib.vhd")
    code = (
        "import sys\n"
        f"sys.path.insert(0, {REPO_ROOT!r})\n"
        "import smlib.protocol.smapi, smlib.drivers.dummy, smlib.drivers.file, smlib.drivers.lvm\n"
        f"print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {costly!r}"
        f" or any(m.startswith(c + '.') or m == c for c in {costly!r}))))\n"
    )
    out = subprocess.run([py36, "-I", "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"loaded at start-up: {out.stdout.strip()}"
