"""`rediffuse fuse` per speed mode: quality on Lytro, tiled against untiled, and a 24-MP pair.

    python benchmarks/bench_fuse.py [--part quality|tiles|large|all] [--checkpoints weights P ...]
                                    [--speeds quality balanced fast] [--scales 0.75] [--precisions fp32 bf16]
                                    [--size 6000x4000] [--sigma S]
                                    [--working-size MP] [--tiles auto 512] [--steps K] [--threads 1]
                                    [--json OUT.json]

1. ``quality``: Lytro's 20 pairs (../shared/data/Lytro) fused by every ``--checkpoints`` model in
   every ``--speeds`` mode (and ``--scales``: balanced with its last step at that fraction of the
   size), in one run, and scored with the six no-reference metrics. Prints the
   means, each mode's change against the same model's ``quality`` mode on every metric (the issue's
   bar: no metric lower by more than 0.002), and the CPU and wall seconds per pair (in this process,
   model loaded once; CPU = this process's time, which a busy shared machine inflates far less than
   the wall time).
2. ``tiles``: a 1024×1024 colour pair (scikit-image's ``motorcycle_left`` upscaled, a random focus
   mask, Gaussian defocus σ = 4) fused whole and with each ``--tiles`` setting (speed quality);
   prints the PSNR between tiled and untiled results (the issue asks ≥ 40 dB), each one's PSNR
   against the all-in-focus ground truth, and the wall time.
3. ``large``: a colour pair of ``--size`` (default 6000×4000, 24 MP) with ground truth, its defocus
   ``--sigma`` (default 4 px per 1500 px of width: the blur of the small pair, scaled with the
   image), written as PNG and fused by the ``rediffuse fuse`` command in a child process
   (``python -m rediffuse fuse``, auto tiles) for every checkpoint and speed. Prints the child's
   wall and CPU seconds (user + system, from ``os.wait4``), its peak resident memory (reading the
   inputs, loading the model, fusing and writing the output) and the PSNR against the ground truth.

Checkpoints: shipped names (``weights``, the default) or checkpoint files, e.g.
``checkpoints/runs/layered-plain/layered-plain.pt``. Threads default to 1 (the fastest setting for small
models on the project's 2-core machines).
"""
from __future__ import annotations

import _common  # first: thread pools and sys.path

import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

SPEED_NAMES = ("quality", "balanced", "fast")
BF16 = " (bf16)"  # appended to a model's label for its bfloat16 rows
PRECISION_NAMES = ("fp32", "bf16")  # rediffuse.fuse.PRECISIONS, spelled out as SPEED_NAMES is
NO_REF = ("QMI", "QG", "Qabf", "QP", "QE", "MS-SSIM")
#: the issue's bar: a mode may score at most this much below "quality" on any metric
TOLERANCE = 0.002


def make_pair(height: int, width: int, seed: int = 0, sigma: float = 4.0):
    """A colour multi-focus pair with ground truth, built with Pillow (lean on memory at 24 MP):
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


def label(fm) -> str:
    """A short name for a model: its run folder for a run's last.pt, else the file stem."""
    return fm.path.parent.name if fm.path.stem == "last" else fm.path.stem


def part_quality(checkpoints: list[str], speeds: list[str], steps: int | None, out: str | None,
                 precisions: tuple[str, ...] = ("fp32",), scales: tuple[float, ...] = ()) -> dict:
    from rediffuse.evaluate import Method, evaluate_folder, mean_table
    from rediffuse.fuse import FusionModel, fuse
    from rediffuse.paths import dataset_dir

    folder = dataset_dir("Lytro")
    if folder is None:
        print("\nLytro is not in ../shared/data: quality part skipped")
        return {}
    methods, cpu = [], {}
    for ck, pr in [(ck, pr) for ck in checkpoints for pr in precisions]:
        fm = FusionModel(ck, precision=pr)
        # "balanced@0.75": balanced with its last step at that fraction of the size (between the modes)
        for sp in [*speeds, *(f"balanced@{s:g}" for s in scales)]:
            name = f"{label(fm)}{BF16 if pr == 'bf16' else ''} {sp}"
            cpu[name] = []
            base, _, frac = sp.partition("@")
            st = fm.settings(steps=steps, tile="auto", speed=base, scale=float(frac) if frac else None)

            def run(imgs, fm=fm, st=st, name=name):
                c0 = time.process_time()
                fused = fuse(imgs, fm, settings=st)
                cpu[name].append(time.process_time() - c0)
                return fused

            methods.append(Method(name, run))
    rows = evaluate_folder(folder, methods, out, save_images=False, progress=False)
    table = mean_table(rows)
    result = {}
    print(f"\nLytro ({len({r['image'] for r in rows})} pairs), every model and speed in one run; Δ = the largest drop "
          f"against the model's quality mode over the six metrics (bar: ≤ {TOLERANCE}); seconds per pair, 1 thread\n")
    print("| model | speed | " + " | ".join(NO_REF) + " | Δ vs quality | CPU s | wall s |")
    print("|---|---|" + "---|" * len(NO_REF) + "---|---|---|")
    for name, row in table.items():
        model, sp = name.rsplit(" ", 1)
        ref = table.get(f"{model.removesuffix(BF16)} quality")  # bf16 rows against the fp32 quality mode
        drop = max(ref[m] - row[m] for m in NO_REF) if ref else math.nan
        result[name] = dict(row, drop_vs_quality=drop, cpu_s=float(np.mean(cpu[name])))
        print(f"| {model} | {sp} | " + " | ".join(f"{row[m]:.4f}" for m in NO_REF)
              + f" | {drop:+.4f} | {np.mean(cpu[name]):.2f} | {row['seconds']:.2f} |")
    return result


