"""The quality/cost curve of few-step sampling.

The paper samples with 2000 network evaluations per image. ``quality_cost_curve`` fuses the same pairs
with several ``(sampler, steps)`` settings, side by side in one run, and scores each with the six
no-reference metrics (plus PSNR/SSIM where the folder has ground truth); ``curve_table`` averages over
the pairs and gives each setting's largest relative deviation from a reference setting (the paper's
2000-step posterior-mean sampler); ``best_few_step`` picks the cheapest setting that stays within a
tolerance of the reference on every metric.

Sampling cost grows with pixels × steps, so a full 2000-step sweep over whole Lytro images costs CPU
hours; ``crop`` scores a central crop of each pair instead (MS-SSIM needs sides > 160 px). The curve
compares samplers on identical inputs, which is what the crop keeps.

``clamp_effect`` measures where the official code departs from the paper's Eq. 6 as printed: the
clamp of x̂0 to [−1, 1] at every step (``clip``), with and without it, from the same x_T.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import FusionFolder, center_crop, image_to_tensor, tensor_to_image
from .diffusion import Trajectory
from .fuse import fuse
from .metrics import evaluate as score_triple
from .metrics import psnr, ssim

__all__ = ["CURVE_STEPS", "curve_settings", "center_crop", "quality_cost_curve", "curve_table",
           "best_few_step", "CURVE_METRICS", "ClampRun", "clamp_effect", "clamp_table"]

CURVE_STEPS = (2000, 250, 50, 20, 10, 5)
CURVE_METRICS = ("QMI", "QG", "Qabf", "QP", "QE", "MS-SSIM")


def curve_settings(steps: Sequence[int] = CURVE_STEPS, sampler: str = "ddim",
                   reference: tuple[str, int] | None = ("posterior_mean", 2000)) -> list[tuple[str, int]]:
    """``[(sampler, k) for k in steps]`` with ``reference`` first (and not repeated)."""
    out = [] if reference is None else [(reference[0], int(reference[1]))]
    for k in steps:
        if (sampler, int(k)) not in out:  # the reference is already in ``out``
            out.append((sampler, int(k)))
    return out


def quality_cost_curve(fm, folder: str | Path, settings: Sequence[tuple[str, int]], *,
                       stems: Sequence[str] | None = None, crop: int | None = 176, seed: int = 0,
                       progress: bool = True) -> list[dict]:
    """Fuse each pair of ``folder`` with every ``(sampler, steps)`` of ``settings`` using the
    :class:`~rediffuse.fuse.FusionModel` ``fm`` (same seed, so the same x_T for every setting).

    Returns one row per (image, setting): ``image, sampler, steps, evaluations, seconds`` and the
    metrics of :func:`rediffuse.metrics.evaluate` (PSNR/SSIM too where ``GT/`` exists).
    """
    ds = FusionFolder(folder, stems=stems)
    rows: list[dict] = []
    bar = tqdm(total=len(ds.stems) * sum(k for _, k in settings), desc="curve", unit="eval",
               disable=not progress)
    for stem in ds.stems:
        imgs = {k: center_crop(v, crop) for k, v in ds.load(stem).items()}
        a, b = imgs[ds.sources[0]], imgs[ds.sources[1]]
        for sampler, k in settings:
            t0 = time.perf_counter()
            fused = fuse([a, b], fm, sampler=sampler, steps=k, seed=seed, tile=0)
            seconds = time.perf_counter() - t0
            row = {"image": stem, "sampler": sampler, "steps": int(k), "evaluations": int(k)}
            row.update(score_triple(a, b, fused, gt=imgs.get("GT")))
            row["seconds"] = seconds
            rows.append(row)
            bar.update(k)
    bar.close()
    return rows


def curve_table(rows: Sequence[dict], reference: tuple[str, int] | None = None,
                metrics: Sequence[str] = CURVE_METRICS) -> list[dict]:
    """Means per setting (in first-seen order) with ``max_rel_dev``: the largest
    |mean − reference mean| / |reference mean| over ``metrics`` (reference: the first setting)."""
    keys: list[tuple[str, int]] = []
    for r in rows:
        if (r["sampler"], r["steps"]) not in keys:
            keys.append((r["sampler"], r["steps"]))
    if not keys:
        raise ValueError("no rows to summarise")
    ref = tuple(reference) if reference else keys[0]
    if ref not in keys:
        raise ValueError(f"reference setting {ref} is not among the rows ({keys})")
    numeric = [m for m in rows[0] if m not in ("image", "sampler", "steps")]
    means = {}
    for key in keys:
        sel = [r for r in rows if (r["sampler"], r["steps"]) == key]
        means[key] = {m: float(np.mean([r[m] for r in sel])) for m in numeric}
        means[key]["pairs"] = len(sel)
    table = []
    for key in keys:
        dev = {m: abs(means[key][m] - means[ref][m]) / abs(means[ref][m]) for m in metrics if m in means[key]}
        row = {"sampler": key[0], "steps": key[1], **means[key],
               "max_rel_dev": max(dev.values()), "worst_metric": max(dev, key=dev.get)}
        table.append(row)
    return table


def best_few_step(table: Sequence[dict], max_evaluations: int = 20, tolerance: float = 0.01) -> dict | None:
    """The setting with the fewest evaluations (≤ ``max_evaluations``) whose every metric lies within
    ``tolerance`` (relative) of the reference; ``None`` when none does."""
    ok = [r for r in table if r["evaluations"] <= max_evaluations and r["max_rel_dev"] <= tolerance]
    return min(ok, key=lambda r: (r["evaluations"], r["max_rel_dev"])) if ok else None



@dataclass
class ClampRun:
    """One sampling run of :func:`clamp_effect`: the output and what the clamp did along the way.

    ``fused``: ``[1, H, W]`` as sampled (values outside [−1, 1] kept); ``out_of_range[i]``: fraction of
    the x̂0 values outside [−1, 1] at visited step ``timesteps[i]`` (before the clamp, when there is
    one) and ``x0_abs_max[i]`` the largest |x̂0| there; ``psnr``/``ssim`` against the ground truth on
    8 bits (the output clipped to 0–255, as saving it would).
    """

    image: str
    sampler: str
    steps: int
    clip: bool
    fused: torch.Tensor = field(repr=False)
    timesteps: list[int] = field(repr=False)
    out_of_range: list[float] = field(repr=False)
    x0_abs_max: list[float] = field(repr=False)
    psnr: float
    ssim: float
    seconds: float

    def row(self) -> dict:
        """The scalar results, for tables and JSON."""
        return {"image": self.image, "sampler": self.sampler, "steps": self.steps, "clip": self.clip,
                "PSNR": self.psnr, "SSIM": self.ssim, "x0_out_of_range": float(np.mean(self.out_of_range)),
                "first_x0_abs_max": self.x0_abs_max[0],
                "output_min": float(self.fused.min()), "output_max": float(self.fused.max()),
                "seconds": self.seconds}


@torch.no_grad()
def clamp_effect(fm, folder: str | Path, steps: Sequence[int], *, stems: Sequence[str] | None = None,
                 crop: int | None = 96, sampler: str = "posterior_mean", seed: int = 0) -> list[ClampRun]:
    """Fuse each pair of ``folder`` (it needs ``GT/``) at each step count with and without the x̂0 clamp,
    both from the same x_T.

    ``fm``: a :class:`~rediffuse.fusion_model.FusionModel`; its ``settings(sampler, k, clip=...)`` are run
    by :meth:`FusionModel.sample`, the one sampling path, with a :class:`~rediffuse.diffusion.Trajectory`
    watching every step (``on_step``). ``crop``: central crop side.
    Returns runs in the order image, steps, clip (True first).
    """
    ds = FusionFolder(folder, stems=stems)
    runs: list[ClampRun] = []
    for stem in ds.stems:
        imgs = {k: center_crop(v, crop) for k, v in ds.load(stem).items()}
        if "GT" not in imgs:
            raise ValueError(f"{folder}: {stem} has no ground truth (GT/); the clamp is scored against it")
        if min(imgs["GT"].shape[:2]) < fm.min_size:
            raise ValueError(f"crop {crop} is below the network's min_size {fm.min_size}")
        a, b = (image_to_tensor(imgs[src]) for src in ds.sources[:2])
        gt = tensor_to_image(image_to_tensor(imgs["GT"]))
        cond = torch.cat([a, b])[None].to(fm.device)
        shape = (1, 1, *a.shape[-2:])
        x_T = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(fm.device)
        for k in steps:
            for clip in (True, False):
                st = fm.settings(sampler, int(k), tile=0, seed=seed, clip=clip)
                traj = Trajectory(keep=1, steps=st.steps)  # every step's scalars, the first step's tensors
                t0 = time.perf_counter()
                out = fm.sample(cond, st, x_T=x_T, on_step=traj)
                seconds = time.perf_counter() - t0
                y = out[0].float().cpu()
                img = tensor_to_image(y)
                runs.append(ClampRun(stem, st.sampler, st.steps, st.clip, y, traj.timesteps, traj.out_of_range,
                                     traj.x0_abs_max, psnr(img, gt), ssim(img, gt), seconds))
    return runs


def clamp_table(runs: Sequence[ClampRun]) -> list[dict]:
    """Means over the images per (steps, clip): PSNR, SSIM, the mean fraction of x̂0 values outside
    [−1, 1] along the run, the largest |x̂0| at the first step, the output's range, and the largest
    pixel difference between the clamped and the unclamped output of the same image and step count
    (8-bit grey levels, outputs clipped to 0–255)."""
    table = []
    for k, clip in dict.fromkeys((r.steps, r.clip) for r in runs):
        sel = [r for r in runs if (r.steps, r.clip) == (k, clip)]
        twins = [(r, o) for r in sel for o in runs if (o.image, o.steps, o.clip) == (r.image, k, not clip)]
        diff = max((float(np.abs(tensor_to_image(r.fused).astype(float) - tensor_to_image(o.fused)).max())
                    for r, o in twins), default=float("nan"))
        table.append({"sampler": sel[0].sampler, "steps": k, "clip": clip,
                      "PSNR": float(np.mean([r.psnr for r in sel])), "SSIM": float(np.mean([r.ssim for r in sel])),
                      "x0_out_of_range": float(np.mean([np.mean(r.out_of_range) for r in sel])),
                      "first_x0_abs_max": max(r.x0_abs_max[0] for r in sel),
                      "output_min": min(float(r.fused.min()) for r in sel),
                      "output_max": max(float(r.fused.max()) for r in sel),
                      "max_diff_grey": diff, "pairs": len(sel)})
    return table
