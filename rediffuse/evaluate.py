"""Score fusion methods on a dataset folder and build the Lytro leaderboard.

A *method* is a classical baseline name (``"gff"``, ``"average"``, …) or a checkpoint path (``*.pt``)
with a sampler and step count. ``evaluate_folder`` fuses every pair, scores it with
``rediffuse.metrics`` and writes::

    OUT/<method>/fused/<stem>.png   the fused images
    OUT/per_image.csv               one row per (image, method)
    OUT/summary.md                  the mean table (markdown)

For Lytro, ``leaderboard`` puts our means next to the 18 published methods of Liu et al. (2020),
scored by the reference MATLAB toolbox on the same source images; our metric code reproduces that
toolbox (``tests/test_metrics.py``), so the rows are comparable.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .baselines import BASELINES, get_baseline
from .data import FusionFolder
from .fuse import SHIPPED_MODELS, FusionModel, fuse
from .groups import rotate_image
from .imageio import read_image, write_image
from .metrics import band_scores
from .metrics import evaluate as score_triple
from .peers import PEERS, get_peer
from .paths import reference_dir

__all__ = ["Method", "make_method", "evaluate_folder", "fused_path", "mean_table", "leaderboard", "markdown_table",
           "LEADERBOARD_METRICS"]

LEADERBOARD_METRICS = ("QMI", "QG", "QP", "QE")  # the columns the reference CSV shares with ours


@dataclass
class Method:
    name: str
    fuse: Callable[[list[np.ndarray]], np.ndarray]


def make_method(spec: str, *, sampler: str | None = None, steps: int | None = None, device: str = "cpu",
                seed: int = 0, name: str | None = None) -> Method:
    """A baseline by name, or a checkpoint (a path ending in ``.pt`` or a ``fuse.SHIPPED_MODELS`` name)
    with its sampler settings."""
    if spec in BASELINES:
        return Method(name or spec, get_baseline(spec))
    if spec in PEERS:
        return Method(name or spec, get_peer(spec))
    if spec.endswith(".pt") or Path(spec).is_file() or spec in SHIPPED_MODELS:
        fm = FusionModel(spec, device=device)
        st = fm.settings(sampler, steps, seed=seed)  # validated once, before any image is fused
        # a run's checkpoint is <run>/last.pt: its folder says which run it is
        stem = fm.path.parent.name if fm.path.stem == "last" else fm.path.stem
        label = name or f"{stem} ({st.sampler}, {st.steps} steps)"
        return Method(label, lambda imgs: fuse(imgs, fm, sampler=st.sampler, steps=st.steps, seed=st.seed))
    raise ValueError(f"unknown method {spec!r}: use a baseline ({', '.join(sorted(BASELINES))}), "
                     f"a peer program ({', '.join(PEERS)}), a shipped model ({', '.join(SHIPPED_MODELS)}) or a checkpoint file (*.pt)")


def fused_path(out_dir: str | Path, method: str, stem: str) -> Path:
    """Where ``evaluate_folder`` writes the fused image of ``stem`` by ``method``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in method).strip("_")
    return Path(out_dir) / safe / "fused" / f"{stem}.png"


def evaluate_folder(folder: str | Path, methods: Sequence[Method], out_dir: str | Path | None = None, *,
                    stems: Sequence[str] | None = None, limit: int | None = None, save_images: bool = True,
                    progress: bool = True) -> list[dict]:
    """Fuse and score every item of ``folder`` (``A/``, ``B/``, optional ``GT/``) with each method.

    Returns rows ``{"image", "method", "QMI", "QG", "Qabf", "QP", "QE", "MS-SSIM", ["PSNR", "SSIM"],
    ["PSNR-band", "SSIM-band"], "seconds"}`` (the band scores where ``folder/band/<stem>.png`` marks
    the pixels near focus boundaries, as synthetic validation sets do); with ``out_dir`` also writes fused images, ``per_image.csv`` and ``summary.md``.
    Only the first two sources of a stack are scored (the metrics are defined for pairs).
    """
    names = [m.name for m in methods]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two methods share the name {dup[0]!r}; give them different names (e.g. rename "
                         "the checkpoint files or their run folders)")
    ds = FusionFolder(folder, stems=stems)
    items = ds.stems[:limit] if limit else ds.stems
    out = Path(out_dir) if out_dir else None
    rows: list[dict] = []
    bar = tqdm(total=len(items) * len(methods), desc="evaluate", unit="img", disable=not progress)
    for stem in items:
        imgs = ds.load(stem)
        sources = [imgs[k] for k in ds.sources]
        band_file = Path(folder) / "band" / f"{stem}.png"
        band = read_image(band_file) if band_file.is_file() else None
        for method in methods:
            t0 = time.perf_counter()
            fused = method.fuse(sources)
            seconds = time.perf_counter() - t0
            row = {"image": stem, "method": method.name}
            row.update(score_triple(sources[0], sources[1], fused, gt=imgs.get("GT")))
            if band is not None and "GT" in imgs:
                row.update(band_scores(fused, imgs["GT"], band))
            row["seconds"] = seconds
            rows.append(row)
            if out is not None and save_images:
                write_image(fused_path(out, method.name, stem), fused)
            bar.update(1)
    bar.close()
    if out is not None:
        write_rows(out / "per_image.csv", rows)
        table = mean_table(rows)
        (out / "summary.md").write_text(markdown_table(table, title=f"Means over {len(items)} images of {Path(folder).name}"))
    return rows


