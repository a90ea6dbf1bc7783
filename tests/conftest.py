"""Shared fixtures (framework): the helpers of tests/xapi_harness.py, as fixtures.

Put an area's own fixtures in that area's conftest.py.
"""

from __future__ import annotations

import pytest
from xapi_harness import dispatch, run_driver, xapi_call, xapi_params, xapi_xml


@pytest.fixture(autouse=True)
def sm_log(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test logs to its own file, never to the machine's /var/log/SMlog."""
    path = str(tmp_path_factory.mktemp("smlog") / "SMlog")
    monkeypatch.setenv("SM_LOG", path)
    return path


@pytest.fixture(name="xapi_params")
def _xapi_params_fixture():
    return xapi_params


@pytest.fixture(name="xapi_call")
def _xapi_call_fixture():
    return xapi_call


@pytest.fixture(name="xapi_xml")
def _xapi_xml_fixture():
    return xapi_xml


@pytest.fixture(name="run_driver")
def _run_driver_fixture():
    return run_driver


@pytest.fixture(name="dispatch")
def _dispatch_fixture():
    return dispatch
