"""`make install DESTDIR=...` gives a layout a host can run the drivers from."""

import os
import shutil
import subprocess
import sys
import sysconfig
import xmlrpc.client

import pytest
from helpers.xapi_harness import REPO_ROOT, driver_env, xapi_call

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.fixture(scope="module")
def destdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("destdir")
    subprocess.run(
        ["make", "-s", "install", f"DESTDIR={root}", f"PYTHON={sys.executable}"],
        cwd=REPO_ROOT, check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )
    return str(root)


def installed_env(destdir):
    # The host's interpreter would find PYLIB by itself; under DESTDIR we
    # point at it, ahead of the checkout the venv has installed editable.
    pylib = destdir + sysconfig.get_path("purelib")
    return driver_env({"PYTHONPATH": pylib}), pylib


def test_layout(destdir):
    sm_dir = os.path.join(destdir, "opt/xensource/sm")
    for name in os.listdir(os.path.join(REPO_ROOT, "drivers")):
        if name.endswith("SR"):
            assert os.access(os.path.join(sm_dir, name), os.X_OK), name
    _, pylib = installed_env(destdir)
    for name in ("protocol/smapi.py", "protocol/errors.py", "protocol/XE_SR_ERRORCODES.xml",
                 "drivers/dummy.py"):
        assert os.path.isfile(os.path.join(pylib, "smlib", name)), name
    assert os.access(os.path.join(destdir, "usr/local/bin/smctl"), os.X_OK)


def test_installed_driver_runs_from_the_installed_library(destdir, tmp_path):
    env, pylib = installed_env(destdir)
    where = subprocess.run(
        [sys.executable, "-c", "import smlib.protocol.errors as e; print(e.ERRORCODES_FILE)"],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert where == os.path.join(pylib, "smlib", "protocol", "XE_SR_ERRORCODES.xml")

    driver = os.path.join(destdir, "opt/xensource/sm/DummySR")
    for command, expect_fault in (("sr_get_driver_info", None), ("vdi_revert", 38)):
        proc = subprocess.run(
            [driver, xapi_call(command, args=["OpaqueRef:t"])], env=env, cwd=str(tmp_path),
            capture_output=True, text=True,
        )
        assert proc.returncode == 0, proc.stderr
        if expect_fault is None:
            (info,), _ = xmlrpc.client.loads(proc.stdout)
            assert info["name"] == "Dummy"
        else:
            with pytest.raises(xmlrpc.client.Fault) as caught:
                xmlrpc.client.loads(proc.stdout)
            assert caught.value.faultCode == expect_fault
