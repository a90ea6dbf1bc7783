"""A large discarded volume is freed by a detached process, not by the call.

Real files on a real directory: the point is what the kernel does with the
last descriptor of an unlinked file.
"""

from __future__ import annotations

import os
import time

from smlib.stores.file import RELEASE_IN_BACKGROUND, FileStore


def _holders(path: str) -> list[str]:
    """/proc/<pid>/fd entries still open on the (deleted) file at path."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") == path + " (deleted)":
                    found.append(f"{pid}/{fd}")
            except OSError:
                continue
    return found


def _store(tmp_path) -> FileStore:
    store = FileStore({"location": str(tmp_path)}, "0" * 8 + "-0000-4000-8000-" + "0" * 12)
    store.sr_create()
    return store


def _big_volume(store: FileStore, name: str) -> str:
    path = store._path(name)
    with open(path, "wb") as f:
        f.truncate(RELEASE_IN_BACKGROUND)
        f.write(b"\x5a" * (1 << 20))  # some real blocks too
    return path


def _wait_released(path: str) -> list[str]:
    deadline = time.monotonic() + 10
    while (left := _holders(path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_remove_of_a_large_volume_frees_it_in_the_background(tmp_path):
    store = _store(tmp_path)
    path = _big_volume(store, "11111111-1111-4111-8111-111111111111")
    store.remove("11111111-1111-4111-8111-111111111111")
    assert not os.path.exists(path)
    assert _wait_released(os.path.realpath(path)) == []
    # This process kept nothing open on it.
    assert not any(h.startswith(f"{os.getpid()}/") for h in _holders(os.path.realpath(path)))


def test_replace_over_a_large_volume_keeps_the_new_one_and_frees_the_old(tmp_path):
    store = _store(tmp_path)
    old = _big_volume(store, "22222222-2222-4222-8222-222222222222")
    new = store._path("22222222-2222-4222-8222-222222222222.new")
    with open(new, "wb") as f:
        f.write(b"new contents")
    store.replace("22222222-2222-4222-8222-222222222222.new",
                  "22222222-2222-4222-8222-222222222222")
    with open(old, "rb") as f:
        assert f.read() == b"new contents"
    assert not os.path.exists(new)
    assert _wait_released(os.path.realpath(old)) == []
