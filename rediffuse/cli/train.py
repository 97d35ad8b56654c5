"""``rediffuse train``: train a fusion U-Net (checkpoints, resume, multi-GPU via torchrun)."""
from __future__ import annotations

import argparse

from .common import runtime_parent, setup_runtime

__all__ = ["add_parser", "run"]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help, and the examples kept one per line (plain defaults reflow them)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command to an ``add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser(
        "train", help="train a fusion U-Net (checkpoints, resume, multi-GPU via torchrun)",
        formatter_class=_HelpFormatter, parents=[runtime_parent()],
        description="Train on folders with A/, B/, GT/ sub-folders and/or synthetic pairs made from\n"
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
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """The ``train`` command; under torchrun (WORLD_SIZE > 1) one process per GPU."""
    import os

    import torch

    from ..train import TrainConfig, train

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = setup_runtime(args)
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
