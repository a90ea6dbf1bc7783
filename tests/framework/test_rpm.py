"""`make rpm`: the package a dom0 installs (rpm/smlib.spec), its file list and scriptlets.

Built with the real rpmbuild (Debian: rpm) and byte-compiled by a real
CPython 3.6. Skipped where rpmbuild or a 3.6 is missing, except under
SMLIB_REQUIRE_RPM=1 (CI), where that fails.
"""

import os
import shutil
import subprocess

import pytest
from helpers.xapi_harness import REPO_ROOT, xapi_call

SITE = "/usr/lib/python3.6/site-packages"
TYPES = ("DummySR", "FileSR", "LVMSR")


def _python36():
    found = subprocess.run([os.path.join(REPO_ROOT, ".ci", "find-python36")],
                           stdout=subprocess.PIPE, text=True)
    return found.stdout.strip() if found.returncode == 0 else ""


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    py36 = _python36()
    missing = [what for what, ok in (("rpmbuild", shutil.which("rpmbuild")),
                                     ("rpm", shutil.which("rpm")), ("CPython 3.6", py36)) if not ok]
    if missing:
        if os.environ.get("SMLIB_REQUIRE_RPM") == "1":
            pytest.fail(f"SMLIB_REQUIRE_RPM=1 but {', '.join(missing)} missing")
        pytest.skip(f"{', '.join(missing)} missing")
    out = tmp_path_factory.mktemp("rpm")
    proc = subprocess.run(
        ["make", "-s", "rpm", f"RPM_TOP={out}/top", f"DIST={out}", f"PY36={py36}"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout
    (rpm,) = [os.path.join(str(out), n) for n in os.listdir(str(out)) if n.endswith(".rpm")]
    return rpm, py36


def _query(rpm, *args):
    return subprocess.run(["rpm", "-qp", *args, rpm], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True,
                          check=True).stdout


def _library_files():
    """What the package must hold of smlib/: every module, its 3.6 byte code, the table."""
    want = set()
    for base, dirs, files in os.walk(os.path.join(REPO_ROOT, "smlib")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(base, REPO_ROOT)
        want.add(f"{SITE}/{rel}")
        for name in files:
            if name.endswith(".py"):
                want.add(f"{SITE}/{rel}/{name}")
                want.add(f"{SITE}/{rel}/__pycache__")
                want.add(f"{SITE}/{rel}/__pycache__/{name[:-3]}.cpython-36.pyc")
            elif name == "XE_SR_ERRORCODES.xml":
                want.add(f"{SITE}/{rel}/{name}")
    return want


def test_file_list(package):
    rpm, _ = package
    listed = set(_query(rpm, "-l").split())
    drivers = {f"/opt/xensource/sm/{t}" for t in TYPES}
    expected = drivers | _library_files() | {
        "/usr/bin/smctl", "/usr/libexec/smlib", "/usr/libexec/smlib/drivers",
        "/usr/libexec/smlib/sm-drivers", *(f"/usr/libexec/smlib/drivers/{t}" for t in TYPES)}
    assert listed == expected, (sorted(listed - expected), sorted(expected - listed))
    # The /opt/xensource/sm entries are ghosts: stock sm owns the same paths.
    states = _query(rpm, "--qf", "[%{FILEFLAGS:fflags}:%{FILENAMES}\n]")
    ghosts = {line.split(":", 1)[1] for line in states.splitlines()
              if "g" in line.split(":", 1)[0]}
    assert ghosts == drivers
    requires = _query(rpm, "--requires")
    assert "python(abi) = 3.6" in requires and "/usr/bin/python3" in requires
    assert "lxml" not in requires and "XenAPI" not in requires
    assert _query(rpm, "--qf", "%{ARCH} %{PAYLOADCOMPRESSOR}") == "noarch gzip"


def test_installed_tree_runs_on_python36(package, tmp_path):
    """Unpacked into a root (no scripts), the byte code is 3.6's and the
    packaged DummySR answers, run by 3.6 from the packaged library."""
    rpm, py36 = package
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["rpm", "--root", str(root), "--initdb"], check=True)
    subprocess.run(["rpm", "--root", str(root), "-i", "--nodeps", "--noscripts", rpm],
                   check=True, capture_output=True)
    site = str(root) + SITE
    magic = subprocess.run([py36, "-c", "import importlib.util as u; print(u.MAGIC_NUMBER.hex())"],
                           stdout=subprocess.PIPE, text=True).stdout.strip()
    with open(f"{site}/smlib/protocol/__pycache__/smapi.cpython-36.pyc", "rb") as f:
        assert f.read(4).hex() == magic
    env = dict(os.environ, PYTHONPATH=site, SM_LOG=str(tmp_path / "SMlog"))
    env["PATH"] = os.path.dirname(py36) + os.pathsep + env["PATH"]
    proc = subprocess.run([py36, f"{root}/usr/libexec/smlib/drivers/DummySR",
                           xapi_call("vdi_revert", args=["OpaqueRef:x"])],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0 and "<int>38</int>" in proc.stdout, proc.stderr


def test_scriptlets_keep_and_restore_the_hosts_drivers(package, tmp_path):
    """The package's own post / postun scriptlets, run against a stock-sm
    layout (paths moved under a temporary root): the stock drivers are kept
    as .orig and put back on erase."""
    rpm, _ = package
    sm = tmp_path / "opt/xensource/sm"
    sm.mkdir(parents=True)
    os.symlink("/usr/libexec/sm/drivers/FileSR", str(sm / "FileSR"))
    (sm / "LVMSR").write_text("#!/usr/bin/python3\n# stock\n")
    libexec = tmp_path / "usr/libexec/smlib"
    (libexec / "drivers").mkdir(parents=True)
    for t in TYPES:
        shutil.copy(os.path.join(REPO_ROOT, "drivers", t), str(libexec / "drivers" / t))
    shutil.copy(os.path.join(REPO_ROOT, "tools", "sm-drivers"), str(libexec / "sm-drivers"))

    def scriptlet(tag, arg):
        text = _query(rpm, "--qf", "%{" + tag + "}")
        text = text.replace("/opt/xensource/sm", str(sm)).replace("/usr/libexec/smlib",
                                                                   str(libexec))
        proc = subprocess.run(["sh", "-c", text, "scriptlet", arg], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr

    scriptlet("POSTIN", "1")
    assert os.readlink(str(sm / "FileSR.orig")) == "/usr/libexec/sm/drivers/FileSR"
    assert (sm / "LVMSR.orig").read_text() == "#!/usr/bin/python3\n# stock\n"
    assert all("# smlib-driver:" in (sm / t).read_text() for t in TYPES)
    scriptlet("POSTUN", "1")  # an upgrade: nothing moves
    assert all("# smlib-driver:" in (sm / t).read_text() for t in TYPES)
    scriptlet("POSTUN", "0")  # the erase
    assert sorted(os.listdir(str(sm))) == ["FileSR", "LVMSR"]
    assert os.readlink(str(sm / "FileSR")) == "/usr/libexec/sm/drivers/FileSR"
    assert (sm / "LVMSR").read_text() == "#!/usr/bin/python3\n# stock\n"
