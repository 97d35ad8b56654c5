"""Few-step sampling: the quality/cost curve on Lytro, every setting side by side in one run.

    python benchmarks/bench_fewstep.py [--checkpoint P] [--folder DIR] [--stems S ...] [--crop 176]
                                       [--steps 250 50 20 10 5 3] [--reference posterior_mean 2000]
                                       [--threads 1] [--json OUT.json]

Each pair (a central ``--crop`` window; 0 = whole images) is fused with the reference setting (the
paper's posterior-mean sampler, 2000 steps) and with DDIM (η = 0; for weight-map and x₀ models this is
the x₀-regression sampler) at each ``--steps``, from the same x_T. Prints the mean table with seconds
per pair and each row's largest relative deviation from the reference over the six metrics, and the
cheapest setting with ≤ 20 evaluations within 1 % of it on every metric.
"""
from __future__ import annotations

import _common  # first: thread pools and sys.path

import platform

from rediffuse.evaluate import markdown_table
from rediffuse.fewstep import CURVE_METRICS, best_few_step, curve_settings, curve_table, quality_cost_curve
from rediffuse.fuse import FusionModel
from rediffuse.paths import dataset_dir


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--folder", default=None, help="default: Lytro under the shared data")
    p.add_argument("--stems", nargs="*", default=["lytro-01", "lytro-05", "lytro-09", "lytro-13", "lytro-17"])
    p.add_argument("--crop", type=int, default=176)
    p.add_argument("--steps", type=int, nargs="+", default=[250, 50, 20, 10, 5, 3])
    p.add_argument("--reference", nargs=2, default=["posterior_mean", "2000"])
    a = p.parse_args(argv)
    _common.setup(a)
    folder = a.folder or dataset_dir("Lytro")
    if folder is None:
        p.error("no Lytro folder: pass --folder DIR or set REDIFFUSE_SHARED")
    fm = FusionModel(a.checkpoint)
    ref = (a.reference[0], int(a.reference[1]))
    settings = curve_settings(a.steps, "ddim", ref)
    rows = quality_cost_curve(fm, folder, settings, stems=a.stems or None, crop=a.crop or None)
    table = curve_table(rows, ref)
    best = best_few_step(table)
    cols = [*CURVE_METRICS, "seconds", "max_rel_dev"]
    print(markdown_table([{"setting": f"{r['sampler']} {r['steps']}", **{c: r[c] for c in cols}} for r in table],
                         title=f"{fm.path.name}: means over {table[0]['pairs']} pairs, crop {a.crop}"))
    print("best setting with ≤ 20 evaluations within 1 % of the reference:",
          f"{best['sampler']} {best['steps']}" if best else "none")
    _common.write_json(a.json, {
        "checkpoint": str(fm.path), "folder": str(folder), "crop": a.crop, "reference": list(ref),
        "threads": a.threads, "cpu": platform.processor() or platform.machine(), "rows": rows,
        "table": table, "best": best})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
