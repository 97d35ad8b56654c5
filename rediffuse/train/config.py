"""What a training run is: its configuration (``TrainConfig``), the presets, and the configuration a
run folder stores — read back to resume it, compared with what is asked, merged with new settings.

``new_run_config`` and ``resume_config`` turn a preset plus settings (the command line's flags, or a
script's keywords) into the configuration of a new or a continued run; ``check_run_folder`` refuses
to start a run over another one. Every error names the setting (``steps``, ``resume``), not a flag.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import inspect
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint
from ..evidence import REFERENCES
from ..unet import ReDiffuseUNet

__all__ = ["TrainConfig", "PRESETS", "RUNTIME_KEYS", "PRECISIONS", "LR_SCHEDULES", "DATA_KEYS", "RUN_FILES",
           "preset_config", "new_run_config", "resume_config", "model_kwargs", "config_differences",
           "resolve_precision", "run_exists", "check_run_folder", "read_run_config", "read_losses", "jsonable"]

PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
LR_SCHEDULES = ("step", "cosine")
# the settings that choose the training data: given for a new run, they replace the preset's data
DATA_KEYS = ("data", "synthetic", "layered")


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
    stack_frames: int = 0  # ≥ 2: each layered item is one frame of a stack of 2 … this many against the mean of the rest
    stack_reference: str = "mean"  # with stack_frames: "mean" of the rest or "best" of the rest (evidence.best_of_rest)
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
        if isinstance(self.stack_frames, bool) or not isinstance(self.stack_frames, int) or self.stack_frames < 0 \
                or self.stack_frames == 1:
            raise ValueError(f"stack_frames must be 0 (pairs) or a whole number ≥ 2, got {self.stack_frames!r}")
        if self.stack_frames and not self.layered:
            raise ValueError("stack_frames needs layered=N: stacks are drawn with the layered defocus model")
        if self.stack_reference not in REFERENCES:
            raise ValueError(f"stack_reference must be one of {', '.join(REFERENCES)}, got {self.stack_reference!r}")
        if self.stack_reference != "mean" and not self.stack_frames:
            raise ValueError("stack_reference needs stack_frames=N: pairs have no rest to take the best of")
        if not (self.band_weight >= 0 and math.isfinite(self.band_weight)):
            raise ValueError(f"band_weight must be a number ≥ 0, got {self.band_weight!r}")
        if self.band_weight and (self.data or self.synthetic or not self.layered):
            raise ValueError("band_weight needs the layered pairs alone (layered=N, no data, synthetic=0): "
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
        kw = model_kwargs(self)
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


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Every keyword of the ``ReDiffuseUNet`` that ``cfg`` describes, its defaults filled in, in JSON form
    (lists, not tuples): what ``rediffuse.resources`` estimates and what resuming compares."""
    full = {**_unet_defaults(), "in_channels": 3 * cfg.channels, "out_channels": cfg.channels, **cfg.model}
    return jsonable(full)


def config_differences(stored: TrainConfig, wanted: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{setting: (stored, wanted)}`` for every setting outside ``RUNTIME_KEYS`` that differs;
    model settings are compared with the U-Net's defaults filled in and named ``model.<key>``."""
    out: dict[str, tuple[Any, Any]] = {}
    a, b = jsonable(asdict(stored)), jsonable(asdict(wanted))
    for key in a:
        # a cosine schedule is drawn over the run's length, so there `steps` defines the run
        if key == "model" or (key in RUNTIME_KEYS and not (key == "steps" and a["lr_schedule"] == "cosine")):
            continue
        if a[key] != b[key]:
            out[key] = (a[key], b[key])
    ma, mb = model_kwargs(stored), model_kwargs(wanted)
    for key in sorted(set(ma) | set(mb)):
        if ma.get(key) != mb.get(key):
            out[f"model.{key}"] = (ma.get(key), mb.get(key))
    return out


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision a run uses on ``device``: ``"auto"`` → ``"bf16"`` on a GPU with bfloat16, else
    ``"fp32"``; a mode the device cannot run is a ``ValueError`` naming the alternative."""
    dev = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "tf32" and dev.type != "cuda":
        raise ValueError('precision tf32 is a CUDA (Ampere and later) mode; on the CPU use precision="fp32"')
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError('this GPU has no bfloat16 support; use precision="fp16" (with loss scaling) '
                         'or precision="fp32"')
    return precision


# what a run folder holds; a folder with any of them holds a run
RUN_FILES = ("last.pt", "loss.csv", "config.json", "summary.json")


def run_exists(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds (part of) a training run."""
    out_dir = Path(out_dir)
    return any((out_dir / name).exists() for name in RUN_FILES)


def check_run_folder(out_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse ``resume`` together with ``overwrite`` (``ValueError``), and a new run (neither) where
    ``out_dir`` already holds one (``FileExistsError``)."""
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues the run, overwrite discards it")
    if not resume and not overwrite and run_exists(out_dir):
        raise FileExistsError(f"{out_dir} already holds a training run; continue it with resume=True "
                              "or discard it with overwrite=True")


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


def new_run_config(preset: str = "small", settings: Mapping[str, Any] | None = None) -> TrainConfig:
    """The configuration of a new run: preset ``preset`` with ``settings`` (``TrainConfig`` fields; a
    ``model`` entry updates the preset's model dict key by key). Settings that choose any of the data
    (``DATA_KEYS``) replace the preset's data as a whole: the data settings not given are empty."""
    settings = dict(settings or {})
    if any(k in settings for k in DATA_KEYS):
        for key, empty in (("data", []), ("synthetic", 0), ("layered", 0)):
            settings.setdefault(key, empty)
    return preset_config(preset, **settings)


def resume_config(out_dir: str | Path, settings: Mapping[str, Any] | None = None,
                  preset: str | None = None) -> TrainConfig:
    """The configuration to continue the run in ``out_dir`` with: the one its checkpoint stores, with
    the values of ``preset`` (when given) and then ``settings`` applied, so that only settings in
    ``RUNTIME_KEYS`` may change and ``steps`` may only grow.

    Raises ``FileNotFoundError`` without a checkpoint, and a one-line ``ValueError`` that names every
    setting that contradicts the run, or a ``steps`` below the run's step."""
    path = Path(out_dir) / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} to resume; start the run without resume=True")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    stored, step = read_run_config(out_dir)
    given = copy.deepcopy(PRESETS[preset]) if preset is not None else {}
    settings = dict(settings or {})
    given["model"] = {**given.get("model", {}), **settings.pop("model", {})}
    given.update(settings)
    model = {**stored.model, **given.pop("model")}
    cfg = dataclasses.replace(stored, model=model, **given)
    diffs = config_differences(stored, cfg)
    if diffs:
        keys = "; ".join(f"{k}: run {a!r}, given {b!r}" for k, (a, b) in diffs.items())
        raise ValueError(f"{out_dir} was trained with other settings ({keys}); leave them out to resume it, "
                         "or train into a new folder")
    if cfg.steps < step:
        raise ValueError(f"{out_dir} is already at step {step}; give steps={step} or more")
    return cfg


def jsonable(obj: Any) -> Any:
    """``obj`` with every tuple (at any depth of dicts) a list, as JSON and a reloaded checkpoint hold it."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return list(obj)
    return obj
