"""The `codegemma` command: thin subcommands, arguments -> config -> one call.

Each area registers its own subcommands (a `register(subparsers)` function in the modules
below), so this file stays a table of contents. Heavy imports (torch) happen inside the
command functions, so `codegemma --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from codegemma.atomic import DiskFullError

# Modules that contribute subcommands, in the order `--help` lists them.
COMMAND_MODULES = (
    "codegemma.commands",        # init, generate, complete, chat
    "codegemma.model.commands",  # init, export (model directories, GGUF)
    "codegemma.serve.commands",  # serve
    "codegemma.eval.commands",   # eval list|score|run
    "codegemma.data.commands",   # data prepare|stats|inspect, tokenizer train
    "codegemma.train.commands",  # train
)


class UserError(Exception):
    """An error the user can fix: printed as one line, exit status 2, no traceback."""


class _ShowDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it: `--help` shows
    what an option does when left out without each command spelling it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not text or "default" in text or action.option_strings == [] or default in (None, False, [], ())
                or default is argparse.SUPPRESS or isinstance(action, argparse._StoreConstAction)):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with defaults in --help, for the main parser and every subcommand."""

    def __init__(self, *args, formatter_class=argparse.HelpFormatter, **kwargs):
        # keep a subcommand's own formatter (raw epilogs) and add the defaults to it
        formatter = type(f"ShowDefaults{formatter_class.__name__}", (_ShowDefaults, formatter_class), {})
        super().__init__(*args, formatter_class=formatter, **kwargs)


def _version() -> str:
    from codegemma import __version__

    return f"codegemma {__version__} (Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="codegemma",
                    description="CodeGemma in Python: fill-in-the-middle code completion, a completion server "
                                "for editors, evaluation in a sandbox, data preparation and training.",
                    epilog="`codegemma COMMAND --help` shows a command's options and their defaults.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (UserError, ValueError, FileNotFoundError, FileExistsError, IsADirectoryError,
            NotADirectoryError, PermissionError, DiskFullError) as exc:
        # Errors a user can cause end in one line that names the problem and the fix.
        print(f"codegemma {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`codegemma generate ... | head`): stop quietly, as Unix tools do.
        # stdout now points nowhere, so the interpreter's final flush cannot fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


def _message(exc: BaseException) -> str:
    """An OSError as 'PATH: what went wrong' instead of Python's "[Errno 21] Is a directory: 'PATH'"."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None and not isinstance(exc, DiskFullError):
        name = os.fsdecode(exc.filename)
        return exc.strerror if name in exc.strerror else f"{name}: {exc.strerror}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
