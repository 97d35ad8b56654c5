"""Command line: ``rediffuse <command> --help``."""
from __future__ import annotations

import argparse
import sys


def _tutorial(args: argparse.Namespace) -> int:
    from .tutorial import run_tutorial

    results = run_tutorial(args.output, smoke=not args.full, device=args.device, only=args.only or None)
    for stem, res in results.items():
        print(f"{stem}: {res.get('wall_s', float('nan')):.0f} s  -> {args.output}/{stem}.ipynb")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rediffuse",
        description="Rotation-equivariant diffusion for multi-focus image fusion.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "tutorial", help="run every tutorial notebook end to end",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Execute the notebooks in notebooks/ with papermill, writing executed copies,\n"
                    "figures and results JSON to the output folder.",
        epilog="examples:\n  rediffuse tutorial                      # small CPU configuration\n"
               "  rediffuse tutorial --full --device cuda  # paper-size configuration on a GPU\n"
               "  rediffuse tutorial --only 01 02          # a subset, by number prefix")
    p.add_argument("-o", "--output", default="outputs/tutorial", help="output folder (default: %(default)s)")
    p.add_argument("--full", action="store_true", help="full configuration instead of the small default")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: %(default)s")
    p.add_argument("--only", nargs="*", metavar="NN", help="run only notebooks whose names start with these")
    p.set_defaults(func=_tutorial)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("rediffuse: interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, FileNotFoundError, OSError) as e:
        if args.debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"rediffuse {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
