"""smctl: an xe-style command line over the toolstack.

    smctl sr-create type=file device-config:location=/srv/sr name-label=local
    smctl vdi-create sr-uuid=... name-label=disk virtual-size=64MiB
    smctl vdi-revert snapshot-uuid=...

Exit status: 0 done, 1 the operation failed (stderr names the error, with
the SR code and name for a driver error), 2 the command line is wrong.
The database is $SMCTL_DB (default ~/.local/share/smctl/state.db); the
drivers are found in $SMLIB_DRIVER_DIR (default: the checkout's drivers/,
else a host's /opt/xensource/sm, else those shipped in the package).
Every failure is reported in xe's shape, ``Error code:`` then ``Error
parameters:``, on stderr.
"""

import errno
import sqlite3
import sys
from typing import Optional, TextIO

from smlib.toolstack.cli.args import Command, UsageError, parse_args
from smlib.toolstack.cli.commands import COMMANDS
from smlib.toolstack.db import Database, SchemaError
from smlib.toolstack.ops import Toolstack
from smlib.toolstack.recovery import recover_pending
from smlib.toolstack.runner import DriverFault, ToolstackError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def general_help() -> str:
    lines = ["usage: smctl <command> [key=value ...] [--json]", "", "commands:"]
    width = max(len(n) for n in COMMANDS)
    lines += [f"  {name.ljust(width)}  {cmd.summary}" for name, cmd in sorted(COMMANDS.items())]
    lines += ["", "smctl help <command> (or smctl <command> --help) shows a command's"
              " parameters, their defaults and an example.",
              "smctl --version; smctl completion bash (source <(smctl completion bash))."]
    return "\n".join(lines)


def version() -> str:
    from smlib import __version__

    return f"smctl {__version__}"


def _error(err: TextIO, code: str, *params: object) -> None:
    err.write(f"Error code: {code}\n")
    err.write(f"Error parameters: {', '.join(str(p) for p in params)}\n")


def report_error(exc: Exception, err: TextIO) -> None:
    """xe's shape: the error code, then its parameters."""
    if isinstance(exc, ToolstackError):
        detail = exc.description if isinstance(exc, DriverFault) else str(exc)
        if exc.code is not None:
            _error(err, exc.xapi_name, exc.code, exc.name, detail)
        else:
            _error(err, exc.xapi_name, detail)
    elif isinstance(exc, OSError):
        # A local file (an image, an export target): its name and what is wrong.
        code = {errno.ENOENT: "FILE_NOT_FOUND", errno.EACCES: "PERMISSION_DENIED",
                errno.EPERM: "PERMISSION_DENIED", errno.ENOSPC: "NO_SPACE_LEFT"}.get(
                    exc.errno or 0, "FILE_IO_ERROR")
        where = [exc.filename] if exc.filename else []
        _error(err, code, *where, exc.strerror or str(exc))
    else:
        _error(err, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")


def _usage(err: TextIO, cmd: Optional[Command], message: str) -> int:
    name = f"smctl {cmd.name}" if cmd else "smctl"
    err.write(f"{name}: {message}\n" + (f"{cmd.usage()}\n" if cmd else ""))
    return EXIT_USAGE


def _special(argv: "list[str]", out: TextIO, err: TextIO) -> Optional[int]:
    """help, --version, completion: the commands that need no database."""
    from smlib.toolstack.cli.completion import BASH_SCRIPT, candidates

    first = argv[0] if argv else None
    if first in (None, "help", "--help", "-h"):
        rest = argv[1:]
        if rest and rest[0] in COMMANDS:
            out.write(command_help(COMMANDS[rest[0]]) + "\n")
            return EXIT_OK
        if rest:
            return _usage(err, None, f"unknown command {rest[0]!r}; `smctl help` lists them")
        (out if argv else err).write(general_help() + "\n")
        return EXIT_OK if argv else EXIT_USAGE
    if first == "--version":
        out.write(version() + "\n")
        return EXIT_OK
    if first == "completion":
        if argv[1:] != ["bash"]:
            return _usage(err, None, "usage: smctl completion bash")
        out.write(BASH_SCRIPT)
        return EXIT_OK
    if first == "__complete":  # what the bash function runs on each <TAB>
        line = argv[1] if len(argv) > 1 else ""
        out.write("".join(c + "\n" for c in candidates(line, COMMANDS)))
        return EXIT_OK
    return None


def main(argv: "Optional[list[str]]" = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out, err = sys.stdout, sys.stderr
    special = _special(argv, out, err)
    if special is not None:
        return special
    cmd = COMMANDS.get(argv[0])
    if cmd is None:
        return _usage(err, None, f"unknown command {argv[0]!r}; `smctl help` lists them")
    if "--help" in argv[1:] or "-h" in argv[1:]:
        out.write(command_help(cmd) + "\n")
        return EXIT_OK
    try:
        args = parse_args(cmd, argv[1:])
    except UsageError as exc:
        return _usage(err, cmd, str(exc))
    try:
        db = Database()
    except (SchemaError, OSError, sqlite3.Error) as exc:
        _error(err, "DATABASE_ERROR", f"cannot open the database: {exc}")
        return EXIT_FAILED
    try:
        if cmd.changes:
            with db.operation_lock():
                ts = Toolstack(db)
                for note in recover_pending(ts):
                    err.write(f"smctl: {note}\n")
                cmd.run(ts, args, out)
        else:
            cmd.run(Toolstack(db), args, out)
    except UsageError as exc:
        return _usage(err, cmd, str(exc))
    except (ToolstackError, OSError) as exc:
        report_error(exc, err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error(err, "INTERRUPTED", f"smctl {cmd.name} was interrupted (Ctrl-C)")
        return 130  # the shell's code for death by SIGINT
    finally:
        db.close()
    return EXIT_OK


def command_help(cmd: Command) -> str:
    """usage, summary, each parameter with its meaning and default, an example."""
    from smlib.toolstack.cli.docs import DOCS, FLAG_DOCS

    lines = [cmd.usage(), "", cmd.summary]
    doc = DOCS.get(cmd.name)
    if doc is not None:
        width = max(len(p) for p in list(doc.params) + list(cmd.accepted_flags()))
        if doc.params:
            lines += ["", "parameters:"]
        for name, (meaning, default) in doc.params.items():
            tail = "required" if name in cmd.required else (
                f"default: {default}" if default is not None else "optional")
            lines.append(f"  {name.ljust(width)}  {meaning} [{tail}]")
        lines += ["", "flags:"]
        lines += [f"  {f.ljust(width)}  {FLAG_DOCS[f]}" for f in cmd.accepted_flags()]
        lines += ["", "example:", f"  {doc.example}"]
    return "\n".join(lines)
