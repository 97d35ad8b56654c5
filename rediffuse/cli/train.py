"""``rediffuse train``: train a fusion U-Net (presets, checkpoints, resume, multi-GPU via torchrun)."""
from __future__ import annotations

import argparse
import re
import sys

from .common import (EXIT_USAGE, as_usage_error, nonneg_float, nonneg_int, pos_float, pos_int, probability,
                     runtime_parent, seed_int, setup_runtime)

__all__ = ["add_parser", "run"]

SUPPRESS = argparse.SUPPRESS


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help, and the examples kept one per line (plain defaults reflow them)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command to an ``add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser(
        "train", help="train a fusion U-Net (presets, checkpoints, resume, multi-GPU via torchrun)",
        formatter_class=_HelpFormatter, parents=[runtime_parent()],
        description="Train on folders with A/, B/, GT/ sub-folders and/or pairs made from photos.\n"
                    "A preset sets the model and optimisation (default: small); flags override it.\n"
                    "Prints the parameter count and a memory estimate, then writes OUT/last.pt,\n"
                    "OUT/config.json, OUT/loss.csv and OUT/summary.json. Defaults below are the\n"
                    "small preset's.",
        epilog="examples:\n  rediffuse train --data ../shared/data/NYU-D-100 --synthetic 2000 -o runs/rot\n"
               "  rediffuse train -o runs/rot --resume     # continue after an interruption\n"
               "  rediffuse train -o runs/rot --resume --steps 4000   # train a finished run further\n"
               "  rediffuse train --preset paper --dry-run  # parameters and memory of the paper's model\n"
               "  rediffuse train --preset paper --layered 20000 --device cuda --workers 8 -o runs/paper\n"
               "  torchrun --nproc_per_node 4 -m rediffuse.cli train --device cuda --data DIR -o runs/gpu")
    p.add_argument("-o", "--out", help="run folder (required unless --dry-run)")
    p.add_argument("--preset", choices=["small", "layered", "paper"], default=SUPPRESS,
                   help="starting configuration: small (CPU default: base 16, weight map), layered (5-level "
                        "weight-map model on layered pairs from photos), paper (the paper's ε model: official "
                        "layout, base 64, batch 32 of 256², loss ×128); other flags override its values")
    run_g = p.add_mutually_exclusive_group()
    run_g.add_argument("--resume", action="store_true",
                       help="continue OUT/last.pt with its stored configuration (flags may only extend --steps "
                            "or change how it runs: precision, workers, checkpointing)")
    run_g.add_argument("--overwrite", action="store_true", help="discard the run already in OUT and start again")
    p.add_argument("--dry-run", action="store_true", help="print parameters, memory and FLOPs estimates, then exit")

    _data_options(p)
    _optimisation_options(p)
    _model_options(p)
    _runtime_options(p)
    p.set_defaults(func=run, on_interrupt=_interrupted)
    return p


def _data_options(p: argparse.ArgumentParser) -> None:
    """The options that choose the training data."""
    d = p.add_argument_group("data (a preset's data is replaced when any of --data/--synthetic/--layered is given)")
    d.add_argument("--data", nargs="*", default=SUPPRESS, metavar="DIR", help="dataset folders (A/, B/, GT/)")
    d.add_argument("--exclude", nargs="*", default=SUPPRESS, metavar="STEM", help="file stems to hold out")
    d.add_argument("--synthetic", type=nonneg_int, default=SUPPRESS, metavar="N", help="synthetic pairs to mix in")
    d.add_argument("--layered", type=nonneg_int, default=SUPPRESS, metavar="N",
                   help="pairs per epoch made from all-in-focus photos with the layered defocus model")
    d.add_argument("--stack-frames", type=nonneg_int, default=SUPPRESS, metavar="N",
                   help="--layered items become stacks of 2 to N frames, each item one frame against the mean "
                        "of the others, as 'rediffuse fuse' weighs stacks (default: 0, pairs)")
    d.add_argument("--stack-reference", choices=("mean", "best"), default=SUPPRESS,
                   help="with --stack-frames: each frame against the mean of the others (default) or the best "
                        "of them (their mean weighted by sharpness); 'rediffuse fuse' uses the model as trained")
    d.add_argument("--photos", default=SUPPRESS, metavar="DIR",
                   help="photo folder for --layered (default: <shared>/data/photos)")
    d.add_argument("--rgb", action="store_true", default=SUPPRESS,
                   help="fuse RGB in and out (FusionDiff-style backbone) instead of luminance Y")