def part_tiles(ckpt: str, tiles: list[str], steps: int | None) -> dict:
    from rediffuse.fuse import FusionModel, fuse, plan_tiles
    from rediffuse.metrics import psnr

    fm = FusionModel(ckpt)
    a, b, gt = make_pair(1024, 1024)
    t0 = time.perf_counter()
    un = fuse([a, b], fm, steps=steps, tile=0, speed="quality")
    rows = [dict(setting="untiled", tiles=1, seconds=time.perf_counter() - t0, psnr_vs_untiled=float("inf"),
                 psnr_vs_gt=psnr(un, gt))]
    for t in tiles:
        tile, overlap = fm.resolve_tile("auto" if t == "auto" else int(t), None)
        t0 = time.perf_counter()
        ti = fuse([a, b], fm, steps=steps, tile=tile, overlap=overlap, speed="quality")
        rows.append(dict(setting=f"tile {t} ({tile} px, overlap {overlap})",
                         tiles=len(plan_tiles(1024, 1024, tile, overlap)), seconds=time.perf_counter() - t0,
                         psnr_vs_untiled=psnr(un, ti), psnr_vs_gt=psnr(ti, gt)))
    st = fm.settings(steps=steps)
    sampler, k = st.sampler, st.steps
    print(f"\n1024×1024 colour pair, checkpoint {fm.path} ({fm.prediction}, {sampler} {k} steps, speed quality)\n")
    print("| setting | tiles | PSNR tiled vs untiled (dB) | PSNR vs ground truth (dB) | wall (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['tiles']} | {r['psnr_vs_untiled']:.2f} | {r['psnr_vs_gt']:.2f} "
              f"| {r['seconds']:.1f} |")
    return dict(checkpoint=str(fm.path), rows=rows)


def part_large(checkpoints: list[str], speeds: list[str], size: str, sigma: float | None, steps: int | None,
               threads: int, working_size: float | None = None) -> dict:
    from rediffuse.fuse import resolve_checkpoint
    from rediffuse.imageio import read_image
    from rediffuse.metrics import psnr

    width, height = (int(v) for v in size.lower().split("x"))
    sigma = sigma or 4.0 * width / 1500
    rows = []
    extra = ("--working-size", str(working_size)) if working_size is not None else ()
    with tempfile.TemporaryDirectory(prefix="bench_fuse_") as d:
        d = Path(d)
        a, b, gt = make_pair(height, width, sigma=sigma)
        Image.fromarray(a).save(d / "a.png", compress_level=1)
        Image.fromarray(b).save(d / "b.png", compress_level=1)
        del a, b
        for ck in checkpoints:
            path = resolve_checkpoint(ck)
            for sp in speeds:
                out = d / "fused.png"
                out.unlink(missing_ok=True)
                code, wall, rss_kb, cpu = _common.run_fuse_cli([d / "a.png", d / "b.png"], out, threads=threads,
                                                               steps=steps, checkpoint=path, extra=extra + ("--speed", sp))
                ok = code == 0 and out.is_file()
                fused = read_image(out) if ok else None
                ok = ok and fused.shape == gt.shape
                model = path.parent.name if path.stem == "last" else path.stem
                rows.append(dict(model=model, speed=sp, exit=code, ok=ok, wall_s=wall, cpu_s=cpu,
                                 peak_rss_gb=rss_kb / 1024 ** 2, psnr_vs_gt=psnr(fused, gt) if ok else math.nan))
                del fused
    print(f"\n{width}×{height} colour pair (defocus σ = {sigma:.1f} px), `rediffuse fuse` in a child process on the "
          f"CPU, {threads} thread(s), auto tiles" + (f", --working-size {working_size}" if extra else "") + "\n")
    print("| model | speed | exit | wall s | CPU s | peak RSS (GB) | PSNR vs ground truth (dB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['speed']} | {r['exit']}{'' if r['ok'] else ' (no output)'} | {r['wall_s']:.0f} "
              f"| {r['cpu_s']:.0f} | {r['peak_rss_gb']:.2f} | {r['psnr_vs_gt']:.2f} |")
    return dict(size=[width, height], sigma=sigma, threads=threads, working_size=working_size, rows=rows)


