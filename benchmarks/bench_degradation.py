"""Degradation-aware fusion: PSNR/SSIM against ground truth for each degradation and pipeline.

    python benchmarks/bench_degradation.py [--checkpoint P] [--degradations noise15 blur2 avgpool2 bicubic4]
                                           [--synthetic 10] [--crop 0] [--threads 1] [--json OUT.json]

Pairs: NYU-D pairs 091–100 (held out from the shipped models' training; whole images unless --crop)
and ``--synthetic`` new synthetic pairs (256², seed 1000: new masks and crops of the scikit-image
photos the training pairs came from). Both sources of a pair are degraded by the same operator, then
fused by ``plain``, ``restore``, ``correct`` (see ``rediffuse.restore``) and ``restore+gff``.
"""
from __future__ import annotations

import _common  # first: thread pools and sys.path

import tempfile
from pathlib import Path

from rediffuse.data import NYU_TEST_STEMS, generate_synthetic_folder
from rediffuse.evaluate import markdown_table
from rediffuse.fuse import FusionModel
from rediffuse.paths import dataset_dir
from rediffuse.restore import DEGRADATION_SETTINGS, degradation_rows, degradation_table


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--degradations", nargs="+", default=list(DEGRADATION_SETTINGS), choices=list(DEGRADATION_SETTINGS))
    p.add_argument("--synthetic", type=int, default=10)
    p.add_argument("--crop", type=int, default=0)
    a = p.parse_args(argv)
    _common.setup(a)
    fm = FusionModel(a.checkpoint)
    settings = [DEGRADATION_SETTINGS[n] for n in a.degradations]
    sets = {}
    nyu = dataset_dir("NYU-D-100")
    if nyu is not None:
        sets["NYU-D 091-100"] = (nyu, list(NYU_TEST_STEMS))
    tmp = tempfile.TemporaryDirectory()
    if a.synthetic:
        sets[f"synthetic ({a.synthetic})"] = (generate_synthetic_folder(Path(tmp.name) / "syn", n=a.synthetic,
                                                                        seed=1000, size=256), None)
    out = {"checkpoint": str(fm.path), "crop": a.crop, "tables": {}}
    for label, (folder, stems) in sets.items():
        rows = degradation_rows(fm, folder, settings, stems=stems, crop=a.crop or None)
        table = degradation_table(rows)
        out["tables"][label] = table
        flat = [{"degradation": d, "method": m, **v} for d, per in table.items() for m, v in per.items()]
        print(markdown_table(flat, title=label))
    _common.write_json(a.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
