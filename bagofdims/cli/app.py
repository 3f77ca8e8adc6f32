"""One dispatcher for the ``bagofdims`` and ``bows`` commands.

A command line is a table ``{name: (ConfigDataclass, function, help)}`` (an optional fourth item
is a preset instance of the config, e.g. ``bows full``). tyro turns each config into a
subcommand: fields are flags, field docstrings their help, booleans ``--flag/--no-flag``.
``function(config)`` runs it, so the same config object drives the Python API.

Errors: a :class:`~bagofdims.errors.BagOfDimsError` is one line on stderr
(``PROG CMD: error: MESSAGE``, exit 2); a failed write (disk full, permission denied, read-only)
is one line naming the path and the fix; Ctrl-C is one line, exit 130. ``--debug`` (or
``BAGOFDIMS_DEBUG=1``) re-raises them with the traceback. Anything else is a bug and keeps its
traceback. Bad flags get tyro's usage message, exit 2. Under several processes (``accelerate
launch``) a process stopped by another's failure stays quiet unless it is the main one: a failure
is told by the process it happened on and by the main process.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import sys
from typing import Annotated, Any, Union

import tyro

from bagofdims.errors import BagOfDimsError
from bagofdims.parallel import is_main_process, quiet_unless_main

Table = dict[str, tuple]  # name -> (config class, function(config), help[, preset config])

DEBUG_ENV = "BAGOFDIMS_DEBUG"

# errno of a failed write -> (what happened, what to do about it)
_WRITE_FIXES = {
    errno.ENOSPC: ("cannot write {}: no space left on the device", "free space or choose another --out"),
    errno.EDQUOT: ("cannot write {}: disk quota exceeded", "free space or choose another --out"),
    errno.EROFS: ("cannot write {}: read-only file system", "choose another --out"),
    errno.EACCES: ("permission denied on {}", "choose a writable --out or fix the permissions"),
    errno.EPERM: ("operation not permitted on {}", "choose a writable --out or fix the permissions"),
}
_TEXT_ERRNO = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT}


def parser_type(commands: Table) -> type:
    """The dataclass tyro parses: one subcommand per table entry, plus the global ``--debug``."""
    options = []
    for name, entry in commands.items():
        config, _, help_text = entry[:3]
        preset = entry[3] if len(entry) > 3 else None
        marker = (tyro.conf.subcommand(name, description=help_text) if preset is None else
                  tyro.conf.subcommand(name, description=help_text, default=preset))
        options.append(Annotated[config, marker])
    command = Annotated[Union[tuple(options)], tyro.conf.arg(name="command")]
    debug = Annotated[bool, tyro.conf.arg(help=f"show the traceback of an error (also: {DEBUG_ENV}=1)")]
    return dataclasses.make_dataclass(
        "Arguments", [("command", command), ("debug", debug, dataclasses.field(default=False))])


def parse(commands: Table, argv: list[str], prog: str, description: str | None = None):
    """``(command name, config, debug)`` from ``argv``; tyro exits 2 with its usage on bad flags."""
    args = tyro.cli(parser_type(commands), args=argv, prog=prog, description=description,
                    config=(tyro.conf.OmitSubcommandPrefixes, tyro.conf.CascadeSubcommandArgs))
    # The global options are flags without values, so the first other word is the subcommand
    # (two commands may share a config class, e.g. bows small / full).
    name = next(a for a in argv if not a.startswith("-"))
    return name, args.command, args.debug


def run(commands: Table, argv: list[str] | None = None, prog: str = "bagofdims",
        description: str | None = None, loggers: tuple[str, ...] = ("bagofdims",)) -> int:
    """Parse ``argv``, run the chosen command, and turn the errors users can fix into one line.

    ``loggers``: packages whose INFO messages are shown (others only from WARNING up).
    """
    argv = [os.fspath(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        return _run(commands, argv, prog, description, loggers)
    except BrokenPipeError:  # the reader stopped early (`bagofdims --help | head`): not an error
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        except (OSError, ValueError):
            pass
        return 1


def _run(commands: Table, argv: list[str], prog: str, description: str | None,
         loggers: tuple[str, ...]) -> int:
    name, config, debug = parse(commands, argv, prog, description)
    debug = debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for package in loggers:
        logging.getLogger(package).setLevel(logging.INFO)
    function = commands[name][1]
    where = f"{prog} {name}"
    quiet_unless_main()
    try:
        function(config)
    except BagOfDimsError as err:
        if debug:
            raise
        if getattr(err, "relayed", False) and not is_main_process():
            return 2  # another process failed and says why; the main process repeats it
        return _fail(where, str(err))
    except KeyboardInterrupt:
        if debug:
            raise
        if is_main_process():
            print(f"{where}: interrupted (capture, activations and training resume when rerun)",
                  file=sys.stderr)
        return 130
    except Exception as err:  # a failed write (often wrapped by a library), else a bug
        message = None if debug else write_error(err, getattr(config, "out", None))
        if message is None:
            raise
        return _fail(where, message)
    return 0


def write_error(err: BaseException, out: Any = None) -> str | None:
    """One line for a failed write (disk full, permission denied, read-only), else None.

    Looks through the chain of causes, since libraries often wrap the OSError, and at the text
    of errors that carry no errno (safetensors reports a full disk as "No space left on device").
    """
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        code = e.errno if isinstance(e, OSError) else _TEXT_ERRNO.get(
            next((t for t in _TEXT_ERRNO if t in str(e)), ""))
        if code in _WRITE_FIXES:
            what, fix = _WRITE_FIXES[code]
            path = getattr(e, "filename", None) or out or "the output directory"
            return f"{what.format(path)}; {fix}."
        e = e.__cause__ or e.__context__
    return None


def _fail(where: str, message: str) -> int:
    print(f"{where}: error: {' '.join(message.splitlines())}", file=sys.stderr)
    return 2

