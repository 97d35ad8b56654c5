"""Command line: ``rediffuse <command> --help`` (also ``python -m rediffuse``).

One module per command (``fuse``, ``train``, ``evaluate``, ``tutorial``), each with
``add_parser(subparsers)`` and ``run(args)``; ``common`` holds what they share. Command modules
import only ``common``, and only this package module knows them all, so there are no cycles.
"""
from __future__ import annotations

import argparse

from . import evaluate, fuse, train, tutorial
from .common import EXIT_USAGE, run_command

__all__ = ["build_parser", "main"]

# Order of the commands in ``rediffuse --help``.
COMMANDS = (tutorial, train, evaluate, fuse)


def build_parser() -> argparse.ArgumentParser:
    """The ``rediffuse`` parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="rediffuse",
        description="Rotation-equivariant diffusion for multi-focus image fusion.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    return run_command(args)

