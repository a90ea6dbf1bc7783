"""A machine with neither blktap's tap-ctl nor nbdkit (a bare development
box): vdi_activate serves nothing, says so in the log, and the SR works on;
the disk's VHD stays usable as a file (what smctl's import/export and
`make demo` rely on). The driver runs as a program with a PATH that holds
only its interpreter, so no server binary can be found."""

from __future__ import annotations

import os

from helpers.filesr_helpers import FileSRHarness
from helpers.xapi_harness import driver_bin


def test_activate_without_any_server_is_logged_not_refused(
        tmp_path, run_driver, xapi_params, dispatch, monkeypatch, sm_log):
    monkeypatch.delenv("SMLIB_DATAPATH", raising=False)     # detected, not forced
    monkeypatch.delenv("SMLIB_NBDKIT", raising=False)
    monkeypatch.delenv("SMLIB_TAPCTL", raising=False)
    sr = FileSRHarness(str(tmp_path), (run_driver, xapi_params, dispatch))

    def ok(command: str, **keys):
        run = sr.run(command, env={"PATH": driver_bin()}, **keys)
        assert run.returncode == 0, run.stderr
        return run.ok()

    ok("sr_create")
    vdi = ok("vdi_create", args=[str(8 << 20), "disk", "", "", "false", "", "", "false"])["uuid"]
    info = ok("vdi_attach", vdi_uuid=vdi, args=["true"])
    assert info["params_nbd"].endswith(f":exportname={vdi}")
    ok("vdi_activate", vdi_uuid=vdi, args=["true"])
    with open(sm_log) as f:
        assert f"VDI {vdi} is not served over NBD" in f.read()
    link = info["params_nbd"].split(":")[2]
    assert not os.path.exists(link)                          # nothing pretends to serve
    ok("vdi_deactivate", vdi_uuid=vdi)
    ok("vdi_detach", vdi_uuid=vdi)
    ok("vdi_delete", vdi_uuid=vdi)
