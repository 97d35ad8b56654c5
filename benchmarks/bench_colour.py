"""How a luminance model colours its result: its weights applied to R, G and B, or the paper's chroma rule.

    python benchmarks/bench_colour.py [-m weights] [--pairs 20] [--threads 1] [--json OUT.json]

Fuses every Lytro pair once per colour rule with the same model and settings (``rediffuse.fuse.fuse``
with ``colour="weights"`` and ``colour="paper"``: the same weight maps, so only the colouring
differs) and prints the mean of the six metrics for each, and how many grey levels the two results
differ by. Needs ``../shared/data/Lytro``.
"""
from __future__ import annotations

import _common  # first: thread pools and sys.path

import sys

import numpy as np
from tqdm.auto import tqdm

from rediffuse import metrics as M
from rediffuse.fuse import FusionModel, fuse
from rediffuse.imageio import read_image
from rediffuse.paths import dataset_dir

KEYS = ("QMI", "QG", "Qabf", "QP", "QE", "MS-SSIM")


def main() -> int:
    p = _common.parser(__doc__)
    p.add_argument("-m", "--model", default="weights", help="shipped model name or checkpoint (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=20, help="first N Lytro pairs (default: %(default)s)")
    args = p.parse_args()
    _common.setup(args)
    lytro = dataset_dir("Lytro")
    if lytro is None:
        print("bench_colour: ../shared/data/Lytro is not present; nothing to measure", file=sys.stderr)
        return 1
    fm = FusionModel.from_pretrained(args.model)
    stems = sorted(q.stem for q in (lytro / "A").iterdir())[: args.pairs]
    scores = {"weights": [], "paper": []}
    grey_diff = []
    for stem in tqdm(stems, desc="pairs"):
        a, b = (read_image(next((lytro / side).glob(f"{stem}.*"))) for side in ("A", "B"))
        out = {mode: fuse([a, b], fm, colour=mode) for mode in scores}
        for mode, f in out.items():
            scores[mode].append(M.evaluate(a, b, f))
        ga, gb = (M.to_gray_uint8(out[m]).astype(int) for m in ("weights", "paper"))
        grey_diff.append(np.abs(ga - gb).mean())
    means = {mode: {k: float(np.mean([r[k] for r in rows])) for k in KEYS} for mode, rows in scores.items()}
    print(f"\n{fm.path.name}, {len(stems)} Lytro pairs, mean |grey difference| between the two: "
          f"{np.mean(grey_diff):.3f} levels\n")
    print("| colour | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS))
    for mode, row in means.items():
        print(f"| {mode} | " + " | ".join(f"{row[k]:.4f}" for k in KEYS) + " |")
    cols = [("colour", "colour", ""), *[(k, k, ".4f") for k in KEYS]]
    rows = [{"id": mode, "colour": mode, **row} for mode, row in means.items()]
    _common.write_record(args.json, {"colour": _common.table(cols, rows)},
                         values={"model": fm.path.name, "pairs": len(stems),
                                 "mean_grey_difference": float(np.mean(grey_diff))},
                         results={"pairs": stems, "means": means}, meta=_common.run_meta(args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
