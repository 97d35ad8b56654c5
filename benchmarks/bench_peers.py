"""rediffuse next to the tools focus stackers use, timed on the same images in one run; the peak
memory of a long focus stack; and how close a registered stack fuses to the aligned one.

    python benchmarks/bench_peers.py [--part time|stack|align|ecc|all] [--large] [--size WxH]
                                     [--checkpoints weights P ...] [--speeds quality balanced fast]
                                     [--precisions fp32 bf16]
                                     [--stack-frames N] [--stack-size WxH] [--stack-speed S]
                                     [--repeats R] [--steps K] [--threads 1] [--json OUT.json]

1. ``time``: the Lytro pair lytro-01 (520×520, from ../shared) and a synthetic colour pair of
   ``--size`` (default 1500×1000; ``--large``: 6000×4000, 24 MP), fused in this process by
   rediffuse (every ``--checkpoints`` model in every ``--speeds`` mode and ``--precisions``
   network arithmetic; model loaded once, a pair
   with one network run, as by default), GFF (``rediffuse.baselines.gff``) and enfuse
   (``rediffuse.peers``, when installed; its time includes writing and reading its files, as a user
   pays it). Prints wall and CPU seconds (the best of ``--repeats``; CPU = this process's time
   plus that of the enfuse child: on a busy shared machine the wall time says more about the
   other jobs than about the method) and each one's CPU time as a multiple of enfuse's and GFF's.
   rediffuse's ``quality`` mode is left out at 24 MP unless ``--speeds`` names it (minutes).
2. ``stack``: a synthetic colour focus stack of ``--stack-frames`` frames of ``--stack-size``
   (default 5 of 1000×750; ``--large``: 20 of 6000×4000), each focused on another depth layer and
   magnified by 0.1 % more than the one before (focus breathing), written as JPEG and fused by
   ``rediffuse fuse`` in a child process with its defaults (alignment check, order-independent
   fusion, frames streamed, ``--stack-speed``: default the command's) and a depth map. Prints the
   wall and CPU time and the child's peak resident memory (``ru_maxrss`` from ``os.wait4``),
   against the 4 GB budget for 20 frames of 24 MP.
3. ``align``: three-frame synthetic stacks (``tests/stacks.py``: frames sharp in their own depth
   layer, moved by up to ±20 px, ±1° and ±2 %, rendered 4× finer and area-sampled so that moved
   and unmoved frames are sampled alike) fused as registered by ``rediffuse`` (``align="auto"``),
   fused with the true transforms, and fused unmoved; prints the PSNR against the all-in-focus
   truth away from the borders (24 px) and the gaps: PSNR of the unrounded grey images against the
   truth rendered in 16 bits, and for 8-bit frames also against that truth rounded to 8 bits (which
   an unmoved frame's in-focus pixels match exactly, a resampled frame's not). ``--align-bits 8 16``:
   also as 16-bit frames, so that 8-bit rounding does not hide the registration.
4. ``ecc`` (only when asked): the registration error of the align part's 16-bit stacks for several
   sizes of ECC's Gaussian smoothing.

Checkpoints: shipped names (``weights``, the default) or files, e.g. ``checkpoints/runs/layered-plain/layered-plain.pt``.
Threads default to 1 (the fastest for small models on the project's 2-core machines).
"""
from __future__ import annotations

import _common  # first: thread pools and sys.path

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from bench_fuse import BF16, PRECISION_NAMES, SPEED_NAMES, label, make_pair

