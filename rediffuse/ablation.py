"""Ablations: model variants trained with the same data, steps and seed, then scored side by side.

- ``TABLE3``: the convolution (paper Table 3) — plain, G-Conv (rot90 weight tying), F-Conv (Fourier
  basis), B-Conv (bicubic basis) U-Nets of equal channel widths;
- ``TABLE2``: the Rot-E design on a FusionDiff-style RGB backbone (9 inputs, 3 outputs) vs the
  original plain RGB backbone (paper Table 2);
- ``parameter_table``: parameter counts of every convolution kind at a given U-Net size.

``central_crops`` writes the central square of a few pairs of a folder to another folder, so that a
small configuration scores the same pairs at a fraction of the cost (fusion and metrics scale with
the pixels). ``train_variants`` trains each variant in its own run folder (``<root>/<prefix><key>``), resuming
unfinished runs and skipping finished ones, so the full configuration can be run once from the
command line (README) and read back by notebook 06. A folder whose run has other settings (another
size, data or output) is an error, never reused or resumed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Mapping

from .data import FusionFolder, center_crop
from .imageio import write_image
from .layers import CONV_KINDS
from .train import TrainConfig, config_differences, load_checkpoint, read_run_config, train
from .unet import ReDiffuseUNet, count_parameters

__all__ = ["TABLE3", "TABLE2", "variant_config", "train_variants", "parameter_table", "PAPER_SIZE", "central_crops",
           "runs_key"]

# variant key -> (label, TrainConfig overrides; "model" entries are merged into the model dict)
TABLE3: dict[str, tuple[str, dict]] = {
    "plain": ("plain CNN", {"model": {"conv": "plain"}}),
    "gconv": ("G-Conv", {"model": {"conv": "gconv"}}),
    "fconv": ("F-Conv", {"model": {"conv": "fconv"}}),
    "bconv": ("B-Conv (ReDiffuse)", {"model": {"conv": "bconv"}}),
}
TABLE2: dict[str, tuple[str, dict]] = {
    "rgb-plain": ("FusionDiff-style RGB, plain", {"channels": 3, "model": {"conv": "plain"}}),
    "rgb-bconv": ("FusionDiff-style RGB + Rot-E (B-Conv)", {"channels": 3, "model": {"conv": "bconv"}}),
}
PAPER_SIZE = dict(base=64, mults=(1, 2, 4, 8), groups=16)


def variant_config(base: TrainConfig, overrides: Mapping) -> TrainConfig:
    """``base`` with ``overrides`` applied (a ``"model"`` entry updates the model dict)."""
    over = dict(overrides)
    model = {**base.model, **over.pop("model", {})}
    return dataclasses.replace(base, model=model, **over)


def _finished_step(run: Path) -> int:
    ck = run / "last.pt"
    return int(load_checkpoint(ck)["step"]) if ck.is_file() else 0


def train_variants(base: TrainConfig, variants: Mapping[str, tuple[str, dict]], root: str | Path, *,
                   prefix: str = "ablate-", device: str = "cpu", progress: bool = True,
                   replace_other: bool = False) -> dict[str, Path]:
    """Train every variant for ``base.steps`` steps in ``root/<prefix><key>``; a run that already
    reached that step is kept, an unfinished one is resumed, and a folder without a checkpoint is
    started afresh. A run with other settings than the variant's raises ``ValueError`` naming them —
    or, with ``replace_other`` (for folders of disposable runs, such as a notebook's small
    configuration after its settings changed), is trained again from scratch in its place.
    Returns key -> checkpoint path."""
    out = {}
    for key, (_, over) in variants.items():
        run = Path(root) / f"{prefix}{key}"
        cfg = variant_config(base, over)
        done = _finished_step(run)
        diffs = config_differences(read_run_config(run)[0], cfg) if done else {}
        if diffs and replace_other:
            train(cfg, run, overwrite=True, device=device, progress=progress)
        elif done >= base.steps:
            if diffs:
                names = ", ".join(diffs)
                raise ValueError(f"{run} holds a finished run with other settings ({names}); "
                                 "move it away or train into another folder")
        else:
            train(cfg, run, resume=done > 0, overwrite=done == 0, device=device, progress=progress)
        out[key] = run / "last.pt"
    return out


def runs_key(checkpoints: Mapping[str, str | Path]) -> str:
    """A short digest of what the runs behind ``checkpoints`` are (every setting and the step), for
    naming cached scores: it changes whenever one of the runs is trained further or replaced."""
    what = {}
    for key, ck in sorted(checkpoints.items()):
        cfg, step = read_run_config(Path(ck).parent)
        what[key] = [json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=list), step]
    return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]


def parameter_table(base: int = 16, mults=(1, 2, 4), groups: int = 4, channels: int = 1, **unet_kw) -> list[dict]:
    """Trainable parameters of each convolution kind (``rediffuse.layers.CONV_KINDS``) at one size,
    with the ratio to the plain twin of equal channel widths (``unet_kw``: e.g. ``layout``)."""
    counts = {}
    for conv in CONV_KINDS:
        net = ReDiffuseUNet(in_channels=3 * channels, out_channels=channels, base=base, mults=tuple(mults),
                            groups=groups, conv=conv, **unet_kw)
        counts[conv] = count_parameters(net)
        del net
    return [{"conv": c, "parameters": n, "ratio_to_plain": n / counts["plain"]} for c, n in counts.items()]


def central_crops(folder: str | Path, out_dir: str | Path, size: int, *, stems=None, limit: int | None = None) -> Path:
    """Write the central ``size``² square of every image (sources and ``GT/`` if present) of the
    first ``limit`` pairs of ``folder`` (or of ``stems``) to ``out_dir`` as PNG, in the same layout;
    images already there are kept. Returns ``out_dir``.

    ``out_dir`` is a cache owned by this function: its ``SOURCE.txt`` names the folder and size the
    crops were cut from. When that differs (synthetic pairs earlier, the benchmark data now), or a
    folder of PNGs carries no ``SOURCE.txt`` (an older version), the crops there are removed first,
    so crops of two sources never mix."""
    ds = FusionFolder(folder, stems=stems)
    out = Path(out_dir)
    manifest = out / "SOURCE.txt"
    made_from = f"central {int(size)}px crops of {Path(folder).resolve()}\n"
    old = manifest.read_text() if manifest.is_file() else None
    if old != made_from:
        for sub in (out.iterdir() if out.is_dir() else ()):
            if sub.is_dir() and not sub.name.startswith("."):
                for png in sub.glob("*.png"):
                    png.unlink()
                if not any(sub.iterdir()):  # an empty GT/ would still say "this set has ground truth"
                    sub.rmdir()
        out.mkdir(parents=True, exist_ok=True)
        manifest.write_text(made_from)
    for stem in ds.stems[:limit] if limit else ds.stems:
        if all((out / k / f"{stem}.png").is_file() for k in ds.keys):
            continue
        for key, img in ds.load(stem).items():
            write_image(out / key / f"{stem}.png", center_crop(img, size))
    return out
