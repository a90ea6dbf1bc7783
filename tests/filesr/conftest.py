"""FileSR fixtures (helpers in filesr_helpers.py)."""

from __future__ import annotations

import pytest
from helpers.filesr_helpers import FileSRHarness


@pytest.fixture
def harness_fns(run_driver, xapi_params, dispatch) -> tuple:
    return (run_driver, xapi_params, dispatch)


@pytest.fixture
def filesr(tmp_path, harness_fns) -> FileSRHarness:
    h = FileSRHarness(str(tmp_path), harness_fns)
    h.ok("sr_create")
    return h
