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

Run on several GPUs with ``torchrun --nproc_per_node N -m rediffuse.cli train ...``; ``process_group``
joins the processes torchrun started. The configuration, the presets and the run folder's stored
configuration live in ``rediffuse.train.config`` (re-exported here).
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm.auto import tqdm

from ..checkpoint import export_checkpoint, load_checkpoint, load_model, save_checkpoint
from ..data import FusionFolder, SyntheticPairs
from ..diffusion import get_schedule, training_loss
from ..runtime import tf32_precision
from ..synthesis import LayeredPairs, LayeredStackItems, library_for
from ..unet import ReDiffuseUNet, count_parameters, set_grad_checkpoint
from ..weights import resolve_checkpoint
from .config import (DATA_KEYS, LR_SCHEDULES, PRECISIONS, PRESETS, RUN_FILES, RUNTIME_KEYS, TrainConfig,
                     check_run_folder, config_differences, jsonable, model_kwargs, new_run_config, preset_config,
                     read_losses, read_run_config, resolve_precision, resume_config, run_exists)

__all__ = ["TrainConfig", "PRESETS", "RUNTIME_KEYS", "PRECISIONS", "LR_SCHEDULES", "DATA_KEYS", "preset_config",
           "new_run_config", "resume_config", "model_kwargs", "config_differences", "resolve_precision",
           "StepBatches", "train", "train_model", "build_model", "build_dataset", "check_run_folder",
           "read_run_config", "read_losses", "run_exists", "launched_world_size", "process_group",
           # checkpoints live in rediffuse.checkpoint; re-exported for existing callers
           "save_checkpoint", "load_checkpoint", "load_model", "export_checkpoint"]


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
        if cfg.stack_frames:
            parts.append(LayeredStackItems(library, n=cfg.layered, size=cfg.crop, max_frames=cfg.stack_frames,
                                           seed=cfg.seed, reference=cfg.stack_reference))
        else:
            parts.append(LayeredPairs(library, n=cfg.layered, size=cfg.crop, seed=cfg.seed))
    if not parts:
        raise ValueError("no training data: give data folders (with A/, B/, GT/), synthetic=N and/or layered=N")
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
    check_run_folder(out_dir, resume, overwrite)
    model = build_model(cfg)
    if cfg.init and not resume:  # a resumed run has its own weights in last.pt
        _load_init(model, cfg.init)
    return train_model(model, build_dataset(cfg), cfg, out_dir, resume=resume, overwrite=overwrite,
                       device=device, stop_after=stop_after, progress=progress)


# ---------------------------------------------------------------- several processes (torchrun)

