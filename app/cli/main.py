"""The ``outpost`` command: the window with no arguments, or headless subcommands.

Exit codes (also in ``outpost --help``):
  0 success · 1 unexpected error · 2 bad usage or unknown id · 3 model file problem ·
  4 engine failed while answering · 5 storage problem · 130 stopped (Ctrl+C / SIGTERM / SIGHUP)
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from app.cli.commands.ask import cmd_ask, cmd_regenerate
from app.cli.commands.backup import cmd_backup
from app.cli.commands.common import emit
from app.cli.commands.gui import cmd_gui
from app.cli.commands.history import cmd_history
from app.cli.commands.models import cmd_models
from app.cli.commands.metering import cmd_quota, cmd_usage
from app.cli.commands.outbox import cmd_offline, cmd_outbox
from app.cli.commands.presets import cmd_preset
from app.cli.commands.profiles import cmd_profile
from app.cli.commands.providers import cmd_keys, cmd_providers
from app.cli.commands.transfer import cmd_export, cmd_import
from app.cli.parser import BadArguments, build_parser
from app.domain.errors import Cancelled, OutpostError, UsageError


def _innermost(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The parser of the (sub)command ``args`` were given to: ``outpost history search``'s."""
    while True:
        chosen = [action.choices[getattr(args, action.dest)] for action in parser._actions
                  if isinstance(action, argparse._SubParsersAction)
                  and getattr(args, action.dest, None) in action.choices]
        if not chosen:
            return parser
        parser = chosen[0]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments; an unknown option is reported with the usage of the command it was
    given to (argparse's own parse_args reports it with the top level's)."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        given = list(sys.argv[1:] if argv is None else argv)
        command = given.index(args.command) if args.command in given else len(given)
        # an option before the command's name is the top level's (`outpost --json ask hi`)
        blamed = parser if any(e in given[:command] for e in extras) else \
            _innermost(parser, args)
        blamed.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _bad_arguments(bad: BadArguments, argv: Sequence[str] | None) -> int:
    """argparse's report (the command's usage, then the error) on stderr; with --json, ask and
    regenerate also print the error event, as for any other error of theirs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:  # after it, "--json" is a prompt
        argv = argv[:argv.index("--")]
    bad.parser.print_usage(sys.stderr)
    sys.stderr.write(f"{bad.parser.prog}: error: {bad.message}\n")
    if "--json" in argv and bad.parser.prog.split()[1:2] in (["ask"], ["regenerate"]):
        emit({"event": "error", "kind": UsageError.kind, "message": bad.message})
    return 2


def _dispatch(args: argparse.Namespace) -> int:
    commands = {"ask": cmd_ask, "regenerate": cmd_regenerate, "history": cmd_history,
                "models": cmd_models,
                "providers": cmd_providers,
                "keys": cmd_keys, "outbox": cmd_outbox, "offline": cmd_offline,
                "usage": cmd_usage, "quota": cmd_quota, "profile": cmd_profile,
                "preset": cmd_preset, "export": cmd_export, "import": cmd_import,
                "backup": cmd_backup}
    if args.command is None:
        return cmd_gui()
    if args.command not in commands:
        raise UsageError(f"Unknown command {args.command!r}.")
    return commands[args.command](args)


class _OneLineWarnings(logging.Formatter):
    """A warning the core logs (a ledger row that could not be written, …) as one line on
    stderr, its exception in words: a command prints sentences, never a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        return f"outpost: warning: {record.getMessage()}" + (f" ({exc})" if exc else "")


def _log_warnings_as_sentences() -> None:
    """Without a handler, Python's last-resort one prints a logged exception's traceback."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLineWarnings())
        root.addHandler(handler)
        root.setLevel(logging.WARNING)


# the arguments that are file names or paths: any bytes the file system allows
_PATH_ARGUMENTS = frozenset({"file", "output", "model", "lora", "json_schema"})
_POSITIONAL = frozenset({"prompt", "query", "message", "id", "ids", "name", "new_name", "key",
                         "value", "url", "switch"})


def _check_text_arguments(args: argparse.Namespace) -> None:
    """Text that is stored or sent must be UTF-8; Python hands undecodable argv bytes over
    as lone surrogates, which fail much later with a traceback."""
    for name, value in vars(args).items():
        if name in _PATH_ARGUMENTS:
            continue
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and not _is_utf8(text):
                flag = {"as_profile": "--as"}.get(name, name) if name in _POSITIONAL or \
                    name == "as_profile" else "--" + name.replace("_", "-")
                raise UsageError(f"The {flag} argument is not valid UTF-8 text; give it in "
                                 "UTF-8.")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    _log_warnings_as_sentences()
    try:
        args = _parse(argv)
    except BadArguments as bad:
        return _bad_arguments(bad, argv)
    try:
        _check_text_arguments(args)
        code = _dispatch(args)
        sys.stdout.flush()  # a reader that left shows up here, not at interpreter exit
        return code
    except OutpostError as exc:
        sys.stderr.write(f"outpost: {exc}\n")
        if getattr(args, "json", False) and args.command in ("ask", "regenerate") and \
                not isinstance(exc, Cancelled):  # a stop ends with finished(cancelled)
            try:
                emit({"event": "error", "kind": exc.kind, "message": str(exc)})
                sys.stdout.flush()
            except BrokenPipeError:  # the reader left before the error event: as below
                return _reader_left()
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("outpost: stopped.\n")
        return 130
    except UnicodeEncodeError as exc:
        if exc.reason != "surrogates not allowed":
            raise
        # undecodable bytes from the environment or a file name, met where text must be UTF-8
        sys.stderr.write("outpost: some text given to outpost (an argument, an environment "
                         "variable or a file name) is not valid UTF-8.\n")
        return 2
    except BrokenPipeError:  # `outpost usage | head`: the reader left; not a bug
        return _reader_left()


def _reader_left() -> int:
    """Exit 141 (as a shell reports SIGPIPE) once the reader of stdout went away; what is
    still buffered for it goes nowhere instead of failing again at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


if __name__ == "__main__":
    sys.exit(main())