def _optimisation_options(p: argparse.ArgumentParser) -> None:
    """The options of the optimisation: steps, batch, learning rate, loss, diffusion."""
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=pos_int, default=SUPPRESS, help="training steps (default: 1000)")
    o.add_argument("--batch", type=pos_int, default=SUPPRESS,
                   help="global batch, split across processes (default: 16)")
    o.add_argument("--crop", type=pos_int, default=SUPPRESS, help="training crop side (default: 64)")
    o.add_argument("--lr", type=pos_float, default=SUPPRESS, help="AdamW learning rate (default: 0.0002)")
    o.add_argument("--prediction", choices=["eps", "x0", "weights"], default=SUPPRESS,
                   help="what the network predicts: noise (the paper), the image, or a weight map (default: weights)")
    o.add_argument("--loss-scale", type=pos_float, default=SUPPRESS,
                   help="the official code multiplies the ε-MSE by 128 (default: 1)")
    o.add_argument("--loss", choices=["mse", "l1_grad"], default=SUPPRESS,
                   help="training loss; l1_grad = L1 + gradient L1 on the fused image (x0/weights models) "
                        "(default: mse)")
    o.add_argument("--lr-schedule", choices=["step", "cosine"], default=SUPPRESS,
                   help="step: ×0.99 every 1000 steps; cosine: from --lr down to 0 at the last step, for "
                        "annealing a run or a fine-tune (default: step)")
    o.add_argument("--warmup", type=nonneg_int, default=SUPPRESS, metavar="STEPS",
                   help="linear learning-rate warm-up (default: 0)")
    o.add_argument("--init", default=SUPPRESS, metavar="CKPT",
                   help="start from the (EMA) weights of this checkpoint or shipped model name, with a fresh "
                        "optimiser: a fine-tune (the model flags must describe its network)")
    o.add_argument("--band-weight", type=nonneg_float, default=SUPPRESS, metavar="W",
                   help="--layered data: weigh the loss of pixels within 15 px of a focus boundary 1 + W "
                        "times (default: 0)")
    o.add_argument("--T", type=pos_int, default=SUPPRESS, help="diffusion steps (default: 2000)")
    o.add_argument("--seed", type=seed_int, default=SUPPRESS, help="0 to 2**63 - 1 (default: 0)")


def _model_options(p: argparse.ArgumentParser) -> None:
    """The options that describe the network."""
    m = p.add_argument_group("model")
    m.add_argument("--conv", choices=["bconv", "fconv", "gconv", "plain"], default=SUPPRESS, help="(default: bconv)")
    m.add_argument("--layout", choices=["unet", "fusiondiff"], default=SUPPRESS,
                   help="U-Net layout: concatenated skips, or the official FusionDiff/ReDiffuse one (default: unet)")
    m.add_argument("--base", type=pos_int, default=SUPPRESS, help="base width in channels (paper: 64) (default: 16)")
    m.add_argument("--mults", type=pos_int, nargs="+", default=SUPPRESS,
                   help="width multipliers (paper: 1 2 4 8) (default: 1 2 4)")
    m.add_argument("--groups", type=pos_int, default=SUPPRESS, help="GroupNorm groups (paper: 16) (default: 4)")
    m.add_argument("--dropout", type=probability, default=SUPPRESS, help="(default: 0.1)")
    m.add_argument("--attention", type=nonneg_int, default=SUPPRESS, metavar="HEADS",
                   help="global self-attention heads at the bottleneck (0: none, as the paper) (default: 0)")


