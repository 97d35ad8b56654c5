"""``rediffuse tutorial``: run every tutorial notebook end to end."""
from __future__ import annotations

import argparse
import time

from .common import UsageError, device_parent, nonneg_int, setup_runtime

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``tutorial`` sub-command to an ``add_subparsers()`` object; returns its parser."""
    # --device only: the notebooks run in their own kernels, so a thread count set here would not reach them.
    p = subparsers.add_parser(
        "tutorial", help="run every tutorial notebook end to end",
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=[device_parent()],
        description="Execute the notebooks in notebooks/ with papermill, writing executed copies,\n"
                    "figures and results JSON to the output folder.",
        epilog="examples:\n  rediffuse tutorial                      # small CPU configuration\n"
               "  rediffuse tutorial --full --device cuda  # paper-size configuration on a GPU\n"
               "  rediffuse tutorial --only 01 02          # a subset, by number prefix\n"
               "  rediffuse tutorial --full --only 03 -p STEPS 20000 -p BATCH 16   # notebook parameters")
    p.add_argument("-o", "--output", default="outputs/tutorial", help="output folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the executed notebooks, results and figures an earlier run left in the output "
                        "folder (without it such a folder is refused, so nothing there is lost)")
    p.add_argument("--full", action="store_true", help="full configuration instead of the small default")
    p.add_argument("--only", nargs="*", metavar="NN", help="run only notebooks whose names start with these")
    p.add_argument("-j", "--jobs", type=nonneg_int, metavar="N", default=0,
                   help="small configuration: how many notebooks run side by side, each on one core "
                        "(0 = as many as there are idle cores; the full configuration runs them one by one, "
                        "as notebook 04 uses the model 03 trained) (default: %(default)s)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="set a notebook parameter (a Python literal, else a string) in every notebook whose "
                        "'parameters' cell has it; repeatable, e.g. -p STEPS 2 -p BATCH 2")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """The ``tutorial`` command: executed notebooks, figures and results JSON under ``args.output``."""
    from ..runtime import idle_cores
    from ..tutorial import check_output_dir, list_notebooks, parse_parameter, run_tutorial

    selected = [nb for nb in list_notebooks() if not args.only or any(nb.stem.startswith(o) for o in args.only)]
    try:  # before any notebook runs: a folder that would lose files is a usage error (exit code 2)
        check_output_dir(args.output, selected, args.overwrite)
    except (ValueError, FileExistsError) as e:
        raise UsageError(str(e)) from None
    device = setup_runtime(args)
    parameters = {name: parse_parameter(value) for name, value in args.parameter}
    jobs = args.jobs or idle_cores()
    t0 = time.perf_counter()
    results = run_tutorial(args.output, smoke=not args.full, device=device, only=args.only or None,
                           parameters=parameters, overwrite=args.overwrite, jobs=jobs)
    # each notebook's line was printed as it ended; one line for the whole run
    wall = time.perf_counter() - t0
    print(f"{len(results)} notebook{'s' if len(results) != 1 else ''} in {wall:.0f} s "
          f"({'one at a time' if jobs == 1 or args.full else f'up to {jobs} side by side'}) -> {args.output}/")
    return 0
