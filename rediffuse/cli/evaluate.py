"""``rediffuse evaluate``: fuse a dataset with some methods and score them."""
from __future__ import annotations

import argparse

from .common import UsageError, one_line_warnings, pos_int, runtime_parent, seed_int, setup_runtime

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command to an ``add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser(
        "evaluate", help="fuse a dataset with some methods and score them (six no-reference metrics)",
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=[runtime_parent()],
        description="Fuse every pair of DATASET (a folder with A/, B/ and optional GT/) with each method,\n"
                    "score QMI, QG, Qabf, QP, QE, MS-SSIM, SGF (and PSNR/SSIM against GT/), and write fused\n"
                    "images, per_image.csv and summary.md to the output folder.\n\n"
                    "Each row of per_image.csv is written as soon as it is scored, so an interrupted run\n"
                    "keeps its scores and --resume computes only the missing ones. A pair that cannot be\n"
                    "read is skipped with a warning and named in summary.md. An output folder that already\n"
                    "holds per_image.csv needs --resume (continue) or --overwrite (start again).",
        epilog="examples:\n  rediffuse evaluate ../shared/data/Lytro -m gff average -o outputs/eval --leaderboard\n"
               "  rediffuse evaluate ../shared/data/NYU-D-100 -m weights "
               "--steps 3 -o outputs/nyu\n"
               "  rediffuse evaluate ../shared/data/NYU-D-100 -m weights -o outputs/nyu --resume   "
               "# after an interruption\n\n"
               "exit status: 0 on success, 1 on an error (one line on stderr), 2 on a usage error.")
    p.add_argument("dataset", help="folder with A/, B/ (and GT/) of matching file names")
    p.add_argument("-m", "--method", nargs="+", required=True,
                   help="baseline names (average, laplacian, focus-select, gff), shipped models (weights, "
                        "weights-small, weights-plain, paper) and/or checkpoint files (*.pt)")
    p.add_argument("-o", "--output", default="outputs/evaluate", help="output folder (default: %(default)s)")
    p.add_argument("--sampler", default=None, help="sampler for checkpoints (default: the model's own)")
    p.add_argument("--steps", type=pos_int, default=None, metavar="K",
                   help="sampling steps for checkpoints, ≥ 1 (default: the model's own)")
    p.add_argument("--seed", type=seed_int, default=0, metavar="S",
                   help="seed of the initial noise for checkpoints, 0 to 2**63 - 1 (default: %(default)s)")
    p.add_argument("--limit", type=pos_int, default=None, metavar="N", help="only the first N images (N ≥ 1)")
    p.add_argument("--stems", nargs="*", metavar="STEM", help="only these file stems (e.g. held-out pairs)")
    p.add_argument("--leaderboard", action="store_true", help="merge with the published Lytro results")
    p.add_argument("--no-images", action="store_true", help="do not write the fused images")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue an interrupted run: keep the rows in OUT/per_image.csv, score the rest")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the scores an earlier run left in OUT/per_image.csv")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """The ``evaluate`` command: fused images, per_image.csv, summary.md (and leaderboard.md)."""
    with one_line_warnings("rediffuse evaluate"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..evaluate import evaluate_folder, leaderboard, make_method, markdown_table, mean_table

    previous = Path(args.output) / "per_image.csv"
    if previous.exists() and not (args.resume or args.overwrite):
        raise UsageError(f"{args.output} already holds the scores of an earlier run ({previous}); add --resume "
                         "to continue it, --overwrite to replace it, or choose another folder with -o")
    device = setup_runtime(args)
    methods = [make_method(m, sampler=args.sampler, steps=args.steps, seed=args.seed, device=device)
               for m in args.method]
    rows = evaluate_folder(args.dataset, methods, args.output, stems=args.stems or None, limit=args.limit,
                           save_images=not args.no_images, resume=args.resume)
    table = mean_table(rows)
    print(markdown_table(table, title=f"{Path(args.dataset).name}: means over {len({r['image'] for r in rows})} images"))
    if args.leaderboard:
        board = leaderboard(table, images=sorted({r["image"] for r in rows}))
        text = markdown_table(board, title="Leaderboard (published: Liu et al. 2020 toolbox values)")
        (Path(args.output) / "leaderboard.md").write_text(text)
        print(text)
    for stem, reason in rows.skipped:
        print(f"skipped {stem}: {reason}")
    print(f"-> {args.output}/per_image.csv, {args.output}/summary.md")
    return 0