def record_tables(results: dict) -> dict:
    """The parts' tables in the common record schema (``_common.table``), as they are printed."""
    tables = {}
    if "quality" in results:
        cols = [("model", "model", ""), ("speed", "speed", ""), *[(m, m, ".4f") for m in NO_REF],
                ("drop_vs_quality", "Δ vs quality", "+.4f"), ("cpu_s", "CPU s", ".2f"), ("seconds", "wall s", ".2f")]
        rows = [dict(id=name, model=name.rsplit(" ", 1)[0], speed=name.rsplit(" ", 1)[1],
                     **{c[0]: r.get(c[0]) for c in cols[2:]}) for name, r in results["quality"].items()]
        tables["quality"] = _common.table(cols, rows)
    if "tiles" in results:
        cols = [("setting", "setting", ""), ("tiles", "tiles", "d"), ("psnr_vs_untiled", "PSNR tiled vs untiled (dB)", ".2f"),
                ("psnr_vs_gt", "PSNR vs ground truth (dB)", ".2f"), ("seconds", "wall (s)", ".1f")]
        rows = [dict(r, id=r["setting"].split(" (")[0], psnr_vs_untiled=None if r["setting"] == "untiled"
                     else r["psnr_vs_untiled"]) for r in results["tiles"]["rows"]]
        tables["tiles"] = _common.table(cols, rows)
    if "large" in results:
        cols = [("model", "model", ""), ("speed", "speed", ""), ("exit", "exit", "d"), ("wall_s", "wall s", ".0f"),
                ("cpu_s", "CPU s", ".0f"), ("peak_rss_gb", "peak RSS (GB)", ".2f"), ("psnr_vs_gt", "PSNR vs ground truth (dB)", ".2f")]
        tables["large"] = _common.table(cols, [dict(r, id=f"{r['model']} {r['speed']}") for r in results["large"]["rows"]])
    return tables


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--part", choices=["quality", "tiles", "large", "all"], default="all")
    p.add_argument("--checkpoints", nargs="+", default=["weights"], metavar="P",
                   help="shipped model names or checkpoint files (default: weights)")
    p.add_argument("--precisions", nargs="+", choices=PRECISION_NAMES, default=["fp32"], metavar="P",
                   help="network arithmetic (quality part): fp32 and/or bf16; bf16 rows are compared with the "
                        "model's fp32 quality mode (default: fp32)")
    p.add_argument("--speeds", nargs="+", choices=SPEED_NAMES, default=list(SPEED_NAMES), metavar="SPEED",
                   help="speed modes to compare (default: all three; 'large' at 24 MP in quality mode takes long)")
    p.add_argument("--scales", nargs="+", type=float, default=[], metavar="F",
                   help="quality part: also balanced with its last step at these fractions of the size (e.g. 0.75)")
    p.add_argument("--tiles", nargs="+", default=["auto", "512"], help="tile settings compared with untiled")
    p.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT of the large pair (default 24 MP)")
    p.add_argument("--sigma", type=float, default=None, help="defocus of the large pair (default: 4 px per 1500 px)")
    p.add_argument("--working-size", type=float, default=None, metavar="MP",
                   help="passed to every `rediffuse fuse` of the large part (default: each speed's own)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's)")
    p.add_argument("--out", default="outputs/bench-fuse", help="folder for the quality part's per-image CSV")
    args = p.parse_args(argv)
    _common.setup(args)
    meta = _common.run_meta(args.threads)
    results = {}
    if args.part in ("quality", "all"):
        results["quality"] = part_quality(args.checkpoints, args.speeds, args.steps, args.out, tuple(args.precisions),
                                          tuple(args.scales))
    if args.part in ("tiles", "all"):
        results["tiles"] = part_tiles(args.checkpoints[0], args.tiles, args.steps)
    if args.part in ("large", "all"):
        results["large"] = part_large(args.checkpoints, args.speeds, args.size, args.sigma, args.steps, args.threads,
                                      args.working_size)
    _common.write_record(args.json, record_tables(results), results=results, meta=meta)
    return 0 if all(r["ok"] for r in results.get("large", {}).get("rows", [])) else 1


if __name__ == "__main__":
    sys.exit(main())
