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


def _train(args: argparse.Namespace) -> int:
    import os

    import torch

    from .train import TrainConfig, train
    from .tutorial import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(args.device)
    if distributed:  # launched by torchrun
        rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo")
        if device == "cuda":
            torch.cuda.set_device(rank)
            device = f"cuda:{rank}"
    cfg = TrainConfig(
        data=args.data, exclude=args.exclude, synthetic=args.synthetic, layered=args.layered,
        photos=args.photos or "", crop=args.crop, batch=args.batch,
        steps=args.steps, lr=args.lr, prediction=args.prediction, T=args.T, seed=args.seed,
        ckpt_every=args.ckpt_every, loss_scale=args.loss_scale, loss=args.loss, channels=3 if args.rgb else 1,
        model=dict(base=args.base, mults=tuple(args.mults), conv=args.conv, groups=args.groups,
                   dropout=args.dropout, **({"layout": args.layout} if args.layout != "unet" else {}),
                   **({"attention": args.attention} if args.attention else {})),
    )
    try:
        summary = train(cfg, args.out, resume=args.resume, device=device)
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    print(f"{summary['final_step']} steps, {summary['steps_per_s']:.2f} steps/s -> {args.out}/last.pt")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .evaluate import evaluate_folder, leaderboard, make_method, markdown_table, mean_table
    from .tutorial import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    methods = [make_method(m, sampler=args.sampler, steps=args.steps, device=device) for m in args.method]
    rows = evaluate_folder(args.dataset, methods, args.output, stems=args.stems or None, limit=args.limit,
                           save_images=not args.no_images)
    table = mean_table(rows)
    print(markdown_table(table, title=f"{Path(args.dataset).name}: means over {len({r['image'] for r in rows})} images"))
    if args.leaderboard:
        board = leaderboard(table, images=sorted({r["image"] for r in rows}))
        text = markdown_table(board, title="Leaderboard (published: Liu et al. 2020 toolbox values)")
        (Path(args.output) / "leaderboard.md").write_text(text)
        print(text)
    print(f"-> {args.output}/per_image.csv, {args.output}/summary.md")
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

    p = sub.add_parser(
        "train", help="train a fusion U-Net (checkpoints, resume, multi-GPU via torchrun)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train on folders with A/, B/, GT/ sub-folders and/or synthetic pairs made from "
                    "photos that scikit-image ships. Writes OUT/last.pt, OUT/loss.csv, OUT/summary.json.",
        epilog="examples:\n  rediffuse train --data ../shared/data/NYU-D-100 --synthetic 2000 -o runs/rot\n"
               "  rediffuse train -o runs/rot --resume     # continue after an interruption\n"
               "  torchrun --nproc_per_node 4 -m rediffuse.cli train --device cuda --data DIR -o runs/gpu")
    p.add_argument("-o", "--out", required=True, help="run folder")
    p.add_argument("--data", nargs="*", default=[], metavar="DIR", help="dataset folders (A/, B/, GT/)")
    p.add_argument("--exclude", nargs="*", default=[], metavar="STEM", help="file stems to hold out")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="synthetic pairs to mix in")
    p.add_argument("--layered", type=int, default=0, metavar="N",
                   help="pairs per epoch made from all-in-focus photos with the layered defocus model")
    p.add_argument("--photos", default=None, metavar="DIR",
                   help="photo folder for --layered (default: <shared>/data/photos)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=16, help="global batch (split across processes)")
    p.add_argument("--crop", type=int, default=64, help="training crop side")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--prediction", default="weights", choices=["eps", "x0", "weights"],
                   help="what the network predicts: noise (the paper), the image, or a weight map")
    p.add_argument("--loss-scale", type=float, default=1.0, help="the official code uses 128 with eps")
    p.add_argument("--loss", default="mse", choices=["mse", "l1_grad"],
                   help="training loss; l1_grad = L1 + gradient L1 on the fused image (x0/weights models)")
    p.add_argument("--T", type=int, default=2000, help="diffusion steps")
    p.add_argument("--rgb", action="store_true",
                   help="fuse RGB in and out (FusionDiff-style backbone) instead of luminance Y")
    p.add_argument("--conv", default="bconv", choices=["bconv", "fconv", "gconv", "plain"])
    p.add_argument("--layout", default="unet", choices=["unet", "fusiondiff"],
                   help="U-Net layout: concatenated skips, or the official FusionDiff/ReDiffuse one")
    p.add_argument("--base", type=int, default=16, help="base width in channels (paper: 64)")
    p.add_argument("--mults", type=int, nargs="+", default=[1, 2, 4], help="width multipliers (paper: 1 2 4 8)")
    p.add_argument("--groups", type=int, default=4, help="GroupNorm groups (paper: 16)")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--attention", type=int, default=0, metavar="HEADS",
                   help="global self-attention heads at the bottleneck (0: none, as the paper)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "evaluate", help="fuse a dataset with some methods and score them (six no-reference metrics)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fuse every pair of DATASET (a folder with A/, B/ and optional GT/) with each method,\n"
                    "score QMI, QG, Qabf, QP, QE, MS-SSIM (and PSNR/SSIM against GT/), and write fused\n"
                    "images, per_image.csv and summary.md to the output folder.",
        epilog="examples:\n  rediffuse evaluate ../shared/data/Lytro -m gff average -o outputs/eval --leaderboard\n"
               "  rediffuse evaluate ../shared/data/NYU-D-100 -m checkpoints/rediffuse-weights-bconv.pt "
               "--steps 3 -o outputs/nyu")
    p.add_argument("dataset", help="folder with A/, B/ (and GT/) of matching file names")
    p.add_argument("-m", "--method", nargs="+", required=True,
                   help="baseline names (average, laplacian, focus-select, gff), shipped models (weights, "
                        "weights-plain, paper) and/or checkpoint files (*.pt)")
    p.add_argument("-o", "--output", default="outputs/evaluate", help="output folder (default: %(default)s)")
    p.add_argument("--sampler", default=None, help="sampler for checkpoints (default: the model's own)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps for checkpoints")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--stems", nargs="*", metavar="STEM", help="only these file stems (e.g. held-out pairs)")
    p.add_argument("--leaderboard", action="store_true", help="merge with the published Lytro results")
    p.add_argument("--no-images", action="store_true", help="do not write the fused images")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: %(default)s")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.set_defaults(func=_evaluate)

    from .fuse_cli import add_fuse_parser
    add_fuse_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Run ``args.func``: one-line errors and exit code 1 (full traceback with ``--debug``)."""
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
