"""Draw ``docs/figures/pcb10_crops.png``: the real stack ``pcb-10`` fused by ``rediffuse fuse`` (its
defaults: alignment check, evidence fill, shared stack budget; left) and by ``align_image_stack -m``
+ enfuse (right), three crops of 480×320 pixels copied at 1:1 (rows: flat board beside text, a white
line blurred in most frames, the switch's edge before the board), and ``pcb10_depth.png``,
rediffuse's depth map.

    python docs/make_stack_figure.py [--threads 2]

Needs ``../shared/data/real-stacks/pcb-10`` and Hugin's ``align_image_stack`` and ``enfuse``. The
crops are fixed places chosen to show the three kinds of region the stack has: flat board beside
silkscreen text, a white line blurred in most frames, and the switch's edge before the board.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common  # noqa: E402  (first: thread pools, sys.path)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from PIL import Image  # noqa: E402

from bench_stacks import enfuse_stack  # noqa: E402
from rediffuse.fuse import fuse  # noqa: E402
from rediffuse.imageio import write_image  # noqa: E402
from rediffuse.paths import dataset_dir  # noqa: E402
from rediffuse.viz import save_figure  # noqa: E402

OUT = _common.REPO_ROOT / "docs" / "figures"
# (top, left) of 320×480 crops of the 1536×2048 frames
CROPS = {"board beside text": (60, 0), "white line blurred in most frames": (1216, 560),
         "switch edge before the board": (380, 560)}
SIZE = (320, 480)


def main() -> None:
    p = _common.parser(__doc__, threads=2)
    args = p.parse_args()
    _common.setup(args)
    folder = dataset_dir("real-stacks/pcb-10")
    if folder is None:
        raise SystemExit("pcb-10 not found: ../shared/data/real-stacks/pcb-10")
    paths = sorted(folder.glob("*.JPG"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours = fuse([str(p) for p in paths], align="auto", depth_map=tmp / "depth.png")
        depth = np.asarray(Image.open(tmp / "depth.png"))
        enfuse_stack(paths, tmp / "enfuse.tif")
        theirs = tifffile.imread(tmp / "enfuse.tif")[..., :3].astype(np.uint8)
    h, w = SIZE
    gap = 8  # white pixels between panels
    rows = []
    for t, l in CROPS.values():  # each row: rediffuse | enfuse, pixel for pixel (no resampling)
        pair = [ours[t:t + h, l:l + w], np.full((h, gap, 3), 255, np.uint8), theirs[t:t + h, l:l + w]]
        rows += [np.concatenate(pair, 1), np.full((gap, 2 * w + gap, 3), 255, np.uint8)]
    write_image(OUT / "pcb10_crops.png", np.concatenate(rows[:-1], 0))
    fig, ax = plt.subplots(figsize=(6, 4.6), dpi=100)
    ax.imshow(depth, cmap="viridis")
    ax.set_axis_off()
    ax.set_title("rediffuse depth map of pcb-10 (frame 1 dark … frame 10 bright)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, OUT, "pcb10_depth")
    plt.close(fig)
    print("wrote", OUT / "pcb10_crops.png", OUT / "pcb10_depth.png")


if __name__ == "__main__":
    main()
