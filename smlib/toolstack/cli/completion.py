"""Bash completion for smctl: command names, then each command's param= names.

``smctl completion bash`` prints a script to source (``source <(smctl
completion bash)``, or save it under /etc/bash_completion.d/). Its function
hands the line up to the cursor to ``smctl __complete``, which prints one
candidate per line. Bash splits words at ``=`` and ``:`` as well as at
spaces, so a candidate is printed from the start of the word bash sees.
"""

import os
import shlex
from typing import Iterable, List, Optional

BASH_SCRIPT = r"""# bash completion for smctl (smctl completion bash)
_smctl_complete() {
    local IFS=$'\n'
    COMPREPLY=($(smctl __complete "${COMP_LINE:0:COMP_POINT}" 2>/dev/null))
    # param= and map:key= go on without a space; a whole word gets one.
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *[=:] ]]; then
        compopt -o nospace 2>/dev/null
    fi
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == "<file>" ]]; then
        COMPREPLY=($(compgen -f -- "${COMP_WORDS[COMP_CWORD]#=}"))
    fi
}
complete -F _smctl_complete smctl
"""

GLOBAL_WORDS = ("help", "completion", "--help", "--version")
WORDBREAKS = "=:"   # the characters of bash's COMP_WORDBREAKS smctl's words contain

# Values worth offering for some parameters (uuids come from the database).
VALUES = {
    "format": ("raw", "vhd"),
    "force": ("true", "false"),
    "exact": ("true", "false"),
    "read-only": ("true", "false"),
    "is-a-snapshot": ("true", "false"),
    "type": ("file", "lvm", "dummy", "user", "suspend", "system"),
    "params": ("all",),
}
FILE_PARAMS = ("filename", "device-config:location", "device-config:device")
MAP_KEYS = {"device-config": ("location", "device"), "driver-params": ("type",)}


def _split(line: str) -> "List[str]":
    """Words of a partial command line; an open quote is closed for the split."""
    for tail in ("", '"', "'"):
        try:
            words = shlex.split(line + tail)
            break
        except ValueError:
            continue
    else:
        words = line.split()
    if line and line[-1].isspace():
        words.append("")
    return words or [""]


def _bash_word(typed: str, candidate: str) -> str:
    """The candidate as bash's current word sees it: from the last break character on."""
    cut = max(typed.rfind(c) for c in WORDBREAKS)
    return candidate[cut + 1:] if cut >= 0 else candidate


def _uuids(kind: str) -> "List[str]":
    """uuids of the records a uuid parameter names (best effort: none on any error)."""
    import sqlite3

    from smlib.toolstack.db import default_path

    table = {"sr": "sr", "vm": "vm", "vdi": "vdi", "vbd": "vbd"}.get(kind)
    path = default_path()
    if table is None or not os.path.exists(path):
        return []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [row[0] for row in conn.execute(f"SELECT uuid FROM {table}")]
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def _uuid_kind(command: str, key: str) -> Optional[str]:
    if key in ("sr-uuid",):
        return "sr"
    if key in ("vdi-uuids", "cd-uuid", "base", "into-vdi-uuid"):
        return "vdi"
    if key in ("uuid", "snapshot-uuid"):
        noun = command.split("-", 1)[0]
        return "vm" if noun == "snapshot" else noun
    return None


def candidates(line: str, commands: "dict", aliases: Iterable[str] = ()) -> "List[str]":
    """Completions of the last word of line (the text up to the cursor)."""
    words = _split(line)
    typed = words[-1]
    names = sorted(set(commands) | set(aliases))
    if len(words) <= 2:
        pool = names + list(GLOBAL_WORDS)
        return [c for c in pool if c.startswith(typed)]
    name = words[1]
    if name in ("help", "completion"):
        pool = names if name == "help" else ["bash"]
        return [c for c in pool if c.startswith(typed)] if len(words) == 3 else []
    cmd = commands.get(name)
    if cmd is None:
        return []
    key, sep, value = typed.partition("=")
    if sep:
        if key in FILE_PARAMS:
            return ["<file>"]
        kind = _uuid_kind(name, key)
        pool = _uuids(kind) if kind else list(VALUES.get(key, ()))
        return [_bash_word(typed, f"{key}={v}") for v in pool if v.startswith(value)]
    given = {w.partition("=")[0] for w in words[2:-1]}
    pool = [f"{k}=" for k in tuple(cmd.required) + tuple(cmd.optional) if k not in given]
    pool += [f"{m}:" for m in cmd.maps]
    pool += [f"{m}:{k}=" for m in cmd.maps for k in MAP_KEYS.get(m, ()) if ":" in typed]
    pool += [f for f in cmd.accepted_flags() + ("--help",) if f not in given]
    return [_bash_word(typed, c) for c in pool if c.startswith(typed)]
