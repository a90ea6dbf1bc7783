"""smctl's command line: key=value tokens checked against a command's spec.

A command declares its required and optional keys, its ``map:key=value``
families and whether it is a list (field filters, ``params=``,
``--minimal``); ``parse_args`` turns the tokens into ``Args`` or raises
``UsageError`` (exit status 2). Sizes and booleans are parsed here too.
"""

import re
from typing import TYPE_CHECKING, Callable, Optional, TextIO

from smlib.toolstack.record import field, record

if TYPE_CHECKING:
    from smlib.toolstack.ops import Toolstack


class UsageError(Exception):
    pass


# Sizes ------------------------------------------------------------------

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
}


BLOCK = 2 * 1024 * 1024  # a VHD block: every disk size rounds up to whole blocks


def parse_size(text: str) -> int:
    """Bytes, or a number with a unit: 64MiB, 1.5GiB, 1G (binary), 500MB (decimal).

    A fraction must come to whole bytes (1.5KiB does, 1.3b does not).
    """
    from fractions import Fraction

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*", text, re.ASCII)
    if not match or match.group(2).lower() not in _UNITS:
        raise UsageError(f"not a size: {text!r} (bytes, or a number with a unit:"
                         " KiB/MiB/GiB/TiB or K/M/G/T binary, KB/MB/GB/TB decimal)")
    value = Fraction(match.group(1)) * _UNITS[match.group(2).lower()]
    if value.denominator != 1:
        raise UsageError(f"not a size: {text!r} is not a whole number of bytes")
    return int(value)


def size_text(size: int) -> str:
    """2097152 -> '2 MiB', 1610612736 -> '1.5 GiB' (whole or half units), else bytes."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % (scale // 2) == 0:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"


def rounding_note(requested: int, size: int) -> Optional[str]:
    """What to tell the user when a disk came out bigger than asked, else None."""
    if size == requested:
        return None
    return (f"the size {requested} bytes was rounded up to {size_text(size)}"
            f" (whole {size_text(BLOCK)} VHD blocks)")


def parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("true", "yes", "1"):
        return True
    if low in ("false", "no", "0"):
        return False
    raise UsageError(f"not a boolean: {text!r} (true or false)")


# Command lines ----------------------------------------------------------


PROGRESS_FLAGS = ("--progress", "--quiet")


@record
class Args:
    values: "dict[str, str]" = field(default_factory=dict)
    maps: "dict[str, dict[str, str]]" = field(default_factory=dict)
    json: bool = False
    minimal: bool = False
    progress: str = "auto"  # --progress: "always"; --quiet: "never"; else on a terminal

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        return self.values.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.values[key]

    def map(self, name: str) -> "dict[str, str]":
        return self.maps.get(name, {})

    def flag(self, key: str) -> bool:
        """A boolean parameter such as force= (absent: false)."""
        return parse_bool(self.values.get(key, "false"))


@record
class Command:
    name: str
    summary: str
    run: Callable[["Toolstack", Args, TextIO], None]
    required: "tuple[str, ...]" = ()
    optional: "tuple[str, ...]" = ()
    maps: "tuple[str, ...]" = ()
    filters: bool = False  # list commands accept field=value filters
    changes: bool = True  # False for read-only commands, which skip the operation lock
    flags: "tuple[str, ...]" = ()  # beyond --json: --minimal, --progress, --quiet

    def accepted_flags(self) -> "tuple[str, ...]":
        return ("--json",) + (("--minimal",) if self.filters else ()) + self.flags

    def usage(self) -> str:
        parts = [f"{k}=<{k}>" for k in self.required]
        parts += [f"[{k}=<{k}>]" for k in self.optional]
        parts += [f"[{m}:<key>=<value>]" for m in self.maps]
        if self.filters:
            parts.append("[<field>=<value> ...] [params=<field>,...|all]")
        parts.append(" ".join(f"[{f}]" for f in self.accepted_flags()))
        return f"usage: smctl {self.name} {' '.join(parts)}"


def parse_args(cmd: Command, tokens: "list[str]") -> Args:
    args = Args()
    flags = cmd.accepted_flags()
    seen: list[str] = []
    for token in tokens:
        if token.startswith("--"):
            if token not in flags:
                raise UsageError(f"unknown flag {token!r} (this command takes"
                                 f" {', '.join(flags)})")
            seen.append(token)
            continue
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {token!r}")
        if ":" in key:
            map_name, _, map_key = key.partition(":")
            if map_name not in cmd.maps or not map_key:
                raise UsageError(f"unknown parameter {key!r}")
            args.maps.setdefault(map_name, {})[map_key] = value
            continue
        if key not in cmd.required + cmd.optional and not cmd.filters:
            raise UsageError(f"unknown parameter {key!r}")
        args.values[key] = value
    # Two flags asking for different things: a mistake, not a choice to guess.
    for pair in (("--json", "--minimal"), PROGRESS_FLAGS):
        if all(f in seen for f in pair):
            raise UsageError(f"{pair[0]} and {pair[1]} cannot be used together")
    args.json = "--json" in seen
    args.minimal = "--minimal" in seen
    args.progress = "always" if "--progress" in seen else (
        "never" if "--quiet" in seen else "auto")
    missing = [k for k in cmd.required if k not in args.values]
    if missing:
        raise UsageError(f"missing parameter {', '.join(missing)}")
    return args