def _runtime_options(p: argparse.ArgumentParser) -> None:
    """The options of how a run executes (they may change when it is resumed)."""
    r = p.add_argument_group("how it runs (may change when resuming)")
    r.add_argument("--precision", choices=["auto", "fp32", "tf32", "bf16", "fp16"], default=SUPPRESS,
                   help="fp32; tf32 (TF32 matmuls/convs, Ampere+); bf16 autocast; fp16 autocast with loss "
                        "scaling; auto = bf16 on a GPU that supports it, else fp32 (default: auto)")
    r.add_argument("--grad-checkpoint", action="store_true", default=SUPPRESS,
                   help="recompute each ResBlock in the backward pass: about half the activation memory, "
                        "about 1.5x the step time")
    r.add_argument("--workers", type=nonneg_int, default=SUPPRESS, metavar="N",
                   help="DataLoader processes building batches ahead of the GPU (default: 0)")
    r.add_argument("--ckpt-every", type=pos_int, default=SUPPRESS, metavar="STEPS",
                   help="write OUT/last.pt every this many steps (default: 250)")


def _interrupted(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves of a run and how to go on with it (``run_command`` prints it)."""
    if not args.out or args.dry_run:
        return ""
    from pathlib import Path

    last = Path(args.out) / "last.pt"
    if not last.is_file():
        return "no checkpoint was written yet: start the run again with the same command"
    return (f"{last} holds the last checkpoint: continue with rediffuse train -o {args.out} --resume "
            "(the steps since it are run again, exactly as before)")


# TrainConfig.validate names these settings in its errors; they are the options of the same names
_SETTINGS = ("steps", "batch", "crop", "lr", "warmup", "band_weight", "precision", "lr_schedule", "synthetic",
             "layered", "stack_frames", "stack_reference", "workers", "seed", "ckpt_every", "T", "base", "groups")
# The library's messages name parameters ("resume=True", "steps=3"); this command's user typed flags.
_AS_FLAGS = ((re.compile(r"(?<![-\w])(resume|overwrite)=True\b"), r"--\1"),
             (re.compile(r"(?<![-\w])(steps|lr|precision|synthetic|layered|photos)=\"?([^\s\";,)]*)\"?"), r"--\1 \2"),
             (re.compile(r"(?<![-\w])lower lr\b"), "lower --lr"))


def _explicit(args: argparse.Namespace) -> dict:
    """The configuration values given on the command line (TrainConfig field names; model keys nested)."""
    names = {"data": "data", "exclude": "exclude", "synthetic": "synthetic", "layered": "layered",
             "stack_frames": "stack_frames", "stack_reference": "stack_reference", "photos": "photos", "steps": "steps", "batch": "batch", "crop": "crop", "lr": "lr",
             "prediction": "prediction", "loss_scale": "loss_scale", "loss": "loss", "T": "T", "seed": "seed",
             "lr_schedule": "lr_schedule", "warmup": "warmup", "init": "init", "band_weight": "band_weight",
             "precision": "precision", "grad_checkpoint": "grad_checkpoint", "workers": "workers",
             "ckpt_every": "ckpt_every"}
    out = {field: getattr(args, attr) for attr, field in names.items() if hasattr(args, attr)}
    if hasattr(args, "rgb"):
        out["channels"] = 3
    model = {k: getattr(args, k) for k in ("conv", "layout", "base", "groups", "dropout", "attention")
             if hasattr(args, k)}
    if hasattr(args, "mults"):
        model["mults"] = tuple(args.mults)
    if model:
        out["model"] = model
    return out


def _as_flags(e: Exception) -> Exception:
    """``e`` with the parameters its message names said as the flags that set them (``e`` itself when
    it names none)."""
    msg = new = str(e)
    for pattern, flag in _AS_FLAGS:
        new = pattern.sub(flag, new)
    if new == msg:
        return e
    try:
        return type(e)(new)
    except Exception:  # an exception type that takes other arguments: keep it as it is
        return e


def _print_estimates(cfg, world: int, flops: bool) -> None:
    """Parameter counts and the memory estimate (and, for a dry run, FLOPs) of ``cfg``, before training."""
    from ..resources import format_bytes, memory_estimate, parameter_counts, training_flops
    from ..train import model_kwargs

    kw = model_kwargs(cfg)
    counts = parameter_counts(kw)
    conv = kw.get("conv", "bconv")
    line = f"parameters: {counts['model']:,} ({'plain' if conv == 'plain' else conv + ', exactly equivariant'})"
    if conv != "plain":
        line += f"; plain twin of equal width: {counts['plain']:,}"
    if "per_channel_time_bias" in counts:
        line += f"; with the official per-channel time bias: {counts['per_channel_time_bias']:,}"
    print(line)
    per_process = cfg.batch // world
    est = memory_estimate(kw, per_process, cfg.crop, grad_checkpoint=cfg.grad_checkpoint)
    print(f"estimated peak memory per process (fp32, batch {per_process} × {cfg.crop}²"
          f"{', gradient checkpointing' if cfg.grad_checkpoint else ''}): {format_bytes(est.peak)} "
          f"(activations {format_bytes(est.activations)}, weights/gradients/AdamW/EMA {format_bytes(est.state)}); "
          "bf16/fp16 autocast needs about 0.5-0.75x the activation memory")
    if flops:
        f = training_flops(kw, per_process, cfg.crop)
        print(f"arithmetic per step and process: {f / 1e12:.3g} TFLOP (forward + backward)")


def _config(args: argparse.Namespace):
    """The run's configuration: the stored one with the flags applied (``--resume``), else the preset's
    with the flags; a new run into a folder that holds one is refused unless ``--overwrite``."""
    from ..train import check_run_folder, new_run_config, resume_config

    if args.resume:
        cfg = resume_config(args.out, _explicit(args), getattr(args, "preset", None))
    else:
        cfg = new_run_config(getattr(args, "preset", "small"), _explicit(args))
        if args.out and not args.dry_run:
            check_run_folder(args.out, resume=False, overwrite=args.overwrite)
    try:
        cfg.validate()
    except ValueError as e:  # a value no run can use: the option's usage error, exit code 2
        raise as_usage_error(e, _SETTINGS) from None
    return cfg


def _train(args: argparse.Namespace) -> int:
    """The ``train`` command in the library's terms (its errors name parameters)."""
    from pathlib import Path

    from ..train import launched_world_size, process_group, train

    cfg = _config(args)
    _print_estimates(cfg, launched_world_size(), flops=args.dry_run)
    if args.dry_run:
        return 0
    with process_group(setup_runtime(args)) as device:  # under torchrun, one process per GPU
        summary = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, device=device)
    out = Path(args.out)
    if summary.get("already_finished"):
        print(f"{out} is already finished: step {summary['final_step']} of {cfg.steps}; "
              "give a larger --steps with --resume to train it further")
        return 0
    print(f"{summary['final_step']} steps ({summary['steps_run']} now), {summary['steps_per_s']:.2f} steps/s, "
          f"{100 * summary['data_wait_fraction']:.0f} % of the time waiting for data -> {out / 'last.pt'}")
    return 0


def run(args: argparse.Namespace) -> int:
    """The ``train`` command; under torchrun (WORLD_SIZE > 1) one process per GPU. The library's errors
    reach the user with the flags that set what they name."""
    if not args.out and (args.resume or not args.dry_run):
        print("rediffuse train: error: -o/--out is required (except with --dry-run of a new run)", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _train(args)
    except (ValueError, RuntimeError, OSError) as e:
        worded = _as_flags(e)
        if worded is e:
            raise
        raise worded from e