def launched_world_size() -> int:
    """How many processes torchrun started for this run (its ``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextmanager
def process_group(device: str) -> Iterator[str]:
    """Join the process group of the processes torchrun started (NCCL on ``"cuda"``, else Gloo), each
    on its own GPU (``LOCAL_RANK``); yields the device this process trains on, and leaves the group
    on exit. Without torchrun (one process) it yields ``device`` and does nothing else."""
    if launched_world_size() <= 1:
        yield device
        return
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    try:
        if device == "cuda":
            rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(rank)
            device = f"cuda:{rank}"
        yield device
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- the run

def _check_resume(ckpt_path: Path, cfg: TrainConfig, model: nn.Module, dev: torch.device) -> dict[str, Any]:
    """The checkpoint to continue; refuses one of a different run's settings (one line naming them)."""
    if not ckpt_path.exists():
        raise FileNotFoundError(f"resume: no checkpoint at {ckpt_path}")
    ck = load_checkpoint(ckpt_path, map_location=dev)
    diffs = config_differences(TrainConfig.from_dict(ck["config"]), cfg) if "config" in ck else {}
    mc, stored_mc = getattr(model, "config", None), ck.get("model_config")
    if isinstance(mc, dict) and isinstance(stored_mc, dict):
        a, b = jsonable(stored_mc), jsonable(mc)
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key) and f"model.{key}" not in diffs:
                diffs[f"model.{key}"] = (a.get(key), b.get(key))
    if diffs:
        keys = "; ".join(f"{k}: run {a!r}, asked {b!r}" for k, (a, b) in diffs.items())
        raise ValueError(f"{ckpt_path} was trained with other settings ({keys}); resume with the run's own "
                         "settings (read_run_config reads them) or train into a new folder")
    if int(ck["step"]) > cfg.steps:
        raise ValueError(f"{ckpt_path} is already at step {ck['step']}, past the {cfg.steps} steps asked for; "
                         f"give steps={ck['step']} or more")
    return ck


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _prepare_run_folder(out_dir: Path, cfg: TrainConfig, model: nn.Module, resume: bool, start: int) -> None:
    """``config.json`` written, and ``loss.csv`` started (a new run) or cut back to the checkpoint's step."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for name in RUN_FILES:  # overwrite: nothing of the old run may be mistaken for the new one
            (out_dir / name).unlink(missing_ok=True)
    _write_json(out_dir / "config.json", {
        "config": jsonable(asdict(cfg)), "model_config": jsonable(getattr(model, "config", {})),
        "parameters": count_parameters(model)})
    log_path = out_dir / "loss.csv"
    if not resume or not log_path.exists():
        log_path.write_text("step,loss,lr,seconds\n")
    else:  # drop rows past the checkpoint: they will be recomputed identically
        rows = log_path.read_text().splitlines()
        kept = [rows[0]] + [r for r in rows[1:] if r and int(r.split(",")[0]) <= start]
        log_path.write_text("\n".join(kept) + "\n")


class _Trainer:
    """One process's share of a run: the model, its EMA twin, the optimiser and the loss scaler on one
    device, and the optimisation step."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, dev: torch.device, precision: str, rank: int,
                 world: int) -> None:
        self.cfg, self.dev, self.precision, self.rank, self.world = cfg, dev, precision, rank, world
        self.model = model.to(dev)
        if cfg.grad_checkpoint and not set_grad_checkpoint(self.model, True):
            raise ValueError("grad_checkpoint: this network has no ResBlocks to checkpoint")
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")
        self.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def restore(self, ck: dict[str, Any], ckpt_path: Path) -> None:
        """Weights, EMA weights, optimiser and loss scaler from checkpoint ``ck``."""
        try:
            self.model.load_state_dict(ck["model"])
            self.ema.load_state_dict(ck["ema"])
        except RuntimeError as e:
            raise ValueError(f"{ckpt_path} does not fit this network: {str(e).splitlines()[0]}") from None
        self.opt.load_state_dict(ck["optimizer"])
        if "scaler" in ck and self.scaler.is_enabled():
            self.scaler.load_state_dict(ck["scaler"])

    def start(self) -> None:
        """Ready to step: the network wrapped for several processes, the noise schedule on the device."""
        self.net = self.model
        if self.world > 1:
            ids = [self.dev.index] if self.dev.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.schedule = get_schedule(self.cfg.schedule, self.cfg.T).to(self.dev)
        self.ema_params, self.params = list(self.ema.parameters()), list(self.model.parameters())

    def state(self, step: int) -> dict[str, Any]:
        """What ``last.pt`` holds after ``step`` steps."""
        state = {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "optimizer": self.opt.state_dict(),
                 "step": step, "config": jsonable(asdict(self.cfg)),
                 "model_config": jsonable(getattr(self.model, "config", {})), "rng": torch.get_rng_state()}
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        return state

    def step(self, step: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Optimisation step ``step`` on ``batch``; returns its loss (mean over processes), on the device."""
        cfg, dev = self.cfg, self.dev
        self.model.train()
        for group in self.opt.param_groups:
            group["lr"] = _lr_at(cfg, step)
        x0, cond, t, noise = (batch[k].to(dev, non_blocking=True) for k in ("GT", "cond", "t", "noise"))
        weight = None
        if cfg.band_weight:
            weight = 1.0 + cfg.band_weight * batch["band"].to(dev, non_blocking=True).to(x0.dtype)
        torch.manual_seed(cfg.seed * 104_729 + step * self.world + self.rank)  # dropout
        amp = torch.autocast(device_type=dev.type, dtype=self.autocast) if self.autocast is not None else nullcontext()
        with amp:
            loss = training_loss(self.net, x0, cond, self.schedule, prediction=cfg.prediction,
                                 loss_scale=cfg.loss_scale, t=t, noise=noise, loss=cfg.loss, weight=weight)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        with torch.no_grad():  # one fused kernel per dtype instead of one per tensor
            torch._foreach_lerp_(self.ema_params, self.params, 1 - min(cfg.ema, (1 + step) / (10 + step)))
        value = loss.detach().float()
        if self.world > 1:
            dist.all_reduce(value)
            value /= self.world
        return value


class _LossLog:
    """The losses of the steps run: kept on the device, then copied to the host together every
    ``log_every`` steps and at every checkpoint (the one wait for the device), checked, written to
    ``loss.csv`` (rank 0) and shown on the progress bar."""

    def __init__(self, logf, cfg: TrainConfig, rank: int, bar, ckpt_path: Path, t0: float) -> None:
        self.logf, self.writer, self.cfg, self.rank, self.bar = logf, csv.writer(logf), cfg, rank, bar
        self.ckpt_path, self.t0 = ckpt_path, t0
        self.losses: list[float] = []
        self.pending: list[torch.Tensor] = []  # this interval's losses, still on the device
        self.times: list[float] = []

    def add(self, value: torch.Tensor) -> None:
        self.pending.append(value)
        self.times.append(time.perf_counter() - self.t0)

    def sync(self, upto: int) -> None:
        """Copy the pending losses (of the steps up to ``upto``) to the host, check them, log them."""
        if not self.pending:
            return
        first = upto - len(self.pending)
        values = torch.stack(self.pending).float().cpu().tolist()
        for i, v in enumerate(values):
            step = first + i
            if not math.isfinite(v):
                raise RuntimeError(f"loss became {v} at step {step + 1}; lower lr or check the data "
                                   f"(the last checkpoint, {self.ckpt_path}, is from before it)")
            if self.rank == 0:
                self.writer.writerow([step + 1, f"{v:.6g}", f"{_lr_at(self.cfg, step):.3g}", f"{self.times[i]:.1f}"])
        self.losses.extend(values)
        self.pending.clear()
        self.times.clear()
        self.bar.update(len(values))
        recent = self.losses[-self.cfg.log_every:]
        self.bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")

    def to_disk(self) -> None:
        """Every row so far on disk (before a checkpoint is written)."""
        if self.rank == 0:
            self.logf.flush()
            os.fsync(self.logf.fileno())


def _run_steps(trainer: _Trainer, batches: StepBatches, start: int, end: int, log: _LossLog) -> float:
    """Steps ``start … end−1``, a checkpoint every ``ckpt_every`` steps and at ``end``; returns the
    seconds spent waiting for batches."""
    cfg = trainer.cfg
    loader = _step_loader(batches, start, end, cfg.workers, pin=trainer.dev.type == "cuda")
    batch_iter = iter(loader)
    data_wait = 0.0
    for step in range(start, end):
        tw = time.perf_counter()
        batch = next(batch_iter)
        data_wait += time.perf_counter() - tw
        log.add(trainer.step(step, batch))
        done = step + 1
        at_checkpoint = done % cfg.ckpt_every == 0 or done == end
        if done % cfg.log_every == 0 or at_checkpoint:
            log.sync(done)
        if at_checkpoint:
            log.to_disk()  # every row up to the checkpoint is on disk before the checkpoint is
            if trainer.rank == 0:
                save_checkpoint(log.ckpt_path, trainer.state(done))
    del batch_iter, loader  # stops the worker processes
    return data_wait


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
    check_run_folder(out_dir, resume, overwrite)
    rank, world = _dist_info()
    if world > 1:  # every process has looked at the folder before rank 0 writes into it
        dist.barrier()
    if cfg.batch % world:
        raise ValueError(f"batch {cfg.batch} is not divisible by {world} processes")
    dev = torch.device(device)
    trainer = _Trainer(model, cfg, dev, resolve_precision(cfg.precision, dev), rank, world)
    start = 0
    if resume:
        ck = _check_resume(out_dir / "last.pt", cfg, trainer.model, dev)
        start = int(ck["step"])
        if start >= cfg.steps:
            return _finished_summary(out_dir, start, trainer.model, dev, world)
        trainer.restore(ck, out_dir / "last.pt")
    trainer.start()
    if rank == 0:
        _prepare_run_folder(out_dir, cfg, trainer.model, resume, start)
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    batches = StepBatches(dataset, cfg.batch, cfg.seed, cfg.T, rank, world)
    if cfg.workers:
        _warm_caches(dataset)
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress or rank != 0, desc="train", unit="step")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    with open(out_dir / "loss.csv", "a", newline="") if rank == 0 else open(os.devnull, "w") as logf, \
            tf32_precision(trainer.precision == "tf32"):
        log = _LossLog(logf, cfg, rank, bar, out_dir / "last.pt", t0)
        data_wait = _run_steps(trainer, batches, start, end, log)
    bar.close()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    summary = _summary(trainer, log.losses, end, time.perf_counter() - t0, data_wait)
    if rank == 0:
        _write_json(out_dir / "summary.json", {k: v for k, v in summary.items() if k != "losses"})
    return summary


def _summary(trainer: _Trainer, losses: list[float], end: int, elapsed: float, data_wait: float) -> dict[str, Any]:
    """What ``train_model`` returns (and ``summary.json`` holds, without the losses)."""
    cfg, dev = trainer.cfg, trainer.dev
    summary = {"steps_run": len(losses), "final_step": end, "losses": losses, "wall_s": elapsed,
               "steps_per_s": len(losses) / elapsed if elapsed else 0.0,
               "pairs_per_s": len(losses) * cfg.batch / elapsed if elapsed else 0.0,
               "data_wait_s": data_wait, "data_wait_fraction": data_wait / elapsed if elapsed else 0.0,
               "parameters": count_parameters(trainer.model), "device": str(dev), "world_size": trainer.world,
               "precision": trainer.precision, "workers": cfg.workers, "already_finished": False}
    if dev.type == "cuda":
        summary["peak_memory_bytes"] = torch.cuda.max_memory_allocated(dev)
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
