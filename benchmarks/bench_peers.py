"""rediffuse next to the tools focus stackers use, timed on the same images in one run; and the peak
memory of a long focus stack fused by `rediffuse fuse`.

    python benchmarks/bench_peers.py [--part time|stack|all] [--large] [--size WxH] [--stack-frames N]
                                     [--stack-size WxH] [--steps K] [--threads 1] [--json OUT.json]

1. ``time``: the Lytro pair lytro-01 (520×520, from ../shared) and a synthetic colour pair of
   ``--size`` (default 1500×1000; ``--large``: 6000×4000, 24 MP), fused in this process by
   rediffuse (the shipped model: a pair with one network run, as by default, and with
   ``symmetric=True``, two runs), GFF (``rediffuse.baselines.gff``) and enfuse (``rediffuse.peers``,
   when installed; its time includes writing and reading its files, as a user pays it). Prints the
   seconds and each tool's time relative to rediffuse.
2. ``stack``: a synthetic colour focus stack of ``--stack-frames`` frames of ``--stack-size``
   (default 5 of 1000×750; ``--large``: 20 of 6000×4000), each focused on another depth layer and
   magnified by 0.1 % more than the one before (focus breathing), written as JPEG and fused by
   ``rediffuse fuse`` in a child process with its defaults (alignment check, order-independent
   fusion, frames streamed) and a depth map. Prints the wall time and the child's peak resident
   memory (``ru_maxrss`` from ``os.wait4``), against the 4 GB budget for 20 frames of 24 MP.

The model is ``rediffuse.fuse.DEFAULT_CHECKPOINT`` unless ``--checkpoint`` names another; threads
default to 1 (the fastest for small models on the project's 2-core machines).
"""
from __future__ import annotations

import _common  # first: thread pools and sys.path

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from bench_fuse import make_pair

BUDGET_GB = 4.0


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def part_time(ckpt: str | None, size: tuple[int, int], steps: int | None) -> dict:
    from rediffuse.baselines import gff
    from rediffuse.fuse import FusionModel, fuse
    from rediffuse.imageio import read_image
    from rediffuse.paths import dataset_dir
    from rediffuse.peers import enfuse, peer_available

    fm = FusionModel(ckpt)
    pairs = {}
    lytro = dataset_dir("Lytro")
    if lytro is not None:
        pairs["Lytro lytro-01 520×520"] = [read_image(lytro / k / "lytro-01.jpg") for k in ("A", "B")]
    w, h = size
    a, b, _ = make_pair(h, w)
    pairs[f"synthetic {w}×{h}"] = [a, b]
    del a, b
    methods = {
        "rediffuse (pair, 1 run)": lambda imgs: fuse(imgs, fm, steps=steps),
        "rediffuse --symmetric (2 runs)": lambda imgs: fuse(imgs, fm, steps=steps, symmetric=True),
        "GFF": gff,
    }
    if peer_available("enfuse"):
        methods["enfuse"] = enfuse
    rows = []
    for pname, imgs in pairs.items():
        for mname, fn in methods.items():
            _, sec = _timed(fn, imgs)
            rows.append(dict(images=pname, method=mname, seconds=sec))
    print(f"\nWall time on the same images, checkpoint {fm.path.name}, this machine's CPU (ratio = time / "
          "rediffuse's)\n")
    print("| images | method | seconds | ratio to rediffuse |")
    print("|---|---|---|---|")
    for r in rows:
        ref = next(x["seconds"] for x in rows if x["images"] == r["images"] and x["method"].startswith("rediffuse ("))
        r["ratio"] = r["seconds"] / ref
        print(f"| {r['images']} | {r['method']} | {r['seconds']:.2f} | {r['ratio']:.3f} |")
    if "enfuse" not in methods:
        print("\n(enfuse is not installed: apt-get install enfuse)")
    return dict(checkpoint=str(fm.path), rows=rows)


