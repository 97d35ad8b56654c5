"""What every ``rediffuse`` command shares: the ``--device``/``--threads`` options, argument types,
and the error handling that turns exceptions into one line on stderr and an exit code.

Imports nothing heavy at module level, so building the parsers stays instant: like every command,
it loads the library (and torch) only when a command runs.
"""
from __future__ import annotations

import argparse
import contextlib
import re
import sys
import warnings
from typing import Iterable, Iterator, NoReturn


__all__ = [
    "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED", "DEVICE_CHOICES",
    "device_parent", "runtime_parent", "setup_runtime", "number_type", "nonneg_int", "pos_int", "seed_int",
    "pos_float", "nonneg_float", "probability", "run_command",
    "UsageError", "SEED_LIMIT", "one_line_warnings", "Parser", "as_usage_error", "flag_words",
]

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed: one line on stderr
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT

DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEVICE_HELP = ("where to run: auto = a GPU when PyTorch sees one, else the CPU; cuda without a GPU is an "
               "error (default: %(default)s)")
THREADS_HELP = ("PyTorch CPU threads; 0 = as many as there are idle cores when the command starts (all of "
                "them on an idle machine, fewer while other programs keep cores busy) (default: %(default)s)")

# Exceptions the library raises with a one-line, user-facing message.
EXPECTED_ERRORS = (ValueError, RuntimeError, FileNotFoundError, OSError)

#: Seeds are 64-bit signed integers to torch.Generator: 0 ≤ seed < 2**63.
SEED_LIMIT = 2**63


class UsageError(ValueError):
    """A command line that cannot work as given, found after parsing (e.g. an output file that is
    one of the inputs): reported like argparse's usage errors, one line and exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``<prog>: error: <message> (<prog> --help lists the options)``
    and exit code 2, instead of a usage block of 10 to 16 lines before the line that matters. The
    usage stays in ``--help``. Sub-command parsers inherit the class."""

    commands: dict[str, "Parser"]  # the top-level parser's sub-command parsers, by name (set by build_parser)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} ({self.prog} --help lists the options)\n")


def as_usage_error(e: ValueError, flags: Iterable[str]) -> UsageError:
    """A library's one-line ``ValueError`` about a setting ("tile must be ...") as the usage error of
    its option ("--tile must be ..."): the message names the flag the user typed, exit code 2."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    for key in flags:
        if msg.startswith(f"{key} "):
            msg = f"--{key.replace('_', '-')} {msg[len(key) + 1:]}"
            break
    return UsageError(msg)


# The library's messages name its parameters as ``name=value`` (``align=none``); a command's user knows
# them as options. These are the parameters whose option has the same name.
_PARAMETER = re.compile(r"\b(align|reference|max_pixels|checkpoint|device|precision|save_weights|symmetric|colour|"
                        r"steps|sampler|tile|overlap|seed|speed|depth_map|evidence_fill)=('[^']*'|[^\s,;)]+)")


def flag_words(msg: str) -> str:
    """A library message as the command line says it: ``align=none`` → ``--align none``,
    ``symmetric=False`` → ``--no-symmetric``, ``colour='paper'`` → ``--colour paper``."""
    def option(m: re.Match) -> str:
        name, value = m.group(1), m.group(2).strip("'")
        flag = name.replace("_", "-")
        if value in ("True", "False"):
            return f"--{flag}" if value == "True" else f"--no-{flag}"
        return f"--{flag} {value}"

    return _PARAMETER.sub(option, msg)


def number_type(convert, ok, wanted: str, name: str):
    """An argparse type: ``convert(text)`` (int or float) that must satisfy ``ok(value)``; the one-line
    errors say what was ``wanted``."""
    noun = "a whole number" if convert is int else "a number"

    def parse(value: str):
        try:
            x = convert(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {value!r}") from None
        if not ok(x):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return x

    parse.__name__ = name  # argparse names the type in its messages
    return parse


nonneg_int = number_type(int, lambda n: n >= 0, "a number ≥ 0", "nonneg_int")
pos_int = number_type(int, lambda n: n >= 1, "a number ≥ 1", "pos_int")
seed_int = number_type(int, lambda n: 0 <= n < SEED_LIMIT, "a whole number from 0 to 2**63 - 1", "seed_int")
pos_float = number_type(float, lambda x: 0 < x < float("inf"), "a positive number", "pos_float")
nonneg_float = number_type(float, lambda x: 0 <= x < float("inf"), "a number ≥ 0", "nonneg_float")
probability = number_type(float, lambda x: 0 <= x < 1, "a number from 0 to below 1", "probability")


def device_parent() -> argparse.ArgumentParser:
    """Parent parser with ``--device`` only (for commands that start no torch work of their own)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help=DEVICE_HELP)
    return p


def runtime_parent() -> argparse.ArgumentParser:
    """Parent parser with ``--device`` and ``--threads``; apply them with :func:`setup_runtime`."""
    p = argparse.ArgumentParser(add_help=False, parents=[device_parent()])
    p.add_argument("--threads", type=nonneg_int, metavar="N", default=0, help=THREADS_HELP)
    return p


def setup_runtime(args: argparse.Namespace) -> str:
    """Apply ``args.threads`` (when the command has it) and return the resolved device string."""
    from ..runtime import setup

    return setup(args.device, getattr(args, "threads", 0))


@contextlib.contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Show every warning raised inside as ``<prog>: warning: <message>`` on stderr, once: no file/line
    noise, and no repeats (a stack's files are read several times, and each read of a file with an
    alpha channel warns again), while warnings naming different files are all shown."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if str(message) not in seen:
            seen.add(str(message))
            print(f"{prog}: warning: {flag_words(str(message))}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def run_command(args: argparse.Namespace) -> int:
    """Run ``args.func``: one-line errors, exit code 2 for a ``UsageError`` and 1 for any other
    expected error (full traceback with ``--debug``)."""
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # a command may say what survives and how to go on (train: --resume)
        hint = getattr(args, "on_interrupt", None)
        say = hint(args) if hint else ""
        print(f"rediffuse {args.command}: interrupted" + (f"; {say}" if say else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except EXPECTED_ERRORS as e:
        if getattr(args, "debug", False):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"rediffuse {args.command}: error: {flag_words(msg)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, UsageError) else EXIT_FAILURE
