"""Checks on the result of one smctl run (the ``smctl`` fixture of tests/toolstack), and
raw images to import."""

from __future__ import annotations

import re

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n$")


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def new_uuid(result) -> str:
    out = ok(result)
    assert UUID.match(out), out  # a create prints the new uuid alone on its line
    return out.strip()


def file_sr(smctl, tmp_path) -> tuple[str, str]:
    """smctl sr-create of a FileSR in tmp_path/sr: (its uuid, its directory)."""
    location = tmp_path / "sr"
    location.mkdir()
    sr = new_uuid(smctl("sr-create", "type=file", f"device-config:location={location}",
                        "name-label=local"))
    return sr, str(location)


def sparse_file(path, chunks: dict[int, bytes], size: int) -> str:
    """A raw image of size bytes: zeros (a hole) except chunks {offset: bytes}."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, blob in chunks.items():
            f.seek(offset)
            f.write(blob)
    return str(path)