def write_stack(folder: Path, frames: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """``frames`` JPEG frames of one scene: frame k sharp in depth layer k (a smooth random field cut
    into ``frames`` bands) and blurred elsewhere, magnified by 0.1 %·k about the centre. Made one
    at a time with Pillow, so a 24-MP stack costs little memory to write."""
    w, h = size
    gt, _, _ = make_pair(h, w, seed=seed)
    gt_img = Image.fromarray(gt)
    del gt
    blurred = gt_img.filter(ImageFilter.GaussianBlur(4))
    rng = np.random.default_rng(seed)
    # a 12×16 random field upsampled bicubically: smooth depth layers of a few blobs each
    field = np.asarray(Image.fromarray(rng.random((12, 16)).astype(np.float32)).resize((w // 8, h // 8), Image.BICUBIC))
    edges = np.quantile(field, np.linspace(0, 1, frames + 1))
    paths = []
    for k in range(frames):
        band = ((field >= edges[k]) & (field <= edges[k + 1])).astype(np.uint8) * 255
        mask = Image.fromarray(band).resize((w, h), Image.BILINEAR).filter(ImageFilter.GaussianBlur(3))
        frame = Image.composite(gt_img, blurred, mask)
        s = 1.0 + 0.001 * k  # focus breathing: frame k shows the scene 0.1 %·k larger
        cx, cy = (w - 1) / 2, (h - 1) / 2
        frame = frame.transform((w, h), Image.AFFINE, (1 / s, 0, cx - cx / s, 0, 1 / s, cy - cy / s), Image.BICUBIC)
        paths.append(folder / f"frame{k:02d}.jpg")
        frame.save(paths[-1], quality=95)
        del frame, mask
    return paths


def part_stack(ckpt: str | None, frames: int, size: tuple[int, int], steps: int | None, threads: int) -> dict:
    from rediffuse.fuse import DEFAULT_CHECKPOINT

    w, h = size
    with tempfile.TemporaryDirectory(prefix="bench_peers_") as d:
        d = Path(d)
        t0 = time.perf_counter()
        paths = write_stack(d, frames, size)
        made = time.perf_counter() - t0
        code, wall, rss_kb = _common.run_fuse_cli(paths, d / "fused.png", threads=threads, steps=steps,
                                                  checkpoint=ckpt or DEFAULT_CHECKPOINT,
                                                  extra=("--depth-map", str(d / "depth.png")))
        ok = code == 0 and (d / "fused.png").is_file() and (d / "depth.png").is_file()
    peak_gb = rss_kb / 1024 ** 2
    verdict = "within" if peak_gb <= BUDGET_GB else "OVER"
    print(f"\n{frames}-frame {w}×{h} colour stack (JPEG, written in {made:.0f} s), `rediffuse fuse` with a depth map, "
          f"CPU, {threads} thread(s): exit {code}, output {'ok' if ok else 'MISSING'}, wall {wall:.0f} s, "
          f"peak RSS {peak_gb:.2f} GB ({verdict} the {BUDGET_GB:.0f} GB budget)")
    return dict(frames=frames, size=[w, h], exit=code, ok=ok, wall_s=wall, peak_rss_gb=peak_gb, threads=threads,
                steps=steps)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--part", choices=["time", "stack", "all"], default="all")
    p.add_argument("--large", action="store_true",
                   help="24 MP: a 6000×4000 pair and a stack of 20 frames of 6000×4000 (long on a CPU)")
    p.add_argument("--size", type=_size, default=None, metavar="WxH",
                   help="the synthetic pair (default 1500x1000; 6000x4000 with --large)")
    p.add_argument("--stack-frames", type=int, default=None, metavar="N", help="default 5; 20 with --large")
    p.add_argument("--stack-size", type=_size, default=None, metavar="WxH",
                   help="default 1000x750; 6000x4000 with --large")
    p.add_argument("--checkpoint", default=None, help="default: rediffuse.fuse.DEFAULT_CHECKPOINT")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's)")
    args = p.parse_args(argv)
    _common.setup(args)
    size = args.size or ((6000, 4000) if args.large else (1500, 1000))
    stack_frames = args.stack_frames or (20 if args.large else 5)
    stack_size = args.stack_size or ((6000, 4000) if args.large else (1000, 750))
    results = {}
    if args.part in ("time", "all"):
        results["time"] = part_time(args.checkpoint, size, args.steps)
    if args.part in ("stack", "all"):
        results["stack"] = part_stack(args.checkpoint, stack_frames, stack_size, args.steps, args.threads)
    _common.write_json(args.json, results)
    stack = results.get("stack", {})
    return 0 if stack.get("ok", True) and stack.get("peak_rss_gb", 0) <= BUDGET_GB else 1


if __name__ == "__main__":
    sys.exit(main())
