"""Where the spurious gradient fraction (SGF) of the default model fires on a pair set, and why.

    python benchmarks/probe_sgf_sites.py [--set Lytro | --stack real-stacks/pcb-10] [--checkpoint weights]
                                          [--json OUT.json]

For every pair of ``../shared/data/<set>`` (A/, B/), or for the one stack of frames in
``../shared/data/<stack>`` (registered as ``rediffuse fuse`` does, ``align="auto"``), fuses it with
the library defaults, lists the pixels the SGF counts (``|∇F| > max_i |∇S_i| + margin`` after the
Gaussian, as ``rediffuse.metrics.spurious_gradient_fraction``; a stack's frames as registered), by
how much each exceeds the margin, and the spread of the weight maps around it (largest minus
smallest weight in the 9×9 window, the largest over the frames). A spread near
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

from rediffuse.fuse import FusionModel, fuse, load_stack_image
from rediffuse.imageio import read_image
from rediffuse.metrics import _gray64
from rediffuse.metrics.gradient import SPURIOUS_MARGIN, SPURIOUS_SIGMA, _smoothed_gradient
from rediffuse.paths import dataset_dir
from rediffuse.stack import FrameReader


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--set", default="Lytro", help="a pair set under ../shared/data (A/, B/)")
    p.add_argument("--stack", default=None, help="a folder of one stack's frames under ../shared/data instead")
    p.add_argument("--checkpoint", default="weights")
    args = p.parse_args()
    _common.setup(args)
    name = args.stack or args.set
    root = dataset_dir(name)
    if root is None:
        print(f"skipping: ../shared/data/{name} not present")
        return
    fm = FusionModel(args.checkpoint)
    sites, pixels = [], 0
    if args.stack:
        paths = sorted(p for p in root.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif"))
        frames = FrameReader(lambda i: (load_stack_image(paths[i]), 8), [str(p) for p in paths])
        frames.survey("auto")
        registered = [np.clip(np.rint(frames.frame(i)[0]), 0, 255).astype(np.uint8) for i in range(len(paths))]
        jobs = [(root.name, [str(p) for p in paths], registered, "auto")]
    else:
        jobs = []
        for a_path in sorted((root / "A").iterdir()):
            ab = [read_image(a_path), read_image(next((root / "B").glob(a_path.stem + ".*")))]
            jobs.append((a_path.stem, ab, ab, "none"))
    for label, inputs, sources, align in jobs:
        with tempfile.TemporaryDirectory() as tmp:
            f = fuse(inputs, fm, align=align, save_weights=tmp)
            spread = None
            for wp in sorted(Path(tmp).glob("*.png")):
                w = np.asarray(Image.open(wp)).astype(np.float64) / 65535
                s = ndimage.maximum_filter(w, 9) - ndimage.minimum_filter(w, 9)
                spread = s if spread is None else np.maximum(spread, s)
        most = np.zeros(f.shape[:2])
        for k, src in enumerate(sources):
            np.maximum(most, _smoothed_gradient(_gray64(src, f"source {k + 1}"), SPURIOUS_SIGMA), out=most)
        excess = _smoothed_gradient(_gray64(f, "F"), SPURIOUS_SIGMA) - most - SPURIOUS_MARGIN
        pixels += excess.size
        for y, x in zip(*np.nonzero(excess > 0)):
            sites.append({"pair": label, "y": int(y), "x": int(x), "excess": float(excess[y, x]),
                          "weight_spread": float(spread[y, x])})
    print(f"{name}: {len(sites)} counted pixels of {pixels:,} ({100 * len(sites) / pixels:.4f} %)")
    for s in sites[:40]:
        print(f"  {s['pair']} ({s['y']}, {s['x']}): {s['excess']:.2f} grey levels/px over the margin, "
              f"weight spread {s['weight_spread']:.2f}")
    if sites:
        spreads = np.array([s["weight_spread"] for s in sites])
        print(f"weight spread at the {len(sites)} counted pixels: min {spreads.min():.2f}, quartiles "
              f"{np.percentile(spreads, 25):.2f} / {np.median(spreads):.2f} / {np.percentile(spreads, 75):.2f}; "
              f"{int((spreads >= 0.9).sum())} at 0.9 or more; largest excess {max(s['excess'] for s in sites):.2f}")
    _common.write_json(args.json, {"set": name, "checkpoint": args.checkpoint, "pixels": pixels, "sites": sites})


if __name__ == "__main__":
    main()
