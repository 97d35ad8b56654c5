"""Tiled fusion: agreement with untiled fusion, and wall time / peak memory on a large pair.

    python benchmarks/bench_fuse.py [--checkpoint P] [--part tiles|large|all] [--size 4000x3000]
                                    [--tiles auto 512] [--steps K] [--threads 1] [--json OUT.json]

1. ``tiles``: a 1024×1024 colour pair (scikit-image's ``motorcycle_left`` upscaled, a random focus
   mask, Gaussian defocus σ = 4) fused whole and with each ``--tiles`` setting; prints the PSNR
   between tiled and untiled results (the issue asks ≥ 40 dB), each one's PSNR against the
   all-in-focus ground truth, and the wall time.
2. ``large``: a colour pair of ``--size`` (default 4000×3000) written as PNG, then fused by the
   ``rediffuse fuse`` command in a child process (``python -m rediffuse fuse``, default
   settings: auto tiles, the checkpoint's sampler); prints the child's wall time and its peak
   resident memory (``ru_maxrss`` from ``os.wait4``: stdlib only; it covers reading the inputs,
   loading the model, fusing and writing the output).

The checkpoint defaults to ``rediffuse.fuse.DEFAULT_CHECKPOINT``. Threads default to 1 (the fastest
setting for small models on the project's 2-core machines).
"""
from __future__ import annotations

import _common  # first: thread pools and sys.path

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def make_pair(height: int, width: int, seed: int = 0, sigma: float = 4.0):
    """A colour multi-focus pair with ground truth, built with Pillow (lean on memory at 12 MP):
    an upscaled photo, a smooth random focus mask (made small, then upscaled) and Gaussian blur."""
    from rediffuse.data import focus_mask, skimage_photo

    photo = Image.fromarray(np.asarray(skimage_photo("motorcycle_left")))
    scale = max(height / photo.height, width / photo.width)
    big = photo.resize((max(width, round(photo.width * scale)), max(height, round(photo.height * scale))),
                       Image.BICUBIC)
    gt = big.crop(((big.width - width) // 2, (big.height - height) // 2,
                   (big.width - width) // 2 + width, (big.height - height) // 2 + height))
    small = focus_mask((max(8, height // 10), max(8, width // 10)), "blobs", rng=seed)
    mask = Image.fromarray((small * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    blurred = gt.filter(ImageFilter.GaussianBlur(sigma))
    a = Image.composite(gt, blurred, mask)  # in focus where the mask is white
    b = Image.composite(blurred, gt, mask)
    return np.asarray(a), np.asarray(b), np.asarray(gt)


def part_tiles(ckpt: str | None, tiles: list[str], steps: int | None) -> dict:
    from rediffuse.fuse import FusionModel, fuse, plan_tiles
    from rediffuse.metrics import psnr

    fm = FusionModel(ckpt)
    a, b, gt = make_pair(1024, 1024)
    t0 = time.perf_counter()
    un = fuse([a, b], fm, steps=steps, tile=0)
    rows = [dict(setting="untiled", tiles=1, seconds=time.perf_counter() - t0, psnr_vs_untiled=float("inf"),
                 psnr_vs_gt=psnr(un, gt))]
    for t in tiles:
        tile, overlap = fm.resolve_tile("auto" if t == "auto" else int(t), None)
        t0 = time.perf_counter()
        ti = fuse([a, b], fm, steps=steps, tile=tile, overlap=overlap)
        rows.append(dict(setting=f"tile {t} ({tile} px, overlap {overlap})",
                         tiles=len(plan_tiles(1024, 1024, tile, overlap)), seconds=time.perf_counter() - t0,
                         psnr_vs_untiled=psnr(un, ti), psnr_vs_gt=psnr(ti, gt)))
    sampler, k = fm.sampler_settings(None, steps)
    print(f"\n1024×1024 colour pair, checkpoint {fm.path} ({fm.prediction}, {sampler} {k} steps)\n")
    print("| setting | tiles | PSNR tiled vs untiled (dB) | PSNR vs ground truth (dB) | wall (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['tiles']} | {r['psnr_vs_untiled']:.2f} | {r['psnr_vs_gt']:.2f} "
              f"| {r['seconds']:.1f} |")
    return dict(checkpoint=str(fm.path), rows=rows)


def part_large(ckpt: str | None, size: str, steps: int | None, threads: int) -> dict:
    from rediffuse.fuse import DEFAULT_CHECKPOINT

    width, height = (int(v) for v in size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="bench_fuse_") as d:
        d = Path(d)
        a, b, _ = make_pair(height, width)
        Image.fromarray(a).save(d / "a.png", compress_level=1)
        Image.fromarray(b).save(d / "b.png", compress_level=1)
        del a, b
        code, wall, rss_kb = _common.run_fuse_cli([d / "a.png", d / "b.png"], d / "fused.png", threads=threads,
                                                  steps=steps, checkpoint=ckpt or DEFAULT_CHECKPOINT)
        ok = code == 0 and (d / "fused.png").is_file()
        if ok:
            with Image.open(d / "fused.png") as im:
                ok = im.size == (width, height)
    peak_mb = rss_kb / 1024
    print(f"\n{width}×{height} colour pair, `rediffuse fuse` on CPU ({threads} thread(s)), checkpoint "
          f"{ckpt or DEFAULT_CHECKPOINT}: exit {code}, output {'ok' if ok else 'MISSING/WRONG'}, "
          f"wall {wall:.0f} s, peak RSS {peak_mb:.0f} MB ({peak_mb / 1024:.2f} GiB)")
    return dict(size=[width, height], exit=code, ok=ok, wall_s=wall, peak_rss_mb=peak_mb,
                checkpoint=str(ckpt or DEFAULT_CHECKPOINT), threads=threads)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--checkpoint", default=None, help="default: rediffuse.fuse.DEFAULT_CHECKPOINT")
    p.add_argument("--part", choices=["tiles", "large", "all"], default="all")
    p.add_argument("--tiles", nargs="+", default=["auto", "512"], help="tile settings compared with untiled")
    p.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the large pair")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's)")
    args = p.parse_args(argv)
    _common.setup(args)
    results = {}
    if args.part in ("tiles", "all"):
        results["tiles"] = part_tiles(args.checkpoint, args.tiles, args.steps)
    if args.part in ("large", "all"):
        results["large"] = part_large(args.checkpoint, args.size, args.steps, args.threads)
    _common.write_json(args.json, results)
    return 0 if results.get("large", {}).get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
