"""Command line: ``rediffuse <command> --help`` (also ``python -m rediffuse``).

One module per command (``fuse``, ``train``, ``evaluate``, ``tutorial``), each with
``add_parser(subparsers)`` and ``run(args)``; ``common`` holds what they share. Command modules
import only ``common``, and only this package module knows them all, so there are no cycles.
"""
from __future__ import annotations

import argparse

from . import evaluate, fuse, train, tutorial
from .common import EXIT_USAGE, Parser, run_command

__all__ = ["build_parser", "main"]

# Order of the commands in ``rediffuse --help``.
COMMANDS = (tutorial, train, evaluate, fuse)


def build_parser() -> argparse.ArgumentParser:
    """The ``rediffuse`` parser with every sub-command registered."""
    parser = Parser(
        prog="rediffuse",
        description="Rotation-equivariant diffusion for multi-focus image fusion.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = {p.prog.split()[-1]: p for p in (command.add_parser(sub) for command in COMMANDS)}
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the command; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the command's parser, so the line names the command whose options they are not
        parser.commands.get(getattr(args, "command", None), parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    return run_command(args)

