"""What a weight map can reach, and what smoothing one does to the scores.

For every pair of a set, the model's weight map (``fuse(..., save_weights=...)``) is blended with
the sources as it is and after a guided filter (He et al., guide: source A; radius r, ε) — the
kind of smoothing GFF applies to its own maps. Sets with ground truth get reference rows: the
ground truth itself (``bench_quality.truth_scores``), and oracles that know the truth: the convex
weight of A and B closest to it at each pixel (over R, G and B), that map smoothed by the guided
filter (r=2), and the hard choice of the closer source per pixel and per 7×7 patch (how far a
decision with a little context can go). Prints the mean of the six no-reference metrics and, with
ground truth, PSNR/SSIM over the image and in the boundary band.

    python benchmarks/bench_weight_maps.py -m weights --sets Lytro boundary-val boundary-clean

Sets: a name under ../shared/data, ``boundary-val``/``boundary-clean`` (made as bench_quality makes
them) or a folder with A/ and B/ (and GT/, band/).
"""
from __future__ import annotations

import _common  # noqa: F401  (thread pools and sys.path first)

import tempfile
from pathlib import Path

import cv2
import numpy as np

from bench_quality import SYNTHETIC_SETS, boundary_set, truth_scores
from rediffuse.baselines import guided_filter
from rediffuse.fuse import FusionModel, fuse
from rediffuse.imageio import read_image, read_image_native
from rediffuse.metrics import band_scores, evaluate
from rediffuse.paths import dataset_dir

SMOOTHING = ((2, 1e-3), (4, 1e-4), (4, 1e-3), (8, 1e-2))  # (radius, ε) of the guided filter, intensities in [0, 1]


def blend(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``w·A + (1 − w)·B`` per channel, rounded to uint8; ``w`` ``[H, W]`` in [0, 1]."""
    ww = w[..., None] if a.ndim == 3 else w
    return np.clip(np.rint(ww * a.astype(np.float64) + (1 - ww) * b.astype(np.float64)), 0, 255).astype(np.uint8)


def oracle_weights(a: np.ndarray, b: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per pixel, the w in [0, 1] minimising ‖w·A + (1 − w)·B − GT‖² over the channels (0.5 where A = B)."""
    a, b, gt = (x.astype(np.float64).reshape(*x.shape[:2], -1) for x in (a, b, gt))
    d = a - b
    num, den = ((gt - b) * d).sum(-1), (d * d).sum(-1)
    return np.where(den > 0, np.clip(num / np.where(den > 0, den, 1), 0, 1), 0.5)


def oracle_choice(a: np.ndarray, b: np.ndarray, gt: np.ndarray, window: int = 1) -> np.ndarray:
    """1 where A is closer to the truth than B (squared error over the channels, summed over a
    ``window × window`` box), else 0: the best hard decision made from that much context."""
    ea, eb = ((x.astype(np.float64) - gt).reshape(*gt.shape[:2], -1) ** 2 for x in (a, b))
    ea, eb = ea.sum(-1), eb.sum(-1)
    if window > 1:
        ea, eb = (cv2.blur(e, (window, window), borderType=cv2.BORDER_REFLECT) for e in (ea, eb))
    return (ea < eb).astype(np.float64)


def _load(folder: Path, stem: str) -> dict:
    out = {}
    for key in ("A", "B", "GT", "band"):
        files = sorted((folder / key).glob(stem + ".*")) if (folder / key).is_dir() else []
        if files:
            out[key] = read_image(files[0])
    return out


def study(folder: Path, fm: FusionModel) -> dict[str, dict[str, float]]:
    rows: dict[str, list[dict]] = {}
    stems = sorted(p.stem for p in (folder / "A").iterdir())
    with tempfile.TemporaryDirectory() as tmp:
        for stem in stems:
            d = _load(folder, stem)
            fuse([d["A"], d["B"]], fm, save_weights=tmp)
            w = read_image_native(Path(tmp) / "weight-01.png").astype(np.float64) / 65535.0
            maps = {"model": w}
            guide = d["A"].astype(np.float64) / 255.0
            for r, eps in SMOOTHING:
                maps[f"model, guided filter r={r} ε={eps:g}"] = np.clip(guided_filter(guide, w, r, eps), 0, 1)
            if "GT" in d:
                ow = oracle_weights(d["A"], d["B"], d["GT"])
                maps["oracle weights (from the truth)"] = ow
                maps["oracle weights, guided filter r=2 ε=0.001"] = np.clip(guided_filter(guide, ow, 2, 1e-3), 0, 1)
                maps["oracle choice of A or B per pixel"] = oracle_choice(d["A"], d["B"], d["GT"])
                maps["oracle choice per 7×7 patch"] = oracle_choice(d["A"], d["B"], d["GT"], 7)
            for name, m in maps.items():
                fused = blend(d["A"], d["B"], m)
                s = evaluate(d["A"], d["B"], fused, d.get("GT"))
                if "band" in d:
                    s.update(band_scores(fused, d["GT"], d["band"]))
                rows.setdefault(name, []).append(s)
    table = {name: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for name, rs in rows.items()}
    if (folder / "GT").is_dir():
        table["ground truth"] = {k: v for k, v in truth_scores(folder).items() if k != "seconds"}
    return table


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("-m", "--model", default="weights", help="a weight-map model: shipped name or checkpoint")
    p.add_argument("--sets", nargs="+", default=["Lytro", "boundary-val", "boundary-clean"], metavar="SET")
    args = p.parse_args()
    _common.setup(args)
    fm = FusionModel(args.model)
    if fm.prediction != "weights":
        raise SystemExit(f"{args.model} predicts {fm.prediction!r}; this study needs a weight-map model")
    results = {}
    for name in args.sets:
        folder = (boundary_set(60, 256, name == "boundary-val") if name in SYNTHETIC_SETS
                  else Path(name) if Path(name).is_dir() else dataset_dir(name))
        if folder is None or not Path(folder).is_dir():
            print(f"skipping {name}: not present")
            continue
        table = study(Path(folder), fm)
        results[name] = table
        cols = list(next(iter(table.values())).keys())
        print(f"\n**{name}** ({fm.path.name})\n\n| weights | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
        for row, vals in table.items():
            print(f"| {row} | " + " | ".join(f"{vals[c]:.4f}" if c in vals else "" for c in cols) + " |")
    tables = {}
    for name, table in results.items():
        cols = list(dict.fromkeys(c for row in table.values() for c in row))
        rows = [{"id": row, "weights": row, **{c: vals.get(c) for c in cols}} for row, vals in table.items()]
        tables[name] = _common.table([("weights", "weights", ""), *[(c, c, ".4f") for c in cols]], rows)
    _common.write_record(args.json, tables, results=results, meta=_common.run_meta(args.threads))


if __name__ == "__main__":
    main()
