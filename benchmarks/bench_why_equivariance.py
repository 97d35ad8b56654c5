"""Why equivariance helps: the Rot-E U-Net and its plain twin trained alike on 8, 32 and all 90
NYU-D training pairs without rotation augmentation, tested upright and turned on the ten held-out pairs.

    python benchmarks/bench_why_equivariance.py [--folder DIR] [--sizes 8 32 90] [--steps 1000]
                                                [--batch 8] [--crop 64] [--window 224] [--compare 96]
                                                [--curve-step 15] [--root outputs/why-equivariance]
                                                [--control] [--figures DIR] [--threads 1]
                                                [--json OUT.json]

Both models are the small preset's weight-map U-Net (base 16, ×[1, 2, 4]; conv "bconv" or "plain",
equal channel widths), trained with the same pairs, crops, steps, batch and seed
(``rediffuse.sample_efficiency``). ``--control`` adds a third network, the plain one at base 8 with
about the Rot-E model's parameters (``sample_efficiency.CONTROLS``): it separates what the
convolution does from what three times the parameters do. Runs and scores are kept in ``--root``: a second call reuses
finished runs and scores, resumes an unfinished run, and refuses a folder holding other settings.
Prints the Markdown table (README); ``--figures DIR`` also writes the two figures of notebook 06 there
(``why_equivariance_pairs.png``: PSNR against training pairs; ``why_equivariance_angles.png``: PSNR
and consistency error against the input angle); ``--json`` gets the study, CPU seconds and wall time.
"""
from __future__ import annotations

import _common  # first: thread pools and sys.path

import platform
import time
from pathlib import Path

from rediffuse.data import NYU_TEST_STEMS, NYU_TRAIN_STEMS
from rediffuse.paths import dataset_dir
from rediffuse.sample_efficiency import CONTROLS, MODELS, Views, run_study, study_config
from rediffuse.viz.ablation import plot_angle_curve, plot_sample_efficiency, study_markdown


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--folder", default=None, help="pairs with GT/ (default: NYU-D-100 under the shared data)")
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 90])
    p.add_argument("--steps", type=int, default=1000, help="training steps of every model (default: %(default)s)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=int, default=224, help="side of the fused test window")
    p.add_argument("--compare", type=int, default=96, help="side of the central square that is scored")
    p.add_argument("--curve-step", type=float, default=15.0, help="degrees between the angles of the curve")
    p.add_argument("--control", action="store_true",
                   help="also train and score the plain network with about Rot-E's parameters (base 8)")
    p.add_argument("--figures", metavar="DIR", default=None, help="write the two figures (PNG) to DIR")
    p.add_argument("--root", default=str(_common.REPO_ROOT / "outputs" / "why-equivariance"))
    a = p.parse_args(argv)
    device = _common.setup(a)
    folder = a.folder or dataset_dir("NYU-D-100")
    if folder is None:
        p.error("no NYU-D-100 folder: pass --folder DIR (pairs with A/, B/, GT/) or set REDIFFUSE_SHARED")
    base = study_config(a.steps, batch=a.batch, crop=a.crop, seed=a.seed)
    views = Views(a.window, a.compare)
    t0, c0 = time.perf_counter(), time.process_time()
    study = run_study(folder, NYU_TRAIN_STEMS, folder, NYU_TEST_STEMS, a.sizes, base, a.root, views=views,
                      curve_step=a.curve_step, device=device, log=lambda s: print(s, flush=True),
                      models={**MODELS, **(CONTROLS if a.control else {})})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print()
    print(study_markdown(study, total_pairs=len(NYU_TRAIN_STEMS),
                         title=f"NYU-D 091–100, central {a.compare}² of a {a.window}² window; "
                               f"{a.steps} steps, batch {a.batch}, {a.crop}² crops, seed {a.seed}"))
    print(f"this call: {cpu:.0f} CPU s, {wall:.0f} s wall ({a.threads} thread(s); finished runs and scores "
          "found in --root are reused, not counted again)")
    if a.figures:
        out = Path(a.figures)
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in (("why_equivariance_pairs.png", plot_sample_efficiency(study)),
                          ("why_equivariance_angles.png", plot_angle_curve(study))):
            fig.savefig(out / name, dpi=110, bbox_inches="tight")
            print(f"wrote {out / name}")
    _common.write_json(a.json, {"folder": str(folder), "root": a.root, "threads": a.threads,
                                "cpu": platform.processor() or platform.machine(), "cpu_s": cpu, "wall_s": wall,
                                "study": study})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
