"""Fixtures for the VHD library tests."""

from __future__ import annotations

import os
import shutil

import pytest

GOLDEN = os.environ.get("VHD_GOLDEN", os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                                   "shared", "vhd-golden"))
if not os.path.isdir(GOLDEN):
    GOLDEN = "/work/shared/vhd-golden"


@pytest.fixture
def golden():
    """Path of a golden file; skips when the references are not beside the checkout."""
    if not os.path.isdir(GOLDEN):
        pytest.skip("vhd-golden references not available")

    def get(name: str) -> str:
        return os.path.join(GOLDEN, name)
    return get


@pytest.fixture
def golden_copy(tmp_path, golden):
    """Copy a golden file into tmp_path (writable) and return its path."""
    def copy(name: str) -> str:
        dst = tmp_path / name
        shutil.copyfile(golden(name), dst)
        os.chmod(dst, 0o644)
        return str(dst)
    return copy
