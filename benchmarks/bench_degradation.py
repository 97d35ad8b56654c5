"""Degradation-aware fusion: PSNR/SSIM against ground truth for each degradation and pipeline.

    python benchmarks/bench_degradation.py [--checkpoint P] [--degradations noise15 blur2 avgpool2 bicubic4]
                                           [--synthetic 10] [--crop 0] [--threads 1] [--json OUT.json]

Pairs: NYU-D pairs 091–100 (held out from the shipped models' training; whole images unless --crop)
and ``--synthetic`` new synthetic pairs (256², seed 1000: new masks and crops of the scikit-image
photos the training pairs came from). Both sources of a pair are degraded by the same operator, then
fused by ``plain``, ``restore``, ``correct`` (see ``rediffuse.restore``) and ``restore+gff``.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from rediffuse.data import NYU_TEST_STEMS, generate_synthetic_folder  # noqa: E402
from rediffuse.evaluate import markdown_table  # noqa: E402
from rediffuse.fuse import FusionModel  # noqa: E402
from rediffuse.paths import dataset_dir  # noqa: E402
from rediffuse.restore import DEGRADATION_SETTINGS, degradation_rows, degradation_table  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--degradations", nargs="+", default=list(DEGRADATION_SETTINGS), choices=list(DEGRADATION_SETTINGS))
    p.add_argument("--synthetic", type=int, default=10)
    p.add_argument("--crop", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
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
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
