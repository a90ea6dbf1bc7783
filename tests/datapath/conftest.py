"""Data-path fixtures: a FileSR whose disks are served over NBD by nbdkit."""

from __future__ import annotations

import pytest
from helpers.filesr_helpers import FileSRHarness
from helpers.nbd_clients import need_tools


@pytest.fixture
def filesr(tmp_path, run_driver, xapi_params, dispatch, monkeypatch) -> FileSRHarness:
    need_tools()
    monkeypatch.setenv("SMLIB_DATAPATH", "nbdkit")   # even on a host with tap-ctl
    h = FileSRHarness(str(tmp_path), (run_driver, xapi_params, dispatch))
    h.ok("sr_create")
    return h
