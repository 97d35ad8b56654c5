"""Where the spurious gradient fraction (SGF) of the default model fires on a pair set, and why.

    python benchmarks/probe_sgf_sites.py [--set Lytro] [--checkpoint weights] [--json OUT.json]

For every pair of ``../shared/data/<set>`` (A/, B/), fuses it with the library defaults, lists the
pixels the SGF counts (``|∇F| > max(|∇A|, |∇B|) + margin`` after the Gaussian, as
``rediffuse.metrics.spurious_gradient_fraction``), by how much each exceeds the margin, and the
spread of the weight map around it (largest minus smallest weight in the 9×9 window). A spread near
1 puts the pixel on a focus boundary: where a sharp foreground edge meets a background that only the
other source shows sharp, the all-in-focus image has an edge that neither source has, and counting
it is the metric's limit, not a blotch. Flat-region blotches sit where the weights are uncertain
(spread well below 1).
"""
from __future__ import annotations

import _common  # noqa: F401  (thread pools and sys.path first)

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from rediffuse.fuse import FusionModel, fuse
from rediffuse.imageio import read_image
from rediffuse.metrics import _gray64
from rediffuse.metrics.gradient import SPURIOUS_MARGIN, SPURIOUS_SIGMA, _smoothed_gradient
from rediffuse.paths import dataset_dir


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--set", default="Lytro")
    p.add_argument("--checkpoint", default="weights")
    args = p.parse_args()
    _common.setup(args)
    root = dataset_dir(args.set)
    if root is None:
        print(f"skipping: ../shared/data/{args.set} not present")
        return
    fm = FusionModel(args.checkpoint)
    sites, pixels = [], 0
    for a_path in sorted((root / "A").iterdir()):
        a, b = read_image(a_path), read_image(next((root / "B").glob(a_path.stem + ".*")))
        with tempfile.TemporaryDirectory() as tmp:
            f = fuse([a, b], fm, save_weights=tmp)
            w = np.asarray(Image.open(sorted(Path(tmp).glob("*.png"))[0])).astype(np.float64) / 65535
        most = np.maximum(_smoothed_gradient(_gray64(a, "A"), SPURIOUS_SIGMA),
                          _smoothed_gradient(_gray64(b, "B"), SPURIOUS_SIGMA))
        excess = _smoothed_gradient(_gray64(f, "F"), SPURIOUS_SIGMA) - most - SPURIOUS_MARGIN
        spread = ndimage.maximum_filter(w, 9) - ndimage.minimum_filter(w, 9)
        pixels += excess.size
        for y, x in zip(*np.nonzero(excess > 0)):
            sites.append({"pair": a_path.stem, "y": int(y), "x": int(x), "excess": float(excess[y, x]),
                          "weight_spread": float(spread[y, x])})
    print(f"{args.set}: {len(sites)} counted pixels of {pixels:,} ({100 * len(sites) / pixels:.4f} %)")
    for s in sites:
        print(f"  {s['pair']} ({s['y']}, {s['x']}): {s['excess']:.2f} grey levels/px over the margin, "
              f"weight spread {s['weight_spread']:.2f}")
    if sites:
        spreads = np.array([s["weight_spread"] for s in sites])
        print(f"weight spread at the counted pixels: min {spreads.min():.2f}, median {np.median(spreads):.2f}; "
              f"largest excess {max(s['excess'] for s in sites):.2f}")
    _common.write_json(args.json, {"set": args.set, "checkpoint": args.checkpoint, "pixels": pixels, "sites": sites})


if __name__ == "__main__":
    main()
