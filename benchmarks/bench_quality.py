"""Fusion quality of models, baselines and peers on the same images, side by side, in one run.

Sets (each skipped with a note when absent): Lytro (20 real colour pairs), MFI-WHU-test30 and
Road-MF-sample8 (real pairs kept apart from training), and the synthetic boundary-validation set
(pairs with ground truth rendered by the layered defocus model from the *validation* photos; made
on first use in ``data/generated/boundary-val``); on request (``--sets boundary-clean``) the same
pairs rendered without the nuisances (no exposure difference, breathing, noise or JPEG). Reported: the six no-reference metrics, the spurious gradient
fraction (SGF, % of pixels with an edge no source has), PSNR/SSIM
against ground truth over the image and inside the 15-px band around every focus boundary, seconds
per pair, and for each method how many metrics it is at or above GFF and enfuse. Sets with ground
truth also get its row: the no-reference metrics of the perfect answer.

    python benchmarks/bench_quality.py -m weights weights-plain gff enfuse stackmff focus-select \\
        --json outputs/bench-quality.json
    python benchmarks/bench_quality.py -m average gff weights --sets Lytro --leaderboard --json OUT.json

``--leaderboard`` adds, for Lytro, the published methods of Liu et al. (2020) on the same pairs
(``rediffuse.evaluate.leaderboard``); ``--stems`` scores only the named pairs (held-out NYU-D pairs).

A method is a baseline name, a peer (``enfuse``, ``stackmff``: need their programs), a shipped model
name or a checkpoint path (as for ``rediffuse evaluate``).
"""
from __future__ import annotations

import _common  # noqa: F401  (thread pools and sys.path first)

import math
from pathlib import Path

from rediffuse.evaluate import evaluate_folder, make_method, markdown_table, mean_table
from rediffuse.paths import REPO_ROOT, dataset_dir
from rediffuse.synthesis import default_photo_root, write_validation_set

REAL_SETS = ("Lytro", "MFI-WHU-test30", "Road-MF-sample8")
NO_REF = ("QMI", "QG", "Qabf", "QP", "QE", "MS-SSIM")
# the spurious gradient fraction (% of pixels with an edge no source has): lower is better, so it
# takes no part in the "≥ gff / enfuse" counts
LOWER_BETTER = ("SGF",)
BOUNDARY_DIR = REPO_ROOT / "data" / "generated" / "boundary-val"
CLEAN_DIR = REPO_ROOT / "data" / "generated" / "boundary-clean"
SYNTHETIC_SETS = ("boundary-val", "boundary-clean")


def boundary_set(n: int, size: int, nuisances: bool = True) -> Path | None:
    folder = BOUNDARY_DIR if nuisances else CLEAN_DIR
    marker = folder / "SOURCE.txt"
    if marker.is_file() and f"n={n} size={size} seed=2026 nuisances={nuisances}" in marker.read_text():
        return folder
    if default_photo_root() is None:
        return None
    return write_validation_set(folder, n=n, size=size, nuisances=nuisances)


def truth_scores(folder: Path) -> dict:
    """Mean no-reference metrics of the ground truth itself (``folder/GT``) against its pair: what a
    perfect fusion scores, so that a method scoring above it is seen to be rewarded for something else."""
    import numpy as np

    from rediffuse.imageio import read_image
    from rediffuse.metrics import evaluate

    rows = []
    for gt in sorted((folder / "GT").iterdir()):
        a, b = (read_image(next((folder / k).glob(gt.stem + ".*"))) for k in ("A", "B"))
        rows.append(evaluate(a, b, read_image(gt)))
    return {m: float(np.mean([r[m] for r in rows])) for m in NO_REF + LOWER_BETTER} | {"seconds": 0.0}


def wins(table: dict, method: str, ref: str, metrics) -> str:
    """'k/n': on how many of ``metrics`` ``method`` is at or above ``ref``."""
    if ref not in table or method == ref:
        return ""
    ok = [m for m in metrics if not math.isnan(table[method].get(m, math.nan))
          and table[method][m] >= table[ref][m]]
    n = sum(not math.isnan(table[method].get(m, math.nan)) for m in metrics)
    return f"{len(ok)}/{n}"


