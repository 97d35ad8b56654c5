"""Training: AdamW + step decay, EMA, gradient clipping, AMP on CUDA, atomic checkpoints, resume, DDP.

Reproducibility is by construction: every random draw of step ``s`` (which items, their crops and
augmentation, the timesteps and noise, dropout) comes from generators seeded by ``(seed, s)``. Resuming
from a checkpoint therefore replays exactly the loss sequence of an uninterrupted run, and ``k``
DistributedDataParallel processes see the same global batch as one process (each takes a slice).

Run on several GPUs with ``torchrun --nproc_per_node N -m rediffuse.cli train ...``.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import ConcatDataset
from tqdm.auto import tqdm

from .checkpoint import export_checkpoint, load_checkpoint, load_model, save_checkpoint
from .data import FusionFolder, SyntheticPairs
from .diffusion import get_schedule, training_loss
from .synthesis import LayeredPairs, library_for
from .unet import ReDiffuseUNet, count_parameters

__all__ = ["TrainConfig", "train", "train_model", "build_model", "build_dataset",
           # checkpoints live in rediffuse.checkpoint; re-exported for existing callers
           "save_checkpoint", "load_checkpoint", "load_model", "export_checkpoint"]


@dataclass
class TrainConfig:
    """Everything a run needs; stored in every checkpoint."""

    data: list[str] = field(default_factory=list)  # folders with A/, B/, GT/
    exclude: list[str] = field(default_factory=list)  # stems held out (e.g. NYU 091–100)
    synthetic: int = 0  # synthetic pairs (skimage photos) mixed in
    layered: int = 0  # pairs per epoch drawn with the layered defocus model from the photos in `photos`
    photos: str = ""  # folder tree of all-in-focus photos ("" = <shared>/data/photos)
    crop: int = 64
    batch: int = 16
    steps: int = 1000
    lr: float = 2e-4
    lr_decay: float = 0.99  # multiply the learning rate by this ...
    lr_decay_every: int = 1000  # ... every this many steps
    weight_decay: float = 1e-2
    ema: float = 0.999
    grad_clip: float = 1.0
    prediction: str = "x0"  # "eps" (the paper) or "x0"
    channels: int = 1  # 1: fuse luminance Y (ReDiffuse); 3: RGB in and out (FusionDiff-style)
    loss_scale: float = 1.0  # the official code multiplies the ε-MSE by 128
    loss: str = "mse"  # "mse" or "l1_grad" (L1 + gradient L1 on the fused image; x0-space losses only)
    schedule: str = "cosine"
    T: int = 2000
    model: dict = field(default_factory=lambda: dict(base=16, mults=(1, 2, 4), conv="bconv", groups=4))
    seed: int = 0
    amp: bool = True  # bfloat16 autocast, CUDA only
    ckpt_every: int = 250
    log_every: int = 10


# ---------------------------------------------------------------- data

def build_dataset(cfg: TrainConfig):
    """Training pool: the folders in ``cfg.data`` (random crops + rot90/flip) plus synthetic pairs."""
    if cfg.channels not in (1, 3):
        raise ValueError(f"channels must be 1 (luminance) or 3 (RGB), got {cfg.channels}")
    y_only = cfg.channels == 1
    parts = [FusionFolder(d, crop=cfg.crop, augment=True, exclude=cfg.exclude or None, require_gt=True,
                          seed=cfg.seed, cache=True, y_only=y_only) for d in cfg.data]
    if cfg.synthetic:
        parts.append(SyntheticPairs(cfg.synthetic, size=cfg.crop, seed=cfg.seed, y_only=y_only))
    if cfg.layered:
        library = library_for(cfg.photos or None, "train", y_only)
        parts.append(LayeredPairs(library, n=cfg.layered, size=cfg.crop, seed=cfg.seed))
    if not parts:
        raise ValueError("no training data: give --data FOLDER (with A/, B/, GT/), --synthetic N and/or --layered N")
    return ConcatDataset(parts)


def _step_batch(dataset, cfg: TrainConfig, step: int, rank: int, world: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step`` (a pure function of seed and step); this rank's slice of it."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    idx = torch.randint(0, len(dataset), (cfg.batch,), generator=g).tolist()
    for part in getattr(dataset, "datasets", [dataset]):
        if hasattr(part, "set_epoch"):
            part.set_epoch(step)  # fresh crops each step, still deterministic
    mine = idx[rank::world]
    items = [dataset[i] for i in mine]
    gt = torch.stack([it["GT"] for it in items]).to(device)
    cond = torch.cat([torch.stack([it["A"] for it in items]), torch.stack([it["B"] for it in items])], 1).to(device)
    return gt, cond


# ---------------------------------------------------------------- loop

def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _lr_at(cfg: TrainConfig, step: int) -> float:
    return cfg.lr * cfg.lr_decay ** (step // max(cfg.lr_decay_every, 1))


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1 - decay)


def build_model(cfg: TrainConfig) -> ReDiffuseUNet:
    """The U-Net a configuration describes, initialised from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    return ReDiffuseUNet(in_channels=3 * cfg.channels, out_channels=cfg.channels, **cfg.model)


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, device: str = "cpu",
          stop_after: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the U-Net and data ``cfg`` describes in ``out_dir``: ``last.pt`` checkpoints,
    ``loss.csv``, ``summary.json``. See :func:`train_model` for the arguments."""
    return train_model(build_model(cfg), build_dataset(cfg), cfg, out_dir, resume=resume, device=device,
                       stop_after=stop_after, progress=progress)


def train_model(model: nn.Module, dataset, cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False,
                device: str = "cpu", stop_after: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train any network ``model(x_t, t, cond)`` on ``dataset`` (items with ``"A"``, ``"B"``, ``"GT"``)
    with the optimiser, schedule and loss of ``cfg``; checkpoints store ``model.config`` when the
    model has one (so ``load_model`` can rebuild it).

    ``stop_after`` ends the call after that many steps of this invocation (used to test resuming).
    Returns a summary with the losses of the steps run in this call.
    """
    out_dir = Path(out_dir)
    rank, world = _dist_info()
    if cfg.batch % world:
        raise ValueError(f"batch {cfg.batch} is not divisible by {world} processes")
    dev = torch.device(device)
    model = model.to(dev)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    ckpt_path = out_dir / "last.pt"
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        ck = load_checkpoint(ckpt_path, map_location=dev)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        start = ck["step"]
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    schedule = get_schedule(cfg.schedule, cfg.T).to(dev)
    amp = cfg.amp and dev.type == "cuda"

    log_path = out_dir / "loss.csv"
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume or not log_path.exists():
            log_path.write_text("step,loss,lr,seconds\n")
        else:  # drop rows past the checkpoint: they will be recomputed identically
            rows = log_path.read_text().splitlines()
            kept = [rows[0]] + [r for r in rows[1:] if int(r.split(",")[0]) <= start]
            log_path.write_text("\n".join(kept) + "\n")

    def checkpoint(step: int) -> None:
        if rank == 0:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                "step": step, "config": _jsonable(asdict(cfg)), "model_config": _jsonable(getattr(model, "config", {})),
                "rng": torch.get_rng_state(),
            })

    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, disable=not progress or rank != 0,
               desc="train", unit="step")
    with open(log_path, "a", newline="") if rank == 0 else open(os.devnull, "w") as logf:
        writer = csv.writer(logf)
        for step in bar:
            model.train()
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, step)
            x0, cond = _step_batch(dataset, cfg, step, rank, world, dev)
            g = torch.Generator(device="cpu").manual_seed(cfg.seed * 7_919 + step)
            t_all = torch.randint(0, cfg.T, (cfg.batch,), generator=g)
            n_all = torch.randn((cfg.batch, *x0.shape[1:]), generator=g)
            t, noise = t_all[rank::world].to(dev), n_all[rank::world].to(dev)
            torch.manual_seed(cfg.seed * 104_729 + step * world + rank)  # dropout
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                loss = training_loss(net, x0, cond, schedule, prediction=cfg.prediction,
                                     loss_scale=cfg.loss_scale, t=t, noise=noise, loss=cfg.loss)
            if not torch.isfinite(loss):
                raise RuntimeError(f"loss became {loss.item()} at step {step}; lower --lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            _ema_update(ema, model, min(cfg.ema, (1 + step) / (10 + step)))
            value = loss.detach()
            if world > 1:
                dist.all_reduce(value)
                value /= world
            losses.append(value.item())
            if rank == 0:
                writer.writerow([step + 1, f"{losses[-1]:.6g}", f"{_lr_at(cfg, step):.3g}",
                                 f"{time.perf_counter() - t0:.1f}"])
                if (step + 1) % cfg.log_every == 0:
                    logf.flush()
                    bar.set_postfix(loss=f"{sum(losses[-cfg.log_every:]) / len(losses[-cfg.log_every:]):.4f}")
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == end:
                checkpoint(step + 1)
    elapsed = time.perf_counter() - t0
    summary = {"steps_run": len(losses), "final_step": end, "losses": losses, "wall_s": elapsed,
               "steps_per_s": len(losses) / elapsed if elapsed else math.nan,
               "parameters": count_parameters(model), "device": str(dev), "world_size": world}
    if rank == 0:
        (out_dir / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=2))
    return summary


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return list(obj)
    return obj
