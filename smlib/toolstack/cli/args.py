"""smctl's command line: key=value tokens checked against a command's spec.

A command declares its required and optional keys, its ``map:key=value``
families and whether it is a list (field filters, ``params=``,
``--minimal``); ``parse_args`` turns the tokens into ``Args`` or raises
``UsageError`` (exit status 2). Sizes and booleans are parsed here too.
"""

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, TextIO

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


def parse_size(text: str) -> int:
    """Bytes, or a number with a unit: 64MiB, 1G (binary), 500MB (decimal)."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise UsageError(f"not a size: {text!r} (bytes, or a number with KiB/MiB/GiB/TiB)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("true", "yes", "1"):
        return True
    if low in ("false", "no", "0"):
        return False
    raise UsageError(f"not a boolean: {text!r} (true or false)")


# Command lines ----------------------------------------------------------


@dataclass
class Args:
    values: "dict[str, str]" = field(default_factory=dict)
    maps: "dict[str, dict[str, str]]" = field(default_factory=dict)
    json: bool = False
    minimal: bool = False

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        return self.values.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.values[key]

    def map(self, name: str) -> "dict[str, str]":
        return self.maps.get(name, {})


@dataclass
class Command:
    name: str
    summary: str
    run: Callable[["Toolstack", Args, TextIO], None]
    required: "tuple[str, ...]" = ()
    optional: "tuple[str, ...]" = ()
    maps: "tuple[str, ...]" = ()
    filters: bool = False  # list commands accept field=value filters
    changes: bool = True  # False for read-only commands, which skip the operation lock

    def usage(self) -> str:
        parts = [f"{k}=<{k}>" for k in self.required]
        parts += [f"[{k}=<{k}>]" for k in self.optional]
        parts += [f"[{m}:<key>=<value>]" for m in self.maps]
        if self.filters:
            parts.append("[<field>=<value> ...] [params=<field>,...|all] [--minimal]")
        return f"usage: smctl {self.name} {' '.join(parts)} [--json]".rstrip()


def parse_args(cmd: Command, tokens: "list[str]") -> Args:
    args = Args()
    for token in tokens:
        if token == "--json":
            args.json = True
            continue
        if token == "--minimal" and cmd.filters:
            args.minimal = True
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
    missing = [k for k in cmd.required if k not in args.values]
    if missing:
        raise UsageError(f"missing parameter {', '.join(missing)}")
    return args