BUDGET_GB = 4.0


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def _cpu() -> float:
    """CPU seconds of this process and its finished children (enfuse runs as a child)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn, imgs, repeats: int) -> tuple[float, float]:
    """The best ``(wall, CPU)`` seconds of ``repeats`` runs of ``fn(imgs)``."""
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), _cpu()
        fn(imgs)
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    return min(walls), min(cpus)


def part_time(checkpoints: list[str], speeds: list[str] | None, size: tuple[int, int], steps: int | None,
              repeats: int, precisions: tuple[str, ...] = ("fp32",), threads: int = 1) -> dict:
    from rediffuse.baselines import gff
    from rediffuse.fuse import FusionModel, fuse
    from rediffuse.imageio import read_image
    from rediffuse.paths import dataset_dir
    from rediffuse.peers import enfuse, peer_available

    models = [FusionModel(ck, precision=pr) for ck in checkpoints for pr in precisions]
    pairs = {}
    lytro = dataset_dir("Lytro")
    if lytro is not None:
        pairs["Lytro lytro-01 520×520"] = [read_image(lytro / k / "lytro-01.jpg") for k in ("A", "B")]
    w, h = size
    a, b, _ = make_pair(h, w)
    pairs[f"synthetic {w}×{h}"] = [a, b]
    del a, b
    rows = []
    for pname, imgs in pairs.items():
        large = imgs[0].shape[0] * imgs[0].shape[1] > 12e6
        methods = {}
        for fm in models:
            for sp in speeds or [s for s in SPEED_NAMES if not (large and s == "quality")]:
                name = f"rediffuse {label(fm)}{BF16 if fm.precision == 'bf16' else ''} {sp}"
                methods[name] = (lambda x, fm=fm, sp=sp: fuse(x, fm, speed=sp, steps=steps))
        methods["GFF"] = gff
        if peer_available("enfuse"):
            methods["enfuse"] = enfuse
        for mname, fn in methods.items():
            if not large:
                fn(imgs)  # warm-up: first-call allocations and caches are not what a method costs per pair
            wall, cpu = _timed(fn, imgs, 1 if large else repeats)
            rows.append(dict(images=pname, method=mname, wall_s=wall, cpu_s=cpu))
            print(f"  {pname}: {mname} {cpu:.2f} s CPU, {wall:.2f} s wall", flush=True)
    print(f"\nTime on the same images in one run, this machine's CPU, {threads} thread(s) (best of {repeats}); ×enfuse and ×GFF "
          "= CPU time over theirs\n")
    print("| images | method | CPU s | wall s | × enfuse | × GFF |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        same = {x["method"]: x["cpu_s"] for x in rows if x["images"] == r["images"]}
        r["x_enfuse"] = r["cpu_s"] / same["enfuse"] if "enfuse" in same else float("nan")
        r["x_gff"] = r["cpu_s"] / same["GFF"]
        print(f"| {r['images']} | {r['method']} | {r['cpu_s']:.2f} | {r['wall_s']:.2f} | {r['x_enfuse']:.2f} "
              f"| {r['x_gff']:.2f} |")
    if not peer_available("enfuse"):
        print("\n(enfuse is not installed: apt-get install enfuse)")
    return dict(checkpoints=[str(fm.path) for fm in models], precisions=list(precisions), repeats=repeats, rows=rows)


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


def part_stack(ckpt: str, frames: int, size: tuple[int, int], steps: int | None, threads: int,
               speed: str | None) -> dict:
    from rediffuse.fuse import resolve_checkpoint

    w, h = size
    extra = ("--depth-map", "DEPTH") + (("--speed", speed) if speed else ())
    with tempfile.TemporaryDirectory(prefix="bench_peers_") as d:
        d = Path(d)
        t0 = time.perf_counter()
        paths = write_stack(d, frames, size)
        made = time.perf_counter() - t0
        extra = tuple(str(d / "depth.png") if e == "DEPTH" else e for e in extra)
        code, wall, rss_kb, cpu = _common.run_fuse_cli(paths, d / "fused.png", threads=threads, steps=steps,
                                                       checkpoint=resolve_checkpoint(ckpt), extra=extra)
        ok = code == 0 and (d / "fused.png").is_file() and (d / "depth.png").is_file()
    peak_gb = rss_kb / 1024 ** 2
    verdict = "within" if peak_gb <= BUDGET_GB else "OVER"
    print(f"\n{frames}-frame {w}×{h} colour stack (JPEG, written in {made:.0f} s), `rediffuse fuse` "
          f"(speed {speed or 'default'}) with a depth map, CPU, {threads} thread(s): exit {code}, output "
          f"{'ok' if ok else 'MISSING'}, wall {wall:.0f} s, CPU {cpu:.0f} s, peak RSS {peak_gb:.2f} GB "
          f"({verdict} the {BUDGET_GB:.0f} GB budget)")
    return dict(frames=frames, size=[w, h], exit=code, ok=ok, wall_s=wall, cpu_s=cpu, peak_rss_gb=peak_gb,
                threads=threads, steps=steps, speed=speed)


def _grey_psnr(x: np.ndarray, gt: np.ndarray) -> float:
    """PSNR (dB, peak 255) of the unrounded grey images (the metric's rgb2gray weights) of 8- or 16-bit
    ``x`` and ``gt``: no rounding of its own, so that 16-bit stacks are not measured at 8-bit precision."""
    from rediffuse.metrics import _RGB2GRAY

    def grey(a):
        v = a.astype(np.float64) / (257.0 if a.dtype == np.uint16 else 1.0)
        return v @ np.asarray(_RGB2GRAY) if v.ndim == 3 else v

    mse = float(np.mean((grey(x) - grey(gt)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def part_align(ckpt: str, shapes: list[tuple[int, int]], seeds: int, bits: int = 8) -> dict:
    sys.path.insert(0, str(_common.REPO_ROOT / "tests"))
    import rediffuse.stack as stack
    from rediffuse.align import Registration, grid_rms
    from rediffuse.fuse import FusionModel, fuse
    from rediffuse.metrics import psnr
    from stacks import misaligned_stack

    fm = FusionModel(ckpt)
    b = 24  # the borders that some frame does not cover are fused from fewer frames
    crop = lambda x: x[b:-b, b:-b]  # noqa: E731
    kinds = ("aligned", "registered", "true_transforms")
    rows = []
    for h, w in shapes:
        for seed in range(seeds):
            # the truth always in 16 bits: 8-bit frames are scored against it (the scene) and against its
            # 8-bit rounding, which the in-focus pixels of an unmoved 8-bit frame share exactly
            frames, aligned, gt16, truth = misaligned_stack(3, (h, w), seed=seed, supersample=4, bits=bits,
                                                            truth_bits=16)
            fused = {"aligned": fuse(aligned, fm)}
            found: list[Registration] = []
            register = stack.register
            try:
                stack.register = lambda *a, **k: found.append(register(*a, **k)) or found[-1]
                fused["registered"] = fuse(frames, fm, align="auto")
                true = iter(truth[1:])
                stack.register = lambda ref, frame, motion, init=None: Registration(next(true), motion, 1.0)
                fused["true_transforms"] = fuse(frames, fm, align="similarity")
            finally:
                stack.register = register
            row = dict(size=f"{w}×{h}", seed=seed)
            gt8 = np.clip(np.rint(gt16 / 257.0), 0, 255).astype(np.uint8) if bits == 8 else None
            for k in kinds:
                row[k] = _grey_psnr(crop(fused[k]), crop(gt16))
                if gt8 is not None:
                    row[f"{k}_vs_8bit_truth"] = psnr(crop(fused[k]), crop(gt8))
            row["registration_error_px"] = max(grid_rms(r.matrix, m, (h, w)) for r, m in zip(found[-2:], truth[1:]))
            rows.append(row)
    print(f"\nRegistered vs aligned 3-frame {bits}-bit stacks (±20 px, ±1°, ±2 %), {label(fm)}, speed "
          f"{fm.default_speed()}; PSNR (dB) of the grey images against the unrounded (16-bit) all-in-focus "
          f"truth, {b}-px borders left out" + ("; in brackets against the truth rounded to 8 bits, as "
                                               "the metric's PSNR reads it" if bits == 8 else "") + "\n")
    print("| size | seed | aligned | registered | gap | true transforms | gap | registration error (px) |")
    print("|---|---|---|---|---|---|---|---|")

    def cell(r, k, gap=False):
        v = r["aligned"] - r[k] if gap else r[k]
        if bits != 8:
            return f"{v:.2f}"
        v8 = r["aligned_vs_8bit_truth"] - r[f"{k}_vs_8bit_truth"] if gap else r[f"{k}_vs_8bit_truth"]
        return f"{v:.2f} ({v8:.2f})"

    for r in rows:
        print(f"| {r['size']} | {r['seed']} | {cell(r, 'aligned')} | {cell(r, 'registered')} | "
              f"{cell(r, 'registered', True)} | {cell(r, 'true_transforms')} | {cell(r, 'true_transforms', True)} | "
              f"{r['registration_error_px']:.3f} |")
    return dict(checkpoint=str(fm.path), bits=bits, rows=rows)


def part_ecc(shapes: list[tuple[int, int]], seeds: int, sizes: list[int]) -> dict:
    """Registration error (px RMS over a 9×9 grid) of the 3-frame 16-bit stacks of the align part for
    several sizes of ECC's smoothing (``rediffuse.align.ECC_SMOOTHING``)."""
    sys.path.insert(0, str(_common.REPO_ROOT / "tests"))
    import rediffuse.align as al
    from stacks import misaligned_stack

    stacks = [(h, w, misaligned_stack(3, (h, w), seed=seed, supersample=4, bits=16))
              for h, w in shapes for seed in range(seeds)]
    default, rows = al.ECC_SMOOTHING, {}
    try:
        for size in sizes:
            al.ECC_SMOOTHING = size
            errs = []
            for h, w, (frames, _, _, truth) in stacks:
                ys = [al.luma(f.astype(np.float32) / 257) for f in frames]
                ref = al.Pyramid(ys[0])
                errs += [al.grid_rms(al.register(ref, al.Pyramid(y), "similarity").matrix, m, (h, w))
                         for y, m in zip(ys[1:], truth[1:])]
            rows[size] = dict(rms=float(np.sqrt(np.mean(np.square(errs)))), max=float(max(errs)), n=len(errs))
    finally:
        al.ECC_SMOOTHING = default
    print(f"\nRegistration error against ECC's smoothing ({len(stacks)} 16-bit 3-frame stacks, similarity; "
          f"default {default} px)\n\n| gaussFiltSize | RMS error (px) | max (px) |\n|---|---|---|")
    for size, r in rows.items():
        print(f"| {size} | {r['rms']:.3f} | {r['max']:.3f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--part", choices=["time", "stack", "align", "ecc", "all"], default="all")
    p.add_argument("--large", action="store_true",
                   help="24 MP: a 6000×4000 pair and a stack of 20 frames of 6000×4000 (long on a CPU)")
    p.add_argument("--size", type=_size, default=None, metavar="WxH",
                   help="the synthetic pair (default 1500x1000; 6000x4000 with --large)")
    p.add_argument("--checkpoints", nargs="+", default=["weights"], metavar="P",
                   help="shipped model names or checkpoint files (default: weights); the stack and align parts "
                        "use the first")
    p.add_argument("--precisions", nargs="+", choices=PRECISION_NAMES, default=["fp32"], metavar="P",
                   help="network arithmetic of the rediffuse rows (time part): fp32 and/or bf16 (default: fp32)")
    p.add_argument("--speeds", nargs="+", choices=SPEED_NAMES, default=None, metavar="SPEED",
                   help="rediffuse's speed modes to time (default: all; at 24 MP balanced and fast)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per method on the small images (best kept)")
    p.add_argument("--stack-frames", type=int, default=None, metavar="N", help="default 5; 20 with --large")
    p.add_argument("--stack-size", type=_size, default=None, metavar="WxH",
                   help="default 1000x750; 6000x4000 with --large")
    p.add_argument("--stack-speed", choices=SPEED_NAMES, default=None, help="default: the command's")
    p.add_argument("--align-sizes", nargs="+", type=_size, default=[(256, 192), (512, 384)], metavar="WxH")
    p.add_argument("--align-seeds", type=int, default=3)
    p.add_argument("--align-bits", type=int, nargs="+", choices=[8, 16], default=[8], metavar="BITS",
                   help="bit depths of the align part's stacks (8 and/or 16; default: 8)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's)")
    args = p.parse_args(argv)
    _common.setup(args)
    size = args.size or ((6000, 4000) if args.large else (1500, 1000))
    stack_frames = args.stack_frames or (20 if args.large else 5)
    stack_size = args.stack_size or ((6000, 4000) if args.large else (1000, 750))
    results = {}
    if args.part in ("time", "all"):
        results["time"] = part_time(args.checkpoints, args.speeds, size, args.steps, args.repeats,
                                    tuple(args.precisions), args.threads)
    if args.part in ("stack", "all"):
        results["stack"] = part_stack(args.checkpoints[0], stack_frames, stack_size, args.steps, args.threads,
                                      args.stack_speed)
    if args.part == "ecc":
        results["ecc"] = part_ecc([(h, w) for w, h in args.align_sizes], args.align_seeds, [1, 3, 5, 9, 25])
    if args.part in ("align", "all"):
        results["align"] = [part_align(args.checkpoints[0], [(h, w) for w, h in args.align_sizes], args.align_seeds,
                                       bits) for bits in args.align_bits]
    _common.write_json(args.json, results)
    stack = results.get("stack", {})
    return 0 if stack.get("ok", True) and stack.get("peak_rss_gb", 0) <= BUDGET_GB else 1


if __name__ == "__main__":
    sys.exit(main())
