"""Operations subcommands of the `sluice` CLI: `ui`, `serve` and friends."""

from __future__ import annotations

import argparse

from sluice.home import Home


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the operations subcommands on the main parser."""


def handle(args: argparse.Namespace, home: Home) -> int | None:
    """Run an operations subcommand; None when `args.command` is not one of them."""
    return None
