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


def _make(target, root, *extra):
    return subprocess.run(
        ["make", "-s", target, f"DESTDIR={root}", f"PYTHON={sys.executable}", *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )


def _tree(root, dirs=True):
    """Every path under root -> file bytes, link target or "dir": the state to compare."""
    state = {}
    for base, subdirs, files in os.walk(root):
        for name in subdirs + files:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                state[rel] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                if dirs:
                    state[rel] = "dir"
            else:
                with open(path, "rb") as f:
                    state[rel] = f.read()
    return state


STOCK_DRIVER = b"#!/usr/bin/python3\n# the host's own FileSR (stock sm)\n"


@pytest.fixture
def stock_host(tmp_path):
    """A DESTDIR laid out as stock sm installs it: /opt/xensource/sm/FileSR a
    symlink to /usr/libexec/sm/drivers/FileSR, LVMSR a plain file."""
    root = tmp_path / "host"
    libexec = root / "usr/libexec/sm/drivers"
    libexec.mkdir(parents=True)
    (libexec / "FileSR").write_bytes(STOCK_DRIVER)
    sm = root / "opt/xensource/sm"
    sm.mkdir(parents=True)
    os.symlink("/usr/libexec/sm/drivers/FileSR", str(sm / "FileSR"))
    (sm / "LVMSR").write_bytes(b"#!/usr/bin/python3\n# stock LVHD\n")
    return str(root)


def test_install_refuses_to_replace_a_driver_it_did_not_install(stock_host):
    before = _tree(stock_host)
    proc = _make("install", stock_host)
    assert proc.returncode != 0
    assert "opt/xensource/sm/FileSR exists and was not installed by smlib" in proc.stderr
    assert "opt/xensource/sm/LVMSR exists and was not installed by smlib" in proc.stderr
    assert "FORCE=1" in proc.stderr
    assert _tree(stock_host) == before  # nothing at all changed, DummySR included


def test_force_keeps_the_original_and_uninstall_puts_it_back(stock_host, tmp_path):
    before = _tree(stock_host)
    proc = _make("install", stock_host, "FORCE=1")
    assert proc.returncode == 0, proc.stderr
    sm = os.path.join(stock_host, "opt/xensource/sm")
    assert os.readlink(os.path.join(sm, "FileSR.orig")) == "/usr/libexec/sm/drivers/FileSR"
    with open(os.path.join(sm, "LVMSR.orig"), "rb") as f:
        assert f.read() == before["opt/xensource/sm/LVMSR"]
    for name in ("FileSR", "LVMSR", "DummySR"):
        path = os.path.join(sm, name)
        assert not os.path.islink(path) and os.access(path, os.X_OK)
        with open(path) as f, open(os.path.join(REPO_ROOT, "drivers", name)) as g:
            assert f.read() == g.read()
    assert not os.path.exists(os.path.join(sm, "DummySR.orig"))

    # Installed again (an upgrade): ours are replaced without FORCE, the originals kept.
    again = _make("install", stock_host)
    assert again.returncode == 0, again.stderr
    assert os.readlink(os.path.join(sm, "FileSR.orig")) == "/usr/libexec/sm/drivers/FileSR"

    env, _ = installed_env(stock_host)
    proc = subprocess.run([os.path.join(sm, "DummySR"), xapi_call("sr_get_driver_info")],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0 and "<params>" in proc.stdout, proc.stderr

    proc = _make("uninstall", stock_host)
    assert proc.returncode == 0, proc.stderr
    # Every file as it was (install's empty directories may stay).
    assert _tree(stock_host, dirs=False) == {k: v for k, v in before.items() if v != "dir"}


def test_uninstall_leaves_a_driver_that_is_not_ours(stock_host):
    before = _tree(stock_host)
    proc = _make("uninstall", stock_host)
    assert proc.returncode == 0, proc.stderr
    assert "FileSR is not smlib's: left alone" in proc.stderr
    assert _tree(stock_host) == before
