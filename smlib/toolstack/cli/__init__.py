"""smctl: an xe-style command line over the toolstack.

    smctl sr-create type=file device-config:location=/srv/sr name-label=local
    smctl vdi-create sr-uuid=... name-label=disk virtual-size=64MiB
    smctl vdi-revert snapshot-uuid=...

Exit status: 0 done, 1 the operation failed (stderr names the error, with
the SR code and name for a driver error), 2 the command line is wrong.
The database is $SMCTL_DB (default ~/.local/share/smctl/state.db); the
drivers are found in $SMCTL_DRIVER_DIR (default: the checkout's drivers/,
else /opt/xensource/sm).
"""

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
    lines += ["", "smctl <command> --help shows a command's parameters."]
    return "\n".join(lines)


def report_error(exc: Exception, err: TextIO) -> None:
    """xe's shape: the error code, then its parameters."""
    if not isinstance(exc, ToolstackError):
        err.write(f"Error: {exc}\n")
        return
    err.write(f"Error code: {exc.xapi_name}\n")
    detail = exc.description if isinstance(exc, DriverFault) else str(exc)
    if exc.code is not None:
        err.write(f"Error parameters: {exc.code}, {exc.name}, {detail}\n")
    else:
        err.write(f"Error parameters: {detail}\n")


def main(argv: "Optional[list[str]]" = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out, err = sys.stdout, sys.stderr
    if not argv or argv[0] in ("help", "--help", "-h"):
        if len(argv) > 1 and argv[1] in COMMANDS:
            out.write(_command_help(COMMANDS[argv[1]]) + "\n")
            return EXIT_OK
        (out if argv else err).write(general_help() + "\n")
        return EXIT_OK if argv else EXIT_USAGE
    cmd = COMMANDS.get(argv[0])
    if cmd is None:
        err.write(f"smctl: unknown command {argv[0]!r}; `smctl help` lists them\n")
        return EXIT_USAGE
    if "--help" in argv[1:] or "-h" in argv[1:]:
        out.write(_command_help(cmd) + "\n")
        return EXIT_OK
    try:
        args = parse_args(cmd, argv[1:])
        db = Database()
    except UsageError as exc:
        err.write(f"smctl {cmd.name}: {exc}\n{cmd.usage()}\n")
        return EXIT_USAGE
    except (SchemaError, OSError, sqlite3.Error) as exc:
        err.write(f"smctl: cannot open the database: {exc}\n")
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
        err.write(f"smctl {cmd.name}: {exc}\n{cmd.usage()}\n")
        return EXIT_USAGE
    except ToolstackError as exc:
        report_error(exc, err)
        return EXIT_FAILED
    except OSError as exc:  # a local file: the image to import, the export target
        err.write(f"smctl {cmd.name}: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.write(f"smctl {cmd.name}: interrupted\n")
        return 130  # the shell's code for death by SIGINT
    finally:
        db.close()
    return EXIT_OK


def _command_help(cmd: Command) -> str:
    return f"{cmd.usage()}\n\n{cmd.summary}"
