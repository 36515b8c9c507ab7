"""The `codegemma` command: thin subcommands, arguments -> config -> one call.

Each area registers its own subcommands (a `register(subparsers)` function in the modules
below), so this file stays a table of contents. Heavy imports (torch) happen inside the
command functions, so `codegemma --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codegemma", description=__doc__.splitlines()[0])
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
        print(f"codegemma {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
