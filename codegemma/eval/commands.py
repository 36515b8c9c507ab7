"""Subcommands of this area (filled in by its owner)."""


def register(subparsers) -> None:  # noqa: D401 - placeholder until the area lands
    pass
