"""smctl as an operator coming from xe expects it (issue 13), run as a program.

Each test reproduces one gap the issue lists: VHD transfers and deltas,
honest progress, force= on destructive acts, xe's names, errors in
``Error code:`` form, sizes, help and completion.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys

import pytest
from helpers.smctl_run import file_sr, new_uuid, ok
from helpers.smctl_run import sparse_file as write

from smlib import vhd

MiB = 1 << 20
SMCTL = os.path.join(os.path.dirname(sys.executable), "smctl")


def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def one_disk(smctl, tmp_path, size: str = "8MiB") -> tuple[str, str]:
    sr, _location = file_sr(smctl, tmp_path)
    return sr, new_uuid(smctl("vdi-create", f"sr-uuid={sr}", "name-label=d",
                              f"virtual-size={size}"))


# -- transfers ------------------------------------------------------------------


def test_vhd_round_trip_and_delta(smctl, tmp_path):
    sr, disk = one_disk(smctl, tmp_path)
    first = write(tmp_path / "first.raw", {0: os.urandom(MiB), 6 * MiB: os.urandom(4096)},
                  8 * MiB)
    ok(smctl("vdi-import", f"uuid={disk}", f"filename={first}"))
    out = tmp_path / "full.vhd"
    assert ok(smctl("vdi-export", f"uuid={disk}", f"filename={out}", "format=vhd")) == ""
    vhd.check(str(out))
    if shutil.which("qemu-img"):
        subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw", str(out), first],
                       check=True, stdout=subprocess.DEVNULL)
    base = new_uuid(smctl("vdi-snapshot", f"uuid={disk}"))
    second = write(tmp_path / "second.raw", {0: open(first, "rb").read()[:MiB],
                                             4 * MiB: os.urandom(8192),
                                             6 * MiB: os.urandom(4096)}, 8 * MiB)
    ok(smctl("vdi-import", f"uuid={disk}", f"filename={second}"))
    delta = tmp_path / "delta.vhd"
    ok(smctl("vdi-export", f"uuid={disk}", f"filename={delta}", "format=vhd", f"base={base}"))
    with vhd.open_image(str(delta)) as img:
        assert img.allocated_blocks() == [2, 3]  # only the blocks that changed
    # A fresh disk holding the base, the delta imported over it: the leaf.
    restored = new_uuid(smctl("vdi-copy", f"uuid={base}", f"sr-uuid={sr}"))
    ok(smctl("vdi-import", f"uuid={restored}", f"filename={delta}", "format=vhd"))
    back = tmp_path / "back.raw"
    ok(smctl("vdi-export", f"uuid={restored}", f"filename={back}"))
    assert sha(back) == sha(second)
    result = smctl("vdi-export", f"uuid={disk}", f"filename={tmp_path / 'x.raw'}",
                   f"base={base}")
    assert result.returncode == 2 and "base= needs format=vhd" in result.stderr


def test_damaged_vhd_is_refused_by_the_cli(smctl, tmp_path):
    _sr, disk = one_disk(smctl, tmp_path)
    bad = tmp_path / "bad.vhd"
    vhd.create(str(bad), 8 * MiB)
    with open(bad, "r+b") as f:
        f.seek(512)
        f.write(b"garbage!")  # the dynamic header's cookie
    result = smctl("vdi-import", f"uuid={disk}", f"filename={bad}", "format=vhd")
    assert result.returncode == 1
    assert result.stderr.startswith("Error code: IMPORT_VHD_INVALID\nError parameters: ")
    assert "bad header cookie" in result.stderr
    assert len(json.loads(ok(smctl("vdi-list", "--json")))) == 1  # no snapshot left


def test_short_raw_import_keeps_the_rest_or_zeros_it_with_exact(smctl, tmp_path):
    _sr, disk = one_disk(smctl, tmp_path)
    full = write(tmp_path / "full.raw", {0: b"\x11" * 8 * MiB}, 8 * MiB)
    ok(smctl("vdi-import", f"uuid={disk}", f"filename={full}"))
    short = write(tmp_path / "short.raw", {0: b"\x22" * 24 * 1024}, 24 * 1024)
    out = tmp_path / "out.raw"
    ok(smctl("vdi-import", f"uuid={disk}", f"filename={short}"))
    ok(smctl("vdi-export", f"uuid={disk}", f"filename={out}"))
    data = out.read_bytes()
    assert data[:24 * 1024] == b"\x22" * 24 * 1024 and data[24 * 1024:] == b"\x11" * (
        8 * MiB - 24 * 1024)   # xe's behaviour: the old bytes stay past the image's end
    ok(smctl("vdi-import", f"uuid={disk}", f"filename={short}", "exact=true"))
    ok(smctl("vdi-export", f"uuid={disk}", f"filename={out}", "force=true"))
    data = out.read_bytes()
    assert data[24 * 1024:] == bytes(8 * MiB - 24 * 1024)
    assert "exact" in ok(smctl("help", "vdi-import"))


# -- progress ---------------------------------------------------------------------


PROGRESS = re.compile(r"import: [\d.]+ (B|KiB|MiB) / 16\.0 MiB +[\d.]+% +[\d.]+ (B|KiB|MiB|GiB)/s"
                      r" +(ETA \d+:\d\d|ETA --:--|done in \d+:\d\d)")


def test_progress_on_a_pipe_only_when_asked(smctl, tmp_path):
    _sr, disk = one_disk(smctl, tmp_path, "16MiB")
    raw = write(tmp_path / "in.raw", {0: os.urandom(16 * MiB)}, 16 * MiB)
    quiet = smctl("vdi-import", f"uuid={disk}", f"filename={raw}")
    assert quiet.returncode == 0 and quiet.stderr == ""
    shown = smctl("vdi-import", f"uuid={disk}", f"filename={raw}", "--progress")
    assert shown.returncode == 0 and shown.stdout == ""
    lines = shown.stderr.splitlines()
    assert lines and all(PROGRESS.fullmatch(line) for line in lines), shown.stderr
    assert lines[-1].startswith("import: 16.0 MiB / 16.0 MiB 100.0%") and "done in" in lines[-1]
    both = smctl("vdi-import", f"uuid={disk}", f"filename={raw}", "--progress", "--quiet")
    assert both.returncode == 2 and "cannot be used together" in both.stderr


def test_progress_redraws_on_a_terminal_unless_quiet(smctl, tmp_path):
    _sr, disk = one_disk(smctl, tmp_path, "16MiB")
    raw = write(tmp_path / "in.raw", {0: os.urandom(16 * MiB)}, 16 * MiB)
    env = dict(os.environ, SMCTL_DB=str(tmp_path / "cli.db"))

    def on_a_tty(*extra: str) -> str:
        master, slave = pty.openpty()
        proc = subprocess.Popen([SMCTL, "vdi-import", f"uuid={disk}", f"filename={raw}", *extra],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=slave)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        os.close(master)
        assert proc.wait(timeout=120) == 0
        return seen.decode()

    drawn = on_a_tty()
    assert drawn.startswith("\rimport: ") and drawn.endswith("\r\n")  # the tty maps \n
    last = drawn.rstrip().rsplit("\r", 1)[-1]
    assert PROGRESS.fullmatch(last.strip()) and "done in" in last
    assert on_a_tty("--quiet") == ""


def _interrupted(tmp_path, argv: list[str],
                 how: int = signal.SIGINT) -> subprocess.CompletedProcess:
    """Run smctl with --progress; Ctrl-C (SIGINT, or how) once its first progress line shows."""
    env = dict(os.environ, SMCTL_DB=str(tmp_path / "cli.db"))
    proc = subprocess.Popen([SMCTL, *argv, "--progress"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    assert " / " in first, first
    proc.send_signal(how)
    stdout, rest = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, first + rest)


def test_ctrl_c_during_import_puts_the_disk_back(smctl, tmp_path):
    _sr, disk = one_disk(smctl, tmp_path, "128MiB")
    old = write(tmp_path / "old.raw", {0: os.urandom(4 * MiB)}, 128 * MiB)
    ok(smctl("vdi-import", f"uuid={disk}", f"filename={old}"))
    before = json.loads(ok(smctl("vdi-list", "--json")))
    new = write(tmp_path / "new.raw", {0: os.urandom(128 * MiB)}, 128 * MiB)
    result = _interrupted(tmp_path, ["vdi-import", f"uuid={disk}", f"filename={new}"])
    assert result.returncode == 130, result.stderr
    assert "Error code: INTERRUPTED" in result.stderr
    assert json.loads(ok(smctl("vdi-list", "--json"))) == before
    out = tmp_path / "out.raw"
    ok(smctl("vdi-export", f"uuid={disk}", f"filename={out}"))
    assert sha(out) == sha(old)


def test_a_killed_import_is_rolled_back_by_the_next_smctl(smctl, tmp_path):
    sr, disk = one_disk(smctl, tmp_path, "128MiB")
    old = write(tmp_path / "old.raw", {0: os.urandom(4 * MiB)}, 128 * MiB)
    ok(smctl("vdi-import", f"uuid={disk}", f"filename={old}"))
    ok(smctl("sr-scan", f"uuid={sr}"))  # the scan below records hidden bases too
    before = json.loads(ok(smctl("vdi-list", "managed=true", "--json")))
    new = write(tmp_path / "new.raw", {0: os.urandom(128 * MiB)}, 128 * MiB)
    # SIGKILL: no clean-up of any kind; the rollback snapshot stays behind.
    dead = _interrupted(tmp_path, ["vdi-import", f"uuid={disk}", f"filename={new}"],
                        signal.SIGKILL)
    assert dead.returncode == -signal.SIGKILL
    # Reads do not recover: the rollback snapshot is still there.
    assert len(json.loads(ok(smctl("vdi-list", "managed=true", "--json")))) == 2
    nxt = smctl("sr-scan", f"uuid={sr}")
    assert nxt.returncode == 0, nxt.stderr
    assert f"an interrupted vdi-import into {disk}: rolled back" in nxt.stderr
    assert json.loads(ok(smctl("vdi-list", "managed=true", "--json"))) == before
    out = tmp_path / "out.raw"
    ok(smctl("vdi-export", f"uuid={disk}", f"filename={out}"))
    assert sha(out) == sha(old)


def test_ctrl_c_during_export_leaves_no_file_and_the_old_one_whole(smctl, tmp_path):
    _sr, disk = one_disk(smctl, tmp_path, "128MiB")
    raw = write(tmp_path / "in.raw", {0: os.urandom(128 * MiB)}, 128 * MiB)
    ok(smctl("vdi-import", f"uuid={disk}", f"filename={raw}"))
    target = tmp_path / "out"
    target.mkdir()
    (target / "disk.vhd").write_bytes(b"an older export")
    result = _interrupted(tmp_path, ["vdi-export", f"uuid={disk}", "force=true",
                                     f"filename={target / 'disk.vhd'}", "format=vhd"])
    assert result.returncode == 130 and "Error code: INTERRUPTED" in result.stderr
    assert os.listdir(target) == ["disk.vhd"]  # no temporary file left beside it
    assert (target / "disk.vhd").read_bytes() == b"an older export"


# -- force= -----------------------------------------------------------------------------


def test_destroying_a_disk_a_vm_uses_needs_force(smctl, tmp_path):
    sr, _location = file_sr(smctl, tmp_path)
    vm = new_uuid(smctl("vm-create", "name-label=vm", f"sr-uuid={sr}", "disk-sizes=4MiB"))
    disk = ok(smctl("vdi-list", "--minimal")).strip()
    result = smctl("vdi-destroy", f"uuid={disk}")
    assert result.returncode == 1 and "Error code: VDI_IN_USE" in result.stderr
    assert vm in result.stderr and "force=true" in result.stderr
    assert ok(smctl("vbd-list", f"vm-uuid={vm}", "params=vdi-uuid", "--minimal")).strip() == disk
    ok(smctl("vdi-destroy", f"uuid={disk}", "force=true"))
    assert ok(smctl("vdi-list", "--minimal")).strip() == ""
    assert ok(smctl("vbd-list", f"vm-uuid={vm}", "--minimal")).strip() == ""


def test_export_over_a_file_needs_force(smctl, tmp_path):
    _sr, disk = one_disk(smctl, tmp_path)
    source = tmp_path / "source.raw"
    source.write_bytes(b"\x33" * 4096)
    ok(smctl("vdi-import", f"uuid={disk}", f"filename={source}"))
    result = smctl("vdi-export", f"uuid={disk}", f"filename={source}")
    assert result.returncode == 1 and "Error code: FILE_ALREADY_EXISTS" in result.stderr
    assert source.read_bytes() == b"\x33" * 4096  # the file exported from is untouched
    ok(smctl("vdi-export", f"uuid={disk}", f"filename={source}", "force=true"))
    assert source.read_bytes() == b"\x33" * 4096 + bytes(8 * MiB - 4096)


def test_sr_create_in_a_missing_directory_needs_force(smctl, tmp_path):
    typo = tmp_path / "srv" / "sr-typo"
    result = smctl("sr-create", "type=file", f"device-config:location={typo}", "name-label=x")
    assert result.returncode == 1 and "Error code: SR_LOCATION_MISSING" in result.stderr
    assert "force=true" in result.stderr
    assert not (tmp_path / "srv").exists()
    assert ok(smctl("sr-list", "--minimal")).strip() == ""
    new_uuid(smctl("sr-create", "type=file", f"device-config:location={typo}", "name-label=x",
                   "force=true"))
    assert typo.is_dir()


# -- xe's names and habits ------------------------------------------------------------


def test_xe_names(smctl, tmp_path):
    version = ok(smctl("--version"))
    assert re.fullmatch(r"smctl \d+\.\d+\.\d+\n", version)
    sr, _location = file_sr(smctl, tmp_path)
    vm = new_uuid(smctl("vm-create", "name-label=vm", f"sr-uuid={sr}", "disk-sizes=4MiB"))
    disk = ok(smctl("vdi-list", "--minimal")).strip()
    assert ok(smctl("vdi-param-get", f"uuid={disk}", "param-name=virtual-size")) == f"{4 * MiB}\n"
    assert ok(smctl("vdi-param-get", f"uuid={disk}", "param-name=name-label")) == "vm disk 0\n"
    bad = smctl("vdi-param-get", f"uuid={disk}", "param-name=colour")
    assert bad.returncode == 2 and "unknown param-name 'colour'" in bad.stderr
    snap = new_uuid(smctl("vm-snapshot", f"uuid={vm}"))
    assert ok(smctl("snapshot-revert", f"snapshot-uuid={snap}")) == ""
    copy = new_uuid(smctl("vdi-copy", f"uuid={disk}", f"sr-uuid={sr}"))
    assert copy != disk


def test_text_revert_says_what_it_did(smctl, tmp_path):
    sr, disk = one_disk(smctl, tmp_path)
    snap = new_uuid(smctl("vdi-snapshot", f"uuid={disk}"))
    assert ok(smctl("vdi-revert", f"snapshot-uuid={snap}")) == f"reverted in place: {disk}\n"
    assert ok(smctl("vdi-revert", f"snapshot-uuid={snap}", "--minimal")) == f"{disk}\n"
    dummy = new_uuid(smctl("sr-create", "type=dummy", "name-label=d"))
    other = new_uuid(smctl("vdi-create", f"sr-uuid={dummy}", "name-label=o",
                           "virtual-size=2MiB"))
    osnap = new_uuid(smctl("vdi-snapshot", f"uuid={other}"))
    said = ok(smctl("vdi-revert", f"snapshot-uuid={osnap}"))
    match = re.fullmatch(r"cloned: new uuid (\S+) \(replaces (\S+), which is destroyed\)\n", said)
    assert match and match.group(2) == other and match.group(1) != other


def test_json_null_for_a_dangling_link(smctl, tmp_path):
    dummy = new_uuid(smctl("sr-create", "type=dummy", "name-label=d"))
    disk = new_uuid(smctl("vdi-create", f"sr-uuid={dummy}", "name-label=o", "virtual-size=2MiB"))
    snap = new_uuid(smctl("vdi-snapshot", f"uuid={disk}"))
    ok(smctl("vdi-destroy", f"uuid={disk}"))
    record = json.loads(ok(smctl("vdi-param-list", f"uuid={snap}", "--json")))
    assert record["snapshot-of"] is None
    text = ok(smctl("vdi-param-list", f"uuid={snap}"))
    assert "snapshot-of ( RO): <not in database>" in text


def test_conflicting_flags_are_a_usage_error(smctl):
    result = smctl("vdi-list", "--json", "--minimal")
    assert result.returncode == 2 and result.stdout == ""
    assert "--json and --minimal cannot be used together" in result.stderr
    result = smctl("vdi-list", "--bogus")
    assert result.returncode == 2 and "unknown flag '--bogus'" in result.stderr


def test_sizes_and_their_rounding(smctl, tmp_path):
    sr, _location = file_sr(smctl, tmp_path)
    made = smctl("vdi-create", f"sr-uuid={sr}", "name-label=a", "virtual-size=1.5GiB")
    assert made.returncode == 0 and made.stderr == ""  # a whole number of blocks: no note
    disk = made.stdout.strip()
    assert ok(smctl("vdi-param-get", f"uuid={disk}", "param-name=virtual-size")) == \
        f"{3 << 29}\n"
    small = smctl("vdi-create", f"sr-uuid={sr}", "name-label=b", "virtual-size=10kb")
    assert small.returncode == 0
    assert "the size 10000 bytes was rounded up to 2 MiB (whole 2 MiB VHD blocks)" in small.stderr
    huge = smctl("vdi-create", f"sr-uuid={sr}", "name-label=c", "virtual-size=100T")
    assert huge.returncode == 1
    assert huge.stderr.startswith("Error code: SR_BACKEND_FAILURE_79\n")
    assert "larger than a VHD can be" in huge.stderr and ".part" not in huge.stderr
    assert str(tmp_path) not in huge.stderr  # no internal path


def test_local_file_errors_have_an_error_code(smctl, tmp_path):
    _sr, disk = one_disk(smctl, tmp_path)
    missing = smctl("vdi-import", f"uuid={disk}", f"filename={tmp_path / 'nope.raw'}")
    assert missing.returncode == 1
    assert missing.stderr.startswith("Error code: FILE_NOT_FOUND\nError parameters: ")
    folder = smctl("vdi-import", f"uuid={disk}", f"filename={tmp_path}")  # not a file
    assert folder.returncode == 1
    assert folder.stderr.startswith("Error code: IMPORT_FILE_INVALID\nError parameters: ")
    assert "Is a directory" in folder.stderr


# -- help and completion ---------------------------------------------------------------


def test_help_for_every_command_has_parameters_defaults_and_an_example(smctl):
    from smlib.toolstack.cli.commands import COMMANDS
    from smlib.toolstack.cli.docs import DOCS

    assert sorted(DOCS) == sorted(COMMANDS)
    for name, cmd in COMMANDS.items():
        documented = set(DOCS[name].params)
        takes = set(cmd.required + cmd.optional) | {f"{m}:<key>" for m in cmd.maps}
        if cmd.filters:
            takes.add("params")
        assert documented == takes, name
    text = ok(smctl("help", "vdi-export"))
    assert "format" in text and "[default: raw]" in text and "[required]" in text
    assert "\nexample:\n  smctl vdi-export " in text
    assert "--progress" in text
    assert ok(smctl("vdi-export", "--help")) == text


def test_bash_completion(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    env = dict(os.environ, SMCTL_DB=str(tmp_path / "cli.db"),
               PATH=os.path.dirname(SMCTL) + os.pathsep + os.environ.get("PATH", ""))

    def complete(line: str) -> list[str]:
        script = (f'source <("{SMCTL}" completion bash)\n'
                  f'COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}\n'
                  'read -ra COMP_WORDS <<< "$COMP_LINE"\n'
                  'COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n'
                  '[[ "$COMP_LINE" == *" " ]] && COMP_CWORD=${#COMP_WORDS[@]}\n'
                  '_smctl_complete\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
        done = subprocess.run(["bash", "-c", script], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [w for w in done.stdout.splitlines() if w]

    assert complete("smctl vdi-ex") == ["vdi-export"]
    assert complete("smctl snap") == ["snapshot-revert"]
    offered = complete("smctl vdi-export ")
    assert {"uuid=", "filename=", "format=", "base=", "force=", "--progress"} <= set(offered)
    assert complete("smctl vdi-import uuid=x fo") == ["format="]
    # bash splits words at '=': the value is completed after it.
    assert complete("smctl vdi-export format=v") == ["vhd"]
    assert complete("smctl help vdi-param-") == ["vdi-param-get", "vdi-param-list",
                                                 "vdi-param-set"]