def write_rows(path: str | Path, rows: Sequence[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def mean_table(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """``{method: {metric: mean over images}}`` (NaNs ignored), methods in first-seen order."""
    table: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        d = table.setdefault(r["method"], {})
        for k, v in r.items():
            if k in ("image", "method") or not isinstance(v, (int, float)):
                continue
            d.setdefault(k, []).append(float(v))
    return {m: {k: (float(np.nanmean(v)) if not all(math.isnan(x) for x in v) else math.nan) for k, v in d.items()}
            for m, d in table.items()}


def leaderboard(ours: dict[str, dict[str, float]], reference_csv: str | Path | None = None,
                images: Sequence[str] | None = None) -> list[dict]:
    """Published methods (means over the same images) and ours, sorted by QMI, best first.

    Each row: ``{"method", "source" ("published" or "ours"), QMI, QG, QP, QE}``.
    """
    if reference_csv is None:
        ref = reference_dir()
        if ref is None:
            raise FileNotFoundError("the reference tables (../shared/reference/liu2020-benchmark) are not present")
        reference_csv = ref / "reference_lytro.csv"
    with open(reference_csv) as f:
        ref_rows = list(csv.DictReader(f))
    if images is not None:
        keep = set(images)
        ref_rows = [r for r in ref_rows if r["image"] in keep]
    published: dict[str, dict[str, list[float]]] = {}
    for r in ref_rows:
        d = published.setdefault(r["method"], {})
        for k in LEADERBOARD_METRICS:
            d.setdefault(k, []).append(float(r[k]))
    board = [{"method": m, "source": "published", **{k: float(np.mean(v)) for k, v in d.items()}}
             for m, d in published.items()]
    board += [{"method": m, "source": "ours", **{k: d.get(k, math.nan) for k in LEADERBOARD_METRICS}}
              for m, d in ours.items()]
    return sorted(board, key=lambda r: -r["QMI"])


def markdown_table(table: dict[str, dict[str, float]] | list[dict], title: str = "", digits: int = 4) -> str:
    """A markdown table from ``mean_table`` output or from ``leaderboard`` rows."""
    if isinstance(table, dict):
        rows = [{"method": m, **v} for m, v in table.items()]
    else:
        rows = list(table)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if isinstance(v, float):
                v = "–" if math.isnan(v) else (f"{v:.2f}" if c in ("PSNR", "seconds") else f"{v:.{digits}f}")
            cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fusion_equivariance_maps(fm, y_a, y_b, ks: Sequence[int] = (1, 2, 3), steps: int | None = None,
                             seed: int = 0) -> dict[int, np.ndarray]:
    """``|Φ(rot I) − rot Φ(I)|`` of a trained fusion model, per quarter turn ``k``.

    ``fm`` is a ``fuse.FusionModel``; ``y_a``, ``y_b`` are ``[1, 1, H, W]`` in [-1, 1]. The sampler's
    starting noise is rotated together with the sources, so any error comes from the network itself.
    Maps are ``[H, W]`` in grey levels (0–255 scale).
    """
    st = fm.settings(steps=steps, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(y_a.shape, generator=g)

    def run(a, b, noise):
        return fm.sample(torch.cat([a, b], 1), st, x_T=noise).cpu()

    base = run(y_a, y_b, x_T)
    maps = {}
    for k in ks:
        out = run(rotate_image(y_a, k), rotate_image(y_b, k), rotate_image(x_T, k))
        maps[k] = (127.5 * (out - rotate_image(base, k)).abs())[0, 0].double().numpy()
    return maps
