"""Fusion quality of models, baselines and peers on the same images, side by side, in one run.

Sets (each skipped with a note when absent): Lytro (20 real colour pairs), MFI-WHU-test30 and
Road-MF-sample8 (real pairs kept apart from training), and the synthetic boundary-validation set
(pairs with ground truth rendered by the layered defocus model from the *validation* photos; made
on first use in ``data/generated/boundary-val``). Reported: the six no-reference metrics, PSNR/SSIM
against ground truth over the image and inside the 15-px band around every focus boundary, seconds
per pair, and for each method how many metrics it is at or above GFF and enfuse.

    python benchmarks/bench_quality.py -m weights weights-plain gff enfuse stackmff focus-select \\
        --json outputs/bench-quality.json

A method is a baseline name, a peer (``enfuse``, ``stackmff``: need their programs), a shipped model
name or a checkpoint path (as for ``rediffuse evaluate``).
"""
from __future__ import annotations

import _common  # noqa: F401  (thread pools and sys.path first)

import math
from pathlib import Path

from rediffuse.evaluate import evaluate_folder, make_method, mean_table
from rediffuse.paths import REPO_ROOT, dataset_dir
from rediffuse.synthesis import default_photo_root, write_validation_set

REAL_SETS = ("Lytro", "MFI-WHU-test30", "Road-MF-sample8")
NO_REF = ("QMI", "QG", "Qabf", "QP", "QE", "MS-SSIM")
BOUNDARY_DIR = REPO_ROOT / "data" / "generated" / "boundary-val"


def boundary_set(n: int, size: int) -> Path | None:
    marker = BOUNDARY_DIR / "SOURCE.txt"
    if marker.is_file() and f"n={n} size={size}" in marker.read_text():
        return BOUNDARY_DIR
    if default_photo_root() is None:
        return None
    return write_validation_set(BOUNDARY_DIR, n=n, size=size)


def wins(table: dict, method: str, ref: str, metrics) -> str:
    """'k/n': on how many of ``metrics`` ``method`` is at or above ``ref``."""
    if ref not in table or method == ref:
        return ""
    ok = [m for m in metrics if not math.isnan(table[method].get(m, math.nan))
          and table[method][m] >= table[ref][m]]
    n = sum(not math.isnan(table[method].get(m, math.nan)) for m in metrics)
    return f"{len(ok)}/{n}"


def markdown(name: str, table: dict, metrics) -> str:
    cols = [m for m in metrics if any(m in row for row in table.values())]
    refs = [r for r in ("gff", "enfuse") if r in table]
    head = ["method", *cols, "s/pair", *[f"≥ {r}" for r in refs]]
    lines = [f"**{name}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in table.items():
        cells = [method, *[f"{row[m]:.4f}" if m in row and not math.isnan(row[m]) else "" for m in cols],
                 f"{row.get('seconds', math.nan):.2f}", *[wins(table, method, r, cols) for r in refs]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("-m", "--methods", nargs="+", required=True, metavar="METHOD")
    p.add_argument("--sets", nargs="+", default=[*REAL_SETS, "boundary-val"], metavar="SET")
    p.add_argument("--boundary-pairs", type=int, default=60, help="pairs in the boundary set (default: 60)")
    p.add_argument("--boundary-size", type=int, default=256, help="their side in pixels (default: 256)")
    p.add_argument("--out", default="outputs/bench-quality", help="folder for per-set CSV and summaries")
    args = p.parse_args()
    _common.setup(args)
    methods = [make_method(m) for m in args.methods]
    results: dict[str, dict] = {"methods": [m.name for m in methods], "threads": args.threads, "sets": {}}
    report = []
    for name in args.sets:
        folder = boundary_set(args.boundary_pairs, args.boundary_size) if name == "boundary-val" else dataset_dir(name)
        if folder is None:
            print(f"skipping {name}: not present")
            continue
        rows = evaluate_folder(folder, methods, Path(args.out) / name, save_images=False)
        table = mean_table(rows)
        metrics = NO_REF + (("PSNR", "SSIM", "PSNR-band", "SSIM-band") if name == "boundary-val" else ())
        results["sets"][name] = {"pairs": len({r["image"] for r in rows}), "means": table}
        report.append(markdown(f"{name} ({results['sets'][name]['pairs']} pairs)", table, metrics))
    text = "\n".join(report)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.md").write_text(text)
    _common.write_json(args.json, results)


if __name__ == "__main__":
    main()
