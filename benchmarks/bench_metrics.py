"""Time the fusion metrics on one 520x520 triple, single-threaded.

    python benchmarks/bench_metrics.py [--repeat N] [--threads 1] [--json OUT.json]

Uses Lytro pair 01 and the published GFF fusion when ../shared is present, otherwise a synthetic
pair built from scikit-image's astronaut. Prints a markdown table of the median wall-clock and
CPU time per call (on a shared machine the CPU time is the steadier number).
QP's phase-congruency memo is cleared before every timed call, so the numbers are cold-cache
figures; the last row shows `evaluate` when the two sources are already memoised (the case of
scoring several fused images of the same pair).
"""
from __future__ import annotations

import _common  # first: thread pools and sys.path

import statistics
import time

import numpy as np

from rediffuse import metrics as M

try:  # the phase-congruency filter bank, cached per image size (rediffuse.metrics.phase since issue 26)
    from rediffuse.metrics.phase import _pc_bank
except ImportError:  # pragma: no cover - the single-module layout before it
    _pc_bank = M._pc_bank
from rediffuse.paths import dataset_dir, reference_dir


def load_triple():
    lytro, ref = dataset_dir("Lytro"), reference_dir()
    if lytro is not None and ref is not None:
        from PIL import Image

        def ld(p):
            with Image.open(p) as im:
                return np.asarray(im)

        return ("Lytro lytro-01 + GFF",
                ld(lytro / "A" / "lytro-01.jpg"), ld(lytro / "B" / "lytro-01.jpg"),
                ld(ref / "fused" / "color" / "lytro-01_gff.png"))
    from scipy import ndimage
    from skimage import data as skdata

    img = np.pad(skdata.astronaut(), ((4, 4), (4, 4), (0, 0)), mode="reflect")  # 520x520x3
    blurred = np.clip(np.round(ndimage.gaussian_filter(img.astype(float), (3, 3, 0))), 0, 255)
    blurred = blurred.astype(np.uint8)
    a, b = img.copy(), img.copy()
    a[:, 260:], b[:, :260] = blurred[:, 260:], blurred[:, :260]
    f = ((a.astype(np.uint16) + b) // 2).astype(np.uint8)
    return "synthetic (astronaut, half/half blur, average fusion)", a, b, f


def timed(fn, repeat: int, clear: bool = True) -> tuple[float, float]:
    """Median wall-clock and CPU seconds per call (CPU time is the fairer figure on a busy box)."""
    wall, cpu = [], []
    for _ in range(repeat):
        if clear:
            M.clear_cache()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    ap = _common.parser(__doc__)
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per row (median reported)")
    args = ap.parse_args(argv)
    _common.setup(args)
    meta = _common.run_meta(args.threads)

    label, a, b, f = load_triple()
    print(f"triple: {label}, shape {a.shape}, {args.threads} thread(s), median of {args.repeat} calls\n")
    results = {"triple": label, "shape": list(a.shape), "threads": args.threads, "repeat": args.repeat, "rows": []}

    _pc_bank.cache_clear()
    t0, c0 = time.perf_counter(), time.process_time()
    first = M.evaluate(a, b, f)
    first_call = (time.perf_counter() - t0, time.process_time() - c0)

    rows = [
        ("QMI", lambda: M.qmi(a, b, f)),
        ("QG (2019)", lambda: M.qg(a, b, f)),
        ("QG (2003)", lambda: M.qg(a, b, f, variant="2003")),
        ("Qabf", lambda: M.qabf(a, b, f)),
        ("QP", lambda: M.qp(a, b, f)),
        ("QE", lambda: M.qe(a, b, f)),
        ("MS-SSIM", lambda: M.ms_ssim_fusion(a, b, f)),
        ("PSNR (vs source A)", lambda: M.psnr(f, a)),
        ("SSIM (vs source A)", lambda: M.ssim(f, a)),
        ("evaluate (6 metrics)", lambda: M.evaluate(a, b, f)),
    ]
    print("| metric | value | wall s / call | CPU s / call |")
    print("|---|---|---|---|")
    values = {"QG (2019)": first["QG"], "QMI": first["QMI"], "Qabf": first["Qabf"], "QP": first["QP"],
              "QE": first["QE"], "MS-SSIM": first["MS-SSIM"]}
    for name, fn in rows:
        w, c = timed(fn, args.repeat)
        v = values.get(name)
        if v is None and not name.startswith("evaluate"):
            v = fn()
        vs = f"{v:.6f}" if v is not None else "—"
        print(f"| {name} | {vs} | {w:.3f} | {c:.3f} |")
        results["rows"].append({"metric": name, "value": v, "wall_s": w, "cpu_s": c})

    # sources memoised, fused image new each call: the leaderboard situation
    M.clear_cache()
    M.qp(a, b, f)
    fused_variants = [f ^ np.uint8(i + 1) for i in range(args.repeat)]
    it = iter(fused_variants)
    w, c = timed(lambda: M.evaluate(a, b, next(it)), args.repeat, clear=False)
    print(f"| evaluate, sources' PC memoised | — | {w:.3f} | {c:.3f} |")
    print(f"| evaluate, very first call (builds the filter bank) | — | {first_call[0]:.3f} | {first_call[1]:.3f} |")
    results["rows"] += [{"metric": "evaluate, sources' PC memoised", "wall_s": w, "cpu_s": c},
                        {"metric": "evaluate, very first call", "wall_s": first_call[0], "cpu_s": first_call[1]}]
    cols = [("metric", "metric", ""), ("value", "value", ".6f"), ("wall_s", "wall s / call", ".3f"),
            ("cpu_s", "CPU s / call", ".3f")]
    rows = [{"id": r["metric"], "value": None, **r} for r in results["rows"]]
    _common.write_record(args.json, {"metrics-speed": _common.table(cols, rows)},
                         values={"triple": label, "repeat": args.repeat}, results=results,
                         meta=meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
