"""Redraw the README's opening figure, ``docs/figures/fusion_example.png``.

    python docs/make_figures.py [--set boundary-clean|boundary-val] [-m weights] [--threads 1]

A held-out pair with ground truth: one of the synthetic boundary sets (rendered from the 59
validation photos by the layered defocus model, never seen in training; written to
``data/generated/`` from ``../shared/data/photos`` when missing), fused by the model and by GFF. The
pair is not picked for looks: every pair is fused by both, and the one shown is the pair whose
band-PSNR lead of the model over GFF is the median of the set. Below each image: its error against
the truth (``viz.evaluation.truth_error_view``); titles carry PSNR against the truth over the image
and in the 15-px band around the focus boundaries.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common  # noqa: E402  (first: thread pools, sys.path)

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

OUT = _common.REPO_ROOT / "docs" / "figures" / "fusion_example.png"


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--set", choices=["boundary-clean", "boundary-val"], default="boundary-clean")
    p.add_argument("-m", "--model", default="weights", help="shipped model name or checkpoint (default: weights)")
    p.add_argument("-o", "--out", default=str(OUT), help="figure to write (default: %(default)s)")
    args = p.parse_args()
    _common.setup(args)

    from bench_quality import boundary_set

    from rediffuse.evaluate import make_method
    from rediffuse.imageio import read_image
    from rediffuse.metrics import band_scores, psnr
    from rediffuse.viz import save_figure
    from rediffuse.viz.evaluation import truth_error_view

    folder = boundary_set(60, 256, nuisances=args.set == "boundary-val")
    if folder is None:
        sys.exit("make_figures: the boundary sets are rendered from ../shared/data/photos, which is not here")
    model, gff = make_method(args.model, name="model"), make_method("gff")
    pairs = []
    for gt_path in tqdm(sorted((folder / "GT").glob("*.png")), desc="fusing", unit="pair"):
        stem = gt_path.stem
        a, b = (read_image(folder / k / f"{stem}.png") for k in ("A", "B"))
        gt, band = read_image(gt_path), read_image(folder / "band" / f"{stem}.png") > 0
        fused = {"model": model.fuse([a, b]), "GFF": gff.fuse([a, b])}
        scores = {n: {"PSNR": psnr(f, gt), **band_scores(f, gt, band)} for n, f in fused.items()}
        pairs.append((scores["model"]["PSNR-band"] - scores["GFF"]["PSNR-band"], stem, a, b, gt, band, fused, scores))
    pairs.sort(key=lambda t: t[0])
    lead, stem, a, b, gt, band, fused, scores = pairs[len(pairs) // 2]  # the upper median
    print(f"{folder.name}: the model leads GFF in the band by {np.median([t[0] for t in pairs]):.2f} dB "
          f"(median over {len(pairs)} pairs; shown: {stem}, {lead:.2f} dB)")
    images = {"source A": a, "source B": b, "GFF": fused["GFF"], f"model ({args.model})": fused["model"],
              "ground truth": gt}
    shown = {"GFF": scores["GFF"], f"model ({args.model})": scores["model"]}
    shown = {n: {"PSNR": r["PSNR"], "PSNR in band": r["PSNR-band"]} for n, r in shown.items()}
    fig = truth_error_view(images, gt, band, scores=shown)
    fig.suptitle(f"held-out pair {stem} ({folder.name}, the median of {len(pairs)} pairs by the model's lead in the "
                 "band); bottom: error against the truth, the 15-px focus-boundary band outlined", fontsize=9)
    out = Path(args.out)
    print("wrote", save_figure(fig, out.parent, out.stem))


if __name__ == "__main__":
    main()
