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
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from .data import FusionFolder, center_crop
from .fuse import fuse
from .metrics import evaluate as score_triple

__all__ = ["CURVE_STEPS", "curve_settings", "center_crop", "quality_cost_curve", "curve_table",
           "best_few_step", "CURVE_METRICS"]

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