def record_table(table: dict, metrics, ids: dict[str, str]) -> dict:
    """The set's table in the common record schema (``_common.table``), as :func:`markdown` prints it;
    each row's id is the method as given on the command line (``ids``: name → spec)."""
    cols = [m for m in metrics if any(m in row for row in table.values())]
    refs = [r for r in ("gff", "enfuse") if r in table]
    columns = [("method", "method", ""), *[(m, m, ".4f") for m in cols], ("seconds", "s/pair", ".2f"),
               *[(f"ge_{r}", f"≥ {r}", "") for r in refs]]
    is_truth = "ground truth (the photo itself)"
    rows = [{"id": "ground truth" if method == is_truth else ids.get(method, method), "method": method,
             **{m: row.get(m) for m in cols}, "seconds": None if method == is_truth else row.get("seconds"),
             **{f"ge_{r}": wins(table, method, r, [m for m in cols if m not in LOWER_BETTER]) for r in refs}}
            for method, row in table.items()]
    return _common.table(columns, rows)


def leaderboard_table(table: dict, stems: list[str], ids: dict[str, str]) -> dict:
    """Lytro's published methods and ours (``table``, without the ground-truth row), sorted by QMI;
    our rows' ids are the methods as given on the command line, the published ones their names."""
    from rediffuse.evaluate import LEADERBOARD_METRICS, leaderboard

    board = leaderboard({m: v for m, v in table.items() if not m.startswith("ground truth")}, images=stems)
    columns = [("method", "method", ""), ("source", "source", ""), *[(m, m, ".4f") for m in LEADERBOARD_METRICS]]
    rows = [{"id": ids.get(r["method"], r["method"]) if r["source"] == "ours" else r["method"], **r} for r in board]
    return _common.table(columns, rows)


def markdown(name: str, table: dict, metrics) -> str:
    cols = [m for m in metrics if any(m in row for row in table.values())]
    refs = [r for r in ("gff", "enfuse") if r in table]
    head = ["method", *cols, "s/pair", *[f"≥ {r}" for r in refs]]
    lines = [f"**{name}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in table.items():
        cells = [method, *[f"{row[m]:.4f}" if m in row and not math.isnan(row[m]) else "" for m in cols],
                 f"{row.get('seconds', math.nan):.2f}",
                 *[wins(table, method, r, [m for m in cols if m not in LOWER_BETTER]) for r in refs]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("-m", "--methods", nargs="+", required=True, metavar="METHOD")
    p.add_argument("--sets", nargs="+", default=[*REAL_SETS, "boundary-val"], metavar="SET")
    p.add_argument("--boundary-pairs", type=int, default=60, help="pairs in the boundary set (default: 60)")
    p.add_argument("--boundary-size", type=int, default=256, help="their side in pixels (default: 256)")
    p.add_argument("--out", default="outputs/bench-quality", help="folder for per-set CSV and summaries")
    p.add_argument("--stems", nargs="+", default=None, metavar="STEM", help="score only these pairs of each set")
    p.add_argument("--leaderboard", action="store_true",
                   help="for Lytro, also the published methods of Liu et al. (2020) on the same pairs")
    args = p.parse_args()
    _common.setup(args)
    methods = [make_method(m) for m in args.methods]
    ids = {m.name: spec for m, spec in zip(methods, args.methods)}  # rows' ids in the record
    meta = _common.run_meta(args.threads)
    results: dict[str, dict] = {"methods": [m.name for m in methods], "threads": args.threads, "sets": {}}
    tables: dict[str, dict] = {}
    report = []
    for name in args.sets:
        folder = (boundary_set(args.boundary_pairs, args.boundary_size, name == "boundary-val")
                  if name in SYNTHETIC_SETS else dataset_dir(name))
        if folder is None:
            print(f"skipping {name}: not present")
            continue
        rows = evaluate_folder(folder, methods, Path(args.out) / name, stems=args.stems, save_images=False)
        table = mean_table(rows)
        stems = sorted({r["image"] for r in rows})
        if (Path(folder) / "GT").is_dir() and args.stems is None:
            table["ground truth (the photo itself)"] = truth_scores(Path(folder))
        metrics = NO_REF + LOWER_BETTER + (("PSNR", "SSIM", "PSNR-band", "SSIM-band") if (Path(folder) / "GT").is_dir() else ())
        results["sets"][name] = {"pairs": len(stems), "stems": stems, "means": table}
        report.append(markdown(f"{name} ({results['sets'][name]['pairs']} pairs)", table, metrics))
        tables[name] = record_table(table, metrics, ids)
        if args.leaderboard and name == "Lytro":
            tables["leaderboard"] = leaderboard_table(table, stems, ids)
            report.append(markdown_table([{k: v for k, v in r.items() if k != "id"}
                                          for r in tables["leaderboard"]["rows"]]))
    text = "\n".join(report)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.md").write_text(text)
    _common.write_record(args.json, tables, results=results, meta=meta)


if __name__ == "__main__":
    main()
