"""Training: presets, AdamW + step decay or cosine annealing, EMA, gradient clipping, mixed precision,
gradient checkpointing, DataLoader workers, atomic checkpoints, exact resume, DDP; fine-tunes from a
checkpoint's weights (``init``) and a loss that stresses the pixels near focus boundaries
(``band_weight``, layered pairs).

Reproducibility is by construction: every random draw of step ``s`` (which items, their crops and
augmentation, the timesteps and noise, dropout) comes from generators seeded by ``(seed, s)``, so the
batch of step ``s`` is a pure function of the seed and ``s`` whichever DataLoader worker builds it.
Resuming from a checkpoint therefore replays exactly the loss sequence of an uninterrupted run, and
``k`` DistributedDataParallel processes see the same global batch as one process (each takes a slice).

A run folder holds ``last.pt`` (weights, EMA weights, optimiser, step and the full configuration),
``config.json`` (the same configuration, for people), ``loss.csv`` and ``summary.json``. Resuming
compares the configuration asked for with the stored one and refuses a different run's settings;
starting a new run where one already is needs ``overwrite=True``.

The training loop never waits for the GPU inside a step: losses stay on the device and are copied
(and checked for NaN) every ``log_every`` steps and at every checkpoint.

Run on several GPUs with ``torchrun --nproc_per_node N -m rediffuse.cli train ...``.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import inspect
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm.auto import tqdm

from .checkpoint import export_checkpoint, load_checkpoint, load_model, save_checkpoint
from .data import FusionFolder, SyntheticPairs
from .diffusion import get_schedule, training_loss
from .fuse import resolve_checkpoint
from .runtime import tf32_precision
from .synthesis import LayeredPairs, library_for
from .unet import ReDiffuseUNet, count_parameters, set_grad_checkpoint

__all__ = ["TrainConfig", "PRESETS", "RUNTIME_KEYS", "PRECISIONS", "preset_config", "config_differences", "LR_SCHEDULES",
           "resolve_precision", "StepBatches", "train", "train_model", "build_model", "build_dataset",
           "read_run_config", "read_losses", "run_exists",
           # checkpoints live in rediffuse.checkpoint; re-exported for existing callers
           "save_checkpoint", "load_checkpoint", "load_model", "export_checkpoint"]

PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
LR_SCHEDULES = ("step", "cosine")

@dataclass
class TrainConfig:
    """Everything a run needs; stored in every checkpoint and in the run's ``config.json``.

    The fields in ``RUNTIME_KEYS`` only change how a run executes (its length, precision, memory
    use, workers, logging); every other field defines the run and must match when it is resumed.
    """

    data: list[str] = field(default_factory=list)  # folders with A/, B/, GT/
    exclude: list[str] = field(default_factory=list)  # stems held out (e.g. NYU 091–100)
    synthetic: int = 0  # synthetic pairs (skimage photos) mixed in
    layered: int = 0  # pairs per epoch drawn with the layered defocus model from the photos in `photos`
    photos: str = ""  # folder tree of all-in-focus photos ("" = <shared>/data/photos)
    crop: int = 64
    augment: bool = True  # random rot90 + flip of the folder crops (synthetic/layered pairs are drawn turned anyway)
    batch: int = 16
    steps: int = 1000
    lr: float = 2e-4
    lr_decay: float = 0.99  # lr_schedule "step": multiply the learning rate by this ...
    lr_decay_every: int = 1000  # ... every this many steps
    lr_schedule: str = "step"  # "step" (above) or "cosine" (lr → 0 over `steps`: anneals a run to its end)
    warmup: int = 0  # steps of linear warm-up from 0 to lr (a fresh optimiser on pretrained weights needs some)
    init: str = ""  # checkpoint (path or shipped name) whose EMA weights start the run ("" = random, from seed)
    band_weight: float = 0.0  # layered data: loss weight of pixels within 15 px of a focus boundary is 1 + this
    weight_decay: float = 1e-2
    ema: float = 0.999
    grad_clip: float = 1.0
    prediction: str = "x0"  # "eps" (the paper), "x0" or "weights" (a per-pixel weight map over the sources)
    channels: int = 1  # 1: fuse luminance Y (ReDiffuse); 3: RGB in and out (FusionDiff-style)
    loss_scale: float = 1.0  # the official code multiplies the ε-MSE by 128
    loss: str = "mse"  # "mse" or "l1_grad" (L1 + gradient L1 on the fused image; x0-space losses only)
    schedule: str = "cosine"
    T: int = 2000
    model: dict = field(default_factory=lambda: dict(base=16, mults=(1, 2, 4), conv="bconv", groups=4))
    seed: int = 0
    # "fp32", "tf32" (TF32 matmuls/convs on Ampere+), "bf16" (autocast), "fp16" (autocast + loss
    # scaling); "auto": bf16 on a GPU that has it, else fp32
    precision: str = "auto"
    grad_checkpoint: bool = False  # recompute ResBlocks in the backward pass: half the activations, ~1.5x the time
    workers: int = 0  # DataLoader processes building the next batches while the model trains
    ckpt_every: int = 250
    log_every: int = 10

    def validate(self) -> "TrainConfig":
        """Raise ``ValueError`` (one line, naming the setting) for values no run can use; returns self."""
        positive = {"steps": self.steps, "batch": self.batch, "crop": self.crop, "ckpt_every": self.ckpt_every,
                    "log_every": self.log_every, "T": self.T, "lr_decay_every": self.lr_decay_every}
        for key, v in positive.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{key} must be a whole number ≥ 1, got {v!r}")
        for key in ("synthetic", "layered", "workers", "seed"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{key} must be a whole number ≥ 0, got {v!r}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be a whole number ≥ 0, got {self.warmup!r}")
        if not (self.band_weight >= 0 and math.isfinite(self.band_weight)):
            raise ValueError(f"band_weight must be a number ≥ 0, got {self.band_weight!r}")
        if self.band_weight and (self.data or self.synthetic or not self.layered):
            raise ValueError("band_weight needs the layered pairs alone (--layered N, no --data/--synthetic): "
                             "only they know where the focus boundaries are")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.crop < 8:  # the pair generators cut nothing smaller
            raise ValueError(f"crop must be at least 8 pixels, got {self.crop}")
        self._validate_model()
        return self

    def _validate_model(self) -> None:
        """The U-Net's own checks, said in terms of the settings (``base``, ``groups``) before it is
        built, instead of the network's ("GroupNorm groups do not divide a level of 1 fields")."""
        kw = _model_kwargs(self)
        base, groups, m = kw["base"], kw["groups"], kw["m"]
        if isinstance(base, bool) or not isinstance(base, int) or base < 1:
            raise ValueError(f"base must be a whole number ≥ 1, got {base!r}")
        if base % m:
            raise ValueError(f"base must be a multiple of {m} (feature fields × {m} orientations), got {base}")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be a whole number ≥ 1, got {groups!r}")
        fields = sorted({base * k // m for k in (1, *kw["mults"])})
        if any(f % groups for f in fields):
            fits = [g for g in range(1, fields[0] + 1) if all(f % g == 0 for f in fields)]
            raise ValueError(f"groups {groups} must divide the feature fields of every level, and base {base} gives "
                             f"{', '.join(map(str, fields))} (base / {m} orientations × mults): choose groups "
                             f"{' or '.join(map(str, fits))}, or a base that is a multiple of {groups * m}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A configuration stored by any version of this trainer (a checkpoint's ``config``): keys it
        lacks take their defaults; the old ``amp`` flag becomes ``precision``."""
        d = dict(d)
        amp = d.pop("amp", None)
        if amp is not None and "precision" not in d:
            d["precision"] = "auto" if amp else "fp32"  # amp meant bf16 autocast on CUDA, fp32 on the CPU
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"the stored configuration has settings this version does not know "
                             f"({', '.join(unknown)}); update rediffuse to resume this run")
        if "model" in d:
            d["model"] = {k: tuple(v) if isinstance(v, list) else v for k, v in d["model"].items()}
        return cls(**d)


# Settings that may differ when a run is resumed: how it runs, not what it learns. ``steps`` may only grow.
RUNTIME_KEYS = frozenset({"steps", "precision", "grad_checkpoint", "workers", "ckpt_every", "log_every"})

# Named starting points for ``rediffuse train --preset``; flags given with the preset override its
# values. A preset holds data settings only when its name says so ("layered").
PRESETS: dict[str, dict[str, Any]] = {
    # the CPU default: a small weight-map model that trains in minutes (the shipped models' size)
    "small": dict(crop=64, batch=16, steps=1000, lr=2e-4, prediction="weights", loss="mse", loss_scale=1.0,
                  model=dict(base=16, mults=(1, 2, 4), conv="bconv", groups=4, dropout=0.1)),
    # the 5-level weight-map model on layered (alpha-matte) pairs from the photo library
    "layered": dict(layered=20_000, crop=128, batch=8, steps=20_000, lr=3e-4, prediction="weights",
                    loss="l1_grad", loss_scale=1.0,
                    model=dict(base=16, mults=(1, 2, 4, 8, 8), conv="bconv", groups=4, attention=4, dropout=0.0)),
    # the paper: the official FusionDiff/ReDiffuse noise predictor at full width, ε-prediction with the
    # 128-scaled MSE, cosine T = 2000, AdamW 2e-4 ×0.99 every 1000 epochs (710 Real-MFF pairs at batch 32:
    # 23 steps an epoch), batch 32 of 256² crops; 100k steps ≈ 4,300 such epochs
    "paper": dict(crop=256, batch=32, steps=100_000, lr=2e-4, lr_decay=0.99, lr_decay_every=23_000,
                  prediction="eps", loss="mse", loss_scale=128.0, schedule="cosine", T=2000,
                  model=dict(base=64, mults=(1, 2, 4, 8), conv="bconv", groups=16, dropout=0.1,
                             layout="fusiondiff")),
}


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """The configuration of preset ``name`` with ``overrides`` applied (a ``model`` override updates
    the preset's model dict key by key)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    values = copy.deepcopy(PRESETS[name])
    model = {**values.pop("model", {}), **overrides.pop("model", {})}
    values.update(overrides)
    return TrainConfig(**values, model=model)


def _unet_defaults() -> dict[str, Any]:
    sig = inspect.signature(ReDiffuseUNet.__init__)
    return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def _model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Every keyword of the U-Net ``cfg`` describes, defaults filled in, in JSON form."""
    full = {**_unet_defaults(), "in_channels": 3 * cfg.channels, "out_channels": cfg.channels, **cfg.model}
    return _jsonable(full)


def config_differences(stored: TrainConfig, wanted: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{setting: (stored, wanted)}`` for every setting outside ``RUNTIME_KEYS`` that differs;
    model settings are compared with the U-Net's defaults filled in and named ``model.<key>``."""
    out: dict[str, tuple[Any, Any]] = {}
    a, b = _jsonable(asdict(stored)), _jsonable(asdict(wanted))
    for key in a:
        # a cosine schedule is drawn over the run's length, so there `steps` defines the run
        if key == "model" or (key in RUNTIME_KEYS and not (key == "steps" and a["lr_schedule"] == "cosine")):
            continue
        if a[key] != b[key]:
            out[key] = (a[key], b[key])
    ma, mb = _model_kwargs(stored), _model_kwargs(wanted)
    for key in sorted(set(ma) | set(mb)):
        if ma.get(key) != mb.get(key):
            out[f"model.{key}"] = (ma.get(key), mb.get(key))
    return out


def _describe(diffs: dict[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{k}: run {a!r}, asked {b!r}" for k, (a, b) in diffs.items())


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision a run uses on ``device``: ``"auto"`` → ``"bf16"`` on a GPU with bfloat16, else
    ``"fp32"``; a mode the device cannot run is a ``ValueError`` naming the alternative."""
    dev = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "tf32" and dev.type != "cuda":
        raise ValueError("precision tf32 is a CUDA (Ampere and later) mode; on the CPU use --precision fp32")
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU has no bfloat16 support; use --precision fp16 (with loss scaling) or fp32")
    return precision


def run_exists(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds (part of) a training run."""
    out_dir = Path(out_dir)
    return any((out_dir / name).exists() for name in _RUN_FILES)


_RUN_FILES = ("last.pt", "loss.csv", "config.json", "summary.json")


def read_run_config(out_dir: str | Path) -> tuple[TrainConfig, int]:
    """``(configuration, step)`` of the run in ``out_dir``, read from its checkpoint."""
    ck = load_checkpoint(Path(out_dir) / "last.pt")
    if "config" not in ck or "step" not in ck:
        raise ValueError(f"{Path(out_dir) / 'last.pt'} is not a training checkpoint (no config/step); "
                         "train into a new folder")
    return TrainConfig.from_dict(ck["config"]), int(ck["step"])


def read_losses(out_dir: str | Path) -> list[float]:
    """The loss of every step logged in ``out_dir/loss.csv``, in step order (``[]`` without a log)."""
    path = Path(out_dir) / "loss.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


# ---------------------------------------------------------------- data

def build_dataset(cfg: TrainConfig):
    """Training pool: the folders in ``cfg.data`` (random crops, + rot90/flip when ``cfg.augment``) plus
    synthetic pairs."""
    if cfg.channels not in (1, 3):
        raise ValueError(f"channels must be 1 (luminance) or 3 (RGB), got {cfg.channels}")
    y_only = cfg.channels == 1
    parts = [FusionFolder(d, crop=cfg.crop, augment=cfg.augment, exclude=cfg.exclude or None, require_gt=True,
                          seed=cfg.seed, cache=True, y_only=y_only) for d in cfg.data]
    if cfg.synthetic:
        parts.append(SyntheticPairs(cfg.synthetic, size=cfg.crop, seed=cfg.seed, y_only=y_only, cache=True))
    if cfg.layered:
        library = library_for(cfg.photos or None, "train", y_only)
        parts.append(LayeredPairs(library, n=cfg.layered, size=cfg.crop, seed=cfg.seed))
    if not parts:
        raise ValueError("no training data: give --data FOLDER (with A/, B/, GT/), --synthetic N and/or --layered N")
    return ConcatDataset(parts)


class StepBatches(Dataset):
    """Item ``step``: everything training step ``step`` draws, for process ``rank`` of ``world``.

    Returns ``{"GT": [b, C, S, S], "cond": [b, 2C, S, S], "t": [b], "noise": [b, C, S, S]}`` (and
    ``"band"`` bool ``[b, 1, S, S]`` when every item marks its focus boundaries) with
    ``b = batch / world`` — this process's slice of the global batch. The item indices, their crops
    and augmentation (``set_epoch(step)`` on every part of the pool), the timesteps and the noise all
    come from generators seeded by ``(seed, step)``, so the item is the same in any process and in
    any DataLoader worker, and a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, dataset, batch: int, seed: int, T: int, rank: int = 0, world: int = 1):
        self.dataset, self.batch, self.seed, self.T, self.rank, self.world = dataset, batch, seed, T, rank, world

    def __len__(self) -> int:  # steps are indexed directly; any step is valid
        return 2**62

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        idx = torch.randint(0, len(self.dataset), (self.batch,), generator=g).tolist()
        for part in getattr(self.dataset, "datasets", [self.dataset]):
            if hasattr(part, "set_epoch"):
                part.set_epoch(step)  # fresh crops each step, still deterministic
        items = [self.dataset[i] for i in idx[self.rank::self.world]]
        gt = torch.stack([it["GT"] for it in items])
        cond = torch.cat([torch.stack([it["A"] for it in items]), torch.stack([it["B"] for it in items])], 1)
        g = torch.Generator().manual_seed(self.seed * 7_919 + step)
        t_all = torch.randint(0, self.T, (self.batch,), generator=g)
        n_all = torch.randn((self.batch, *gt.shape[1:]), generator=g)
        out = {"GT": gt, "cond": cond, "t": t_all[self.rank::self.world], "noise": n_all[self.rank::self.world]}
        if all("band" in it for it in items):
            out["band"] = torch.stack([it["band"] for it in items])[:, None]
        return out


def _step_loader(batches: StepBatches, start: int, end: int, workers: int, pin: bool) -> DataLoader:
    """Steps ``start … end−1`` in order; ``workers`` processes build them ahead (2 each in flight)."""
    kw: dict[str, Any] = dict(batch_size=None, sampler=range(start, end), num_workers=workers, pin_memory=pin)
    if workers:
        kw.update(persistent_workers=True, prefetch_factor=2)
    return DataLoader(batches, **kw)


def _warm_caches(dataset) -> None:
    """Fill the item caches before workers fork, so that they share one copy of it."""
    for part in getattr(dataset, "datasets", [dataset]):
        if hasattr(part, "warm"):
            part.warm()


# ---------------------------------------------------------------- loop

def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if cfg.lr_schedule == "cosine":
        lr = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))
    else:
        lr = cfg.lr * cfg.lr_decay ** (step // max(cfg.lr_decay_every, 1))
    return lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else lr


def _load_init(model: nn.Module, init: str, ema: bool = True) -> None:
    """Copy the weights of checkpoint ``init`` (a path or a shipped model name; its EMA weights when it
    has them) into ``model``; a checkpoint of another network is a one-line ``ValueError``."""
    path = resolve_checkpoint(init)
    if not path.is_file():
        raise FileNotFoundError(f"init: no checkpoint at {path}; give a checkpoint file or a shipped model name")
    ck = load_checkpoint(path)
    state = ck.get("ema") if ema and ck.get("ema") else ck.get("model")
    if state is None:
        raise ValueError(f"init: {path} holds no model weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"init: {path} does not fit this network ({str(e).splitlines()[0]}); "
                         "give the model settings it was trained with") from None


def build_model(cfg: TrainConfig) -> ReDiffuseUNet:
    """The U-Net a configuration describes, initialised from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    return ReDiffuseUNet(in_channels=3 * cfg.channels, out_channels=cfg.channels, **cfg.model)


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
          device: str = "cpu", stop_after: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the U-Net and data ``cfg`` describes in ``out_dir``: ``last.pt`` checkpoints,
    ``config.json``, ``loss.csv``, ``summary.json``. See :func:`train_model` for the arguments."""
    cfg.validate()
    _check_out_dir(out_dir, resume, overwrite)
    model = build_model(cfg)
    if cfg.init and not resume:  # a resumed run has its own weights in last.pt
        _load_init(model, cfg.init)
    return train_model(model, build_dataset(cfg), cfg, out_dir, resume=resume, overwrite=overwrite,
                       device=device, stop_after=stop_after, progress=progress)


def _check_out_dir(out_dir: str | Path, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues the run, overwrite discards it")
    if not resume and not overwrite and run_exists(out_dir):
        raise FileExistsError(f"{out_dir} already holds a training run; continue it with --resume "
                              "(resume=True) or discard it with --overwrite (overwrite=True)")


def _check_resume(ck: dict, cfg: TrainConfig, model: nn.Module, ckpt_path: Path) -> None:
    """Refuse to continue a checkpoint with a different run's settings (one line naming them)."""
    if "config" in ck:
        diffs = config_differences(TrainConfig.from_dict(ck["config"]), cfg)
    else:
        diffs = {}
    mc, stored_mc = getattr(model, "config", None), ck.get("model_config")
    if isinstance(mc, dict) and isinstance(stored_mc, dict):
        a, b = _jsonable(stored_mc), _jsonable(mc)
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key) and f"model.{key}" not in diffs:
                diffs[f"model.{key}"] = (a.get(key), b.get(key))
    if diffs:
        raise ValueError(f"{ckpt_path} was trained with other settings ({_describe(diffs)}); resume with the run's "
                         "own settings (rediffuse train -o DIR --resume reads them) or train into a new folder")
    if int(ck["step"]) > cfg.steps:
        raise ValueError(f"{ckpt_path} is already at step {ck['step']}, past the {cfg.steps} steps asked for; "
                         "give --steps ≥ the run's step")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def train_model(model: nn.Module, dataset, cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False,
                overwrite: bool = False, device: str = "cpu", stop_after: int | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Train any network ``model(x_t, t, cond)`` on ``dataset`` (items with ``"A"``, ``"B"``, ``"GT"``)
    with the optimiser, schedule, loss and precision of ``cfg``; checkpoints store ``model.config``
    when the model has one (so ``load_model`` can rebuild it).

    ``resume`` continues ``out_dir/last.pt`` (a ``ValueError`` names every setting of ``cfg`` that
    contradicts the run's; a larger ``cfg.steps`` extends it); without it a folder that already holds
    a run is refused unless ``overwrite``. A run that is already at ``cfg.steps`` trains nothing and
    returns its stored summary with ``already_finished=True``. ``stop_after`` ends the call after
    that many steps of this invocation (used to test resuming).

    Returns a summary with the losses of the steps run in this call, ``steps_per_s``, and the time
    spent waiting for data (``data_wait_s``, ``data_wait_fraction``).
    """
    cfg.validate()
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, resume, overwrite)
    rank, world = _dist_info()
    if world > 1:  # every process has looked at the folder before rank 0 writes into it
        dist.barrier()
    if cfg.batch % world:
        raise ValueError(f"batch {cfg.batch} is not divisible by {world} processes")
    dev = torch.device(device)
    precision = resolve_precision(cfg.precision, dev)
    model = model.to(dev)
    if cfg.grad_checkpoint and not set_grad_checkpoint(model, True):
        raise ValueError("grad_checkpoint: this network has no ResBlocks to checkpoint")
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")
    start = 0
    ckpt_path = out_dir / "last.pt"
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        ck = load_checkpoint(ckpt_path, map_location=dev)
        _check_resume(ck, cfg, model, ckpt_path)
        start = int(ck["step"])
        if start >= cfg.steps:
            return _finished_summary(out_dir, start, model, dev, world)
        try:
            model.load_state_dict(ck["model"])
            ema.load_state_dict(ck["ema"])
        except RuntimeError as e:
            raise ValueError(f"{ckpt_path} does not fit this network: {str(e).splitlines()[0]}") from None
        opt.load_state_dict(ck["optimizer"])
        if "scaler" in ck and scaler.is_enabled():
            scaler.load_state_dict(ck["scaler"])
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    schedule = get_schedule(cfg.schedule, cfg.T).to(dev)
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    log_path = out_dir / "loss.csv"
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            for name in _RUN_FILES:  # overwrite: nothing of the old run may be mistaken for the new one
                (out_dir / name).unlink(missing_ok=True)
        _write_json(out_dir / "config.json", {
            "config": _jsonable(asdict(cfg)), "model_config": _jsonable(getattr(model, "config", {})),
            "parameters": count_parameters(model)})
        if not resume or not log_path.exists():
            log_path.write_text("step,loss,lr,seconds\n")
        else:  # drop rows past the checkpoint: they will be recomputed identically
            rows = log_path.read_text().splitlines()
            kept = [rows[0]] + [r for r in rows[1:] if r and int(r.split(",")[0]) <= start]
            log_path.write_text("\n".join(kept) + "\n")

    def checkpoint(step: int) -> None:
        if rank == 0:
            state = {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                     "step": step, "config": _jsonable(asdict(cfg)),
                     "model_config": _jsonable(getattr(model, "config", {})), "rng": torch.get_rng_state()}
            if scaler.is_enabled():
                state["scaler"] = scaler.state_dict()
            save_checkpoint(ckpt_path, state)

    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    batches = StepBatches(dataset, cfg.batch, cfg.seed, cfg.T, rank, world)
    if cfg.workers:
        _warm_caches(dataset)
    loader = _step_loader(batches, start, end, cfg.workers, pin=dev.type == "cuda")
    losses: list[float] = []
    pending: list[torch.Tensor] = []  # this interval's losses, still on the device
    times: list[float] = []
    data_wait = 0.0
    ema_params, model_params = list(ema.parameters()), list(model.parameters())
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress or rank != 0, desc="train", unit="step")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    with open(log_path, "a", newline="") if rank == 0 else open(os.devnull, "w") as logf, \
            tf32_precision(precision == "tf32"):
        writer = csv.writer(logf)

        def sync(upto: int) -> None:
            """Copy the pending losses to the host (the one wait for the device), check them, log them."""
            if not pending:
                return
            first = upto - len(pending)
            values = torch.stack(pending).float().cpu().tolist()
            for i, v in enumerate(values):
                step = first + i
                if not math.isfinite(v):
                    raise RuntimeError(f"loss became {v} at step {step + 1}; lower --lr or check the data "
                                       f"(the last checkpoint, {ckpt_path}, is from before it)")
                if rank == 0:
                    writer.writerow([step + 1, f"{v:.6g}", f"{_lr_at(cfg, step):.3g}", f"{times[i]:.1f}"])
            losses.extend(values)
            pending.clear()
            times.clear()
            bar.update(len(values))
            recent = losses[-cfg.log_every:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")

        batch_iter = iter(loader)
        for step in range(start, end):
            model.train()
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, step)
            tw = time.perf_counter()
            batch = next(batch_iter)
            data_wait += time.perf_counter() - tw
            x0, cond, t, noise = (batch[k].to(dev, non_blocking=True) for k in ("GT", "cond", "t", "noise"))
            weight = None
            if cfg.band_weight:
                weight = 1.0 + cfg.band_weight * batch["band"].to(dev, non_blocking=True).to(x0.dtype)
            torch.manual_seed(cfg.seed * 104_729 + step * world + rank)  # dropout
            amp = torch.autocast(device_type=dev.type, dtype=autocast) if autocast is not None else nullcontext()
            with amp:
                loss = training_loss(net, x0, cond, schedule, prediction=cfg.prediction,
                                     loss_scale=cfg.loss_scale, t=t, noise=noise, loss=cfg.loss, weight=weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():  # one fused kernel per dtype instead of one per tensor
                torch._foreach_lerp_(ema_params, model_params, 1 - min(cfg.ema, (1 + step) / (10 + step)))
            value = loss.detach().float()
            if world > 1:
                dist.all_reduce(value)
                value /= world
            pending.append(value)
            times.append(time.perf_counter() - t0)
            done = step + 1
            at_checkpoint = done % cfg.ckpt_every == 0 or done == end
            if done % cfg.log_every == 0 or at_checkpoint:
                sync(done)
            if at_checkpoint:
                if rank == 0:  # every row up to the checkpoint is on disk before the checkpoint is
                    logf.flush()
                    os.fsync(logf.fileno())
                checkpoint(done)
        del batch_iter, loader  # stops the worker processes
    bar.close()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elapsed = time.perf_counter() - t0
    summary = {"steps_run": len(losses), "final_step": end, "losses": losses, "wall_s": elapsed,
               "steps_per_s": len(losses) / elapsed if elapsed else 0.0,
               "pairs_per_s": len(losses) * cfg.batch / elapsed if elapsed else 0.0,
               "data_wait_s": data_wait, "data_wait_fraction": data_wait / elapsed if elapsed else 0.0,
               "parameters": count_parameters(model), "device": str(dev), "world_size": world,
               "precision": precision, "workers": cfg.workers, "already_finished": False}
    if dev.type == "cuda":
        summary["peak_memory_bytes"] = torch.cuda.max_memory_allocated(dev)
    if rank == 0:
        _write_json(out_dir / "summary.json", {k: v for k, v in summary.items() if k != "losses"})
    return summary


def _finished_summary(out_dir: Path, step: int, model: nn.Module, dev: torch.device, world: int) -> dict[str, Any]:
    """What resuming a run that already reached its last step returns: its stored summary, nothing new."""
    stored: dict[str, Any] = {}
    path = out_dir / "summary.json"
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = {}
    return {**stored, "steps_run": 0, "final_step": step, "losses": [], "already_finished": True,
            "parameters": count_parameters(model), "device": str(dev), "world_size": world}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return list(obj)
    return obj
