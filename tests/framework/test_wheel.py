"""The wheel: built, installed in a fresh venv, and smctl's demo flow run from it.

Offline-capable: the wheel is built without build isolation (setuptools and
wheel come with the test extra) and installed with --no-index --no-deps into
a venv that has nothing else: smlib needs only the standard library (lxml
and XenAPI are optional), so smctl and the demo must run there as they are.
"""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from helpers.xapi_harness import REPO_ROOT

DRIVERS = ("FileSR", "LVMSR", "DummySR")
# Not copied into the build: this machine's state, and build leftovers.
SKIP = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__",
                              ".pytest_cache", ".hypothesis", ".ruff_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    out = tmp_path_factory.mktemp("wheel")
    # A copy of the sources (links kept: smlib/drivers_bin points into
    # drivers/): building in the checkout would leave build/ and *.egg-info
    # behind, and two test runs at once would share them.
    src = tmp_path_factory.mktemp("build") / "src"
    shutil.copytree(REPO_ROOT, src, symlinks=True, ignore=SKIP)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(out), str(src)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert built.returncode == 0, built.stdout
    (found,) = [p for p in os.listdir(out) if p.endswith(".whl")]
    return str(out / found)


def test_wheel_ships_the_drivers_executable(wheel):
    with zipfile.ZipFile(wheel) as z:
        infos = {i.filename: i for i in z.infolist()}
        for name in DRIVERS:
            info = infos[f"smlib/drivers_bin/{name}"]
            assert (info.external_attr >> 16) & 0o111, f"{name} is not executable in the wheel"
            assert z.read(info).startswith(b"#!/usr/bin/env python3\n")
        assert "smlib/protocol/XE_SR_ERRORCODES.xml" in infos
        meta = next(n for n in infos if n.endswith(".dist-info/METADATA"))
        requires = [line for line in z.read(meta).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    # XenAPI only as an extra: a host ships it, smctl elsewhere does not need it.
    xenapi = [r for r in requires if "xenapi" in r.lower()]
    assert xenapi and all("extra ==" in r for r in xenapi), requires


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> str:
    home = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
    py = str(home / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return str(home)


def _env(venv: str, tmp_path) -> "dict[str, str]":
    # None of smlib's knobs (SMLIB_*, and the older SMCTL_* / SM_*) from outside.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SMLIB_", "SMCTL_", "SM_")) and
           k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.path.join(venv, "bin") + os.pathsep + "/usr/bin:/bin"
    env["SMLIB_DB"] = str(tmp_path / "state.db")
    env["SMLIB_LOG"] = str(tmp_path / "SMlog")
    return env


def test_installed_smctl_finds_the_packaged_drivers(venv, tmp_path):
    env = _env(venv, tmp_path)
    py = os.path.join(venv, "bin", "python")
    where = subprocess.run(
        [py, "-c", "import smlib; from smlib.toolstack.runner import default_driver_dir;"
                   "print(smlib.__file__); print(default_driver_dir())"],
        cwd=str(tmp_path), env=env, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout.split()
    assert all(p.startswith(venv) for p in where), where  # the wheel's copy, not the checkout's
    if os.path.isdir("/opt/xensource/sm"):
        pytest.skip("a host's /opt/xensource/sm wins over the packaged drivers here")
    assert where[1].endswith(os.path.join("smlib", "drivers_bin"))
    smctl = os.path.join(venv, "bin", "smctl")
    version = subprocess.run([smctl, "--version"], env=env, stdout=subprocess.PIPE, text=True)
    assert version.returncode == 0 and version.stdout.startswith("smctl "), version
    location = tmp_path / "sr"
    location.mkdir()
    made = subprocess.run(
        [smctl, "sr-create", "type=file", f"device-config:location={location}",
         "name-label=wheel"], cwd=str(tmp_path), env=env,
        capture_output=True, text=True,
    )
    assert made.returncode == 0, made.stderr


def test_installed_demo_flow(venv, tmp_path):
    env = _env(venv, tmp_path)
    if os.path.isdir("/opt/xensource/sm"):
        env["SMLIB_DRIVER_DIR"] = os.path.join(
            subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                            "import smlib, os; print(os.path.dirname(smlib.__file__))"],
                           env=env, check=True, stdout=subprocess.PIPE, text=True
                           ).stdout.strip(), "drivers_bin")
    demo = subprocess.run(
        [os.path.join(venv, "bin", "python"), "-m", "smlib.toolstack.demo"],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=600,
    )
    assert demo.returncode == 0, demo.stdout
