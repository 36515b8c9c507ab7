"""Core subcommands: init, generate, complete, chat."""


def register(subparsers) -> None:
    pass
