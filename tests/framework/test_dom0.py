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


def test_installed_on_a_bare_python36_smctl_and_drivers_work(tmp_path):
    """`make install` for a 3.6 with the standard library alone (no lxml, no
    XenAPI: the pyenv interpreter itself), then smctl and the installed
    drivers run by it: a working SR, and a refused command is a coded
    error, never a traceback."""
    py36 = _python36()
    bin36 = os.path.dirname(py36)
    if not os.path.exists(os.path.join(bin36, "python3")):
        pytest.skip(f"{py36} has no python3 beside it for the drivers' shebang")
    missing = subprocess.run([py36, "-I", "-c", "import lxml"], capture_output=True)
    assert missing.returncode != 0, "this 3.6 has lxml: not a bare dom0 interpreter"
    root = tmp_path / "root"
    proc = subprocess.run(["make", "-s", "install", f"DESTDIR={root}", f"PYTHON={py36}"],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    purelib = subprocess.run([py36, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    env = {"PATH": bin36 + os.pathsep + os.environ["PATH"], "PYTHONPATH": f"{root}{purelib}",
           "SMCTL_DB": str(tmp_path / "state.db"), "SM_LOG": str(tmp_path / "SMlog"),
           "SMCTL_DRIVER_DIR": f"{root}/opt/xensource/sm", "HOME": str(tmp_path)}

    def smctl(*args):
        return subprocess.run([f"{root}/usr/local/bin/smctl", *args], env=env, cwd=str(tmp_path),
                              capture_output=True, text=True, timeout=300)

    (tmp_path / "sr").mkdir()
    sr = smctl("sr-create", "type=file", f"device-config:location={tmp_path}/sr", "name-label=s")
    assert sr.returncode == 0, sr.stderr
    disk = smctl("vdi-create", f"sr-uuid={sr.stdout.strip()}", "name-label=d",
                 "virtual-size=4MiB")
    assert disk.returncode == 0, disk.stderr
    shrink = smctl("vdi-resize", f"uuid={disk.stdout.strip()}", "disk-size=2MiB")
    assert shrink.returncode == 1 and "Error code:" in shrink.stderr, shrink.stderr
    assert "1200" not in shrink.stderr and "Traceback" not in shrink.stderr
    for result in (sr, disk, shrink):
        assert "Traceback" not in result.stdout + result.stderr
