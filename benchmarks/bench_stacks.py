"""Focus stacks of N frames: rediffuse beside what photographers run, on the same stacks, in one run.

    python benchmarks/bench_stacks.py [--part synthetic|real|all] [--frames 5 8] [--stacks 6]
                                      [--size 384] [--checkpoints CKPT ...] [--json docs/results/bench-stacks.json]

1. ``synthetic``: ``--stacks`` stacks of each of ``--frames`` frames, ``--size``² pixels, rendered by
   the layered defocus model (``synthesis.LayeredPairs``) from the *validation* photos of
   ``../shared/data/photos``, with the nuisances of real stacks (exposure differences up to ±30 %,
   focus breathing, noise, JPEG), and their all-in-focus truth. Methods: rediffuse (the library's
   ``fuse`` with ``align="auto"``, as the command runs it), the same with the network's raw weights
   (no evidence fill) and with the frames blended as they are (no common exposure, ``exposure=False``), ``align_image_stack -m`` + enfuse (Hugin, as focus stackers run it), and the
   classical baselines generalised to N frames (GFF, focus-select, average; on the frames as they
   are; align_image_stack gets the truth's reference frame first, as it keeps its first frame fixed,
   and rediffuse that frame as ``reference``; each of ``--checkpoints``, a ``.pt`` such as a run of
   ``rediffuse train --stack-frames``, is one more row with the library's defaults). Scored against the truth, 12 px borders left out (breathing): PSNR and SSIM of the grey
   image, PSNR in the *spread band* (flat pixels of the truth within 15 px of an edge that some
   frame shows blurred: where a defocused edge spreads over its flat surroundings), the spurious
   gradient fraction (SGF: % of pixels with an edge that no frame has, ``metrics``), and the speckle
   count of the method's depth map (connected regions per megapixel after a 3×3 majority filter;
   rediffuse: ``--depth-map``; enfuse: its hard masks; focus-select: its decision map).
2. ``real``: ``../shared/data/real-stacks/pcb-10`` (10 frames of 2048×1536 JPEG, breathing up to
   ~170 px): ``rediffuse fuse frames… -o out.png --depth-map`` (a child process: its wall time
   includes starting Python and importing the library, as a user pays it; peak memory from
   ``os.wait4``) and ``align_image_stack -m -a al_ frames…`` + ``enfuse`` on ``al_*.tif``, in turn, in
   this run. The SGF of each result against the frames as that method registered them
   (rediffuse: its own ECC registration, re-run here; enfuse: ``al_*.tif``).

Needs enfuse and align_image_stack (Debian ``enfuse``, ``hugin-tools``) for their rows; each part
is skipped with a note when its data is absent.
"""
from __future__ import annotations

import _common  # noqa: F401  (thread pools and sys.path first)

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image  # the 16-bit depth map as stored (read_image would scale it to 8 bits)
from scipy import ndimage
from skimage.measure import label

from rediffuse.baselines import get_baseline
from rediffuse.fuse import load_stack_image
from rediffuse.imageio import read_image, write_image
from rediffuse.metrics import _gray64, psnr, spurious_gradient_fraction, ssim
from rediffuse.paths import dataset_dir
from rediffuse.peers import ENFUSE_FLAGS, get_peer
from rediffuse.stack import FrameReader

BORDER = 12
BAND_PX = 15


def _program(name: str) -> str | None:
    return shutil.which(name)


def speckles_per_mp(depth: np.ndarray, frames: int) -> float:
    """Connected regions (4-connected, one frame index each) per megapixel of a depth map
    ``[H, W]`` of frame indices, after a 3×3 majority filter (isolated pixels are no regions)."""
    counts = np.stack([ndimage.uniform_filter((depth == k).astype(np.float32), 3, mode="nearest")
                       for k in range(frames)])
    major = counts.argmax(0)
    n = label(major + 1, background=0, connectivity=1, return_num=True)[1]
    return n / (depth.size / 1e6)


def spread_band(gt: np.ndarray, frames: list[np.ndarray]) -> np.ndarray:
    """Flat pixels of the truth within ``BAND_PX`` of an edge that some frame shows blurred."""
    g = ndimage.gaussian_filter(_gray64(gt, "gt"), 1.0)
    grad = lambda x: np.hypot(*np.gradient(x))  # noqa: E731
    gg = grad(g)
    edge = gg > 8.0
    blurred = np.zeros_like(edge)
    for f in frames:
        blurred |= edge & (grad(ndimage.gaussian_filter(_gray64(f, "frame"), 1.0)) < 0.5 * gg)
    near = ndimage.binary_dilation(blurred, iterations=BAND_PX)
    return near & (gg < 2.0)


def _crop(a: np.ndarray) -> np.ndarray:
    return a[BORDER:-BORDER, BORDER:-BORDER]


def enfuse_stack(paths: list[Path], out: Path, masks: bool = False) -> tuple[float, float, Path]:
    """``align_image_stack -m -a al_`` then enfuse on its output; ``(wall s, child CPU s, folder)``.
    Where align_image_stack finds too few control points to register (small or flat frames), enfuse
    fuses the frames as they are, as a photographer would then do; the folder then holds no ``al_*``."""
    work = out.parent / "enfuse-work"
    work.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    c0 = _children_cpu()
    done = subprocess.run([_program("align_image_stack"), "-m", "-a", str(work / "al_"), *map(str, paths)],
                          capture_output=True)
    aligned = sorted(work.glob("al_*.tif")) if done.returncode == 0 else list(paths)
    extra = [f"--save-masks={work}/soft-%n.tif:{work}/hard-%n.tif"] if masks else []
    subprocess.run([_program("enfuse"), *ENFUSE_FLAGS, *extra, f"--output={out}", *map(str, aligned)],
                   check=True, capture_output=True)
    return time.perf_counter() - t0, _children_cpu() - c0, work


def _children_cpu() -> float:
    r = os.times()
    return r.children_user + r.children_system


def enfuse_depth(work: Path, frames: int) -> np.ndarray | None:
    """The frame index each enfuse hard mask gives a pixel (its "depth map")."""
    hard = sorted(work.glob("hard-*.tif"))
    if len(hard) != frames:
        return None
    m = np.stack([np.asarray(tifffile.imread(p), np.float32) for p in hard])
    m = m[..., 0] if m.ndim == 4 else m
    return m.argmax(0)


def focus_select_depth(frames: list[np.ndarray], window: int = 7) -> np.ndarray:
    """focus-select's decision: the frame of the largest local Laplacian energy."""
    e = [ndimage.uniform_filter(ndimage.laplace(_gray64(f, "f")) ** 2, window) for f in frames]
    return np.argmax(np.stack(e), 0)


def part_synthetic(frame_counts: list[int], stacks: int, size: int, threads: int,
                   checkpoints: tuple[str, ...] = ()) -> dict:
    from rediffuse.fuse import FusionModel, fuse
    from rediffuse.synthesis import LayeredPairs, PhotoLibrary, default_photo_root

    root = default_photo_root()
    if root is None:
        print("skipping the synthetic stacks: ../shared/data/photos not present")
        return {}
    library = PhotoLibrary(root, split="val", y_only=False)
    fm = FusionModel("weights")
    others = {f"rediffuse ({Path(ck).parent.name if Path(ck).name == 'last.pt' else Path(ck).stem})": FusionModel(ck)
              for ck in checkpoints}
    have_enfuse = _program("enfuse") and _program("align_image_stack")
    results = {}
    for n in frame_counts:
        ds = LayeredPairs(library, n=stacks, size=size + 2 * BORDER, frames=n, seed=4000 + n, nuisances=True)
        rows: dict[str, list[dict]] = {}
        for i in range(stacks):
            d = ds.sample(i)
            frames, gt, ref = [d[k] for k in ds.keys], d["GT"], int(d["reference"])
            order = [ref] + [k for k in range(n) if k != ref]  # align_image_stack keeps its first frame fixed
            band = _crop(spread_band(gt, frames))
            with tempfile.TemporaryDirectory(prefix="bench_stacks_") as tmp:
                tmp = Path(tmp)
                outs: dict[str, tuple[np.ndarray, np.ndarray | None, float]] = {}
                for name, fill, exposure in (("rediffuse", True, True), ("rediffuse, raw weights", False, True),
                                             ("rediffuse, plain blend", True, False)):
                    t0 = time.perf_counter()
                    f = fuse(frames, fm, align="auto", reference=ref, depth_map=tmp / "depth.png",
                             depth_index=True, evidence_fill=fill, exposure=exposure)
                    outs[name] = (f, np.asarray(Image.open(tmp / "depth.png")).astype(np.int64), time.perf_counter() - t0)
                for name, model in others.items():
                    t0 = time.perf_counter()
                    f = fuse(frames, model, align="auto", reference=ref, depth_map=tmp / "depth.png", depth_index=True)
                    outs[name] = (f, np.asarray(Image.open(tmp / "depth.png")).astype(np.int64), time.perf_counter() - t0)
                if have_enfuse:
                    paths = []
                    for k in order:
                        paths.append(tmp / f"frame{k}.png")
                        write_image(paths[-1], frames[k])
                    wall, _, work = enfuse_stack(paths, tmp / "enfuse.tif", masks=True)
                    f = tifffile.imread(tmp / "enfuse.tif")
                    f = f[..., :3] if f.ndim == 3 and f.shape[-1] == 4 else f
                    depth = enfuse_depth(work, n)
                    depth = None if depth is None else np.asarray(order)[depth]  # back to the frames' numbers
                    outs["align_image_stack + enfuse"] = (f.astype(np.uint8), depth, wall)
                    t0 = time.perf_counter()  # the frames as they are (align_image_stack fails on some)
                    f = get_peer("enfuse")([frames[k] for k in order])
                    outs["enfuse (frames as they are)"] = (f, None, time.perf_counter() - t0)
                for base in ("gff", "focus-select", "average"):
                    t0 = time.perf_counter()
                    f = get_baseline(base)(frames)
                    depth = focus_select_depth(frames) if base == "focus-select" else None
                    outs[base] = (f, depth, time.perf_counter() - t0)
            for name, (f, depth, secs) in outs.items():
                fc, gc = _crop(f), _crop(gt)
                err = (_gray64(fc, "f") - _gray64(gc, "gt"))[band]
                row = {"PSNR": psnr(fc, gc), "SSIM": ssim(fc, gc),
                       "PSNR-spread": 10 * np.log10(255 ** 2 / max(float(np.mean(err ** 2)), 1e-12)) if band.any()
                       else float("nan"),
                       "SGF": 100 * spurious_gradient_fraction([_crop(x) for x in frames], fc),
                       "speckles/MP": speckles_per_mp(_crop(depth), n) if depth is not None else float("nan"),
                       "seconds": secs}
                rows.setdefault(name, []).append(row)
            print(f"{n} frames, stack {i + 1}/{stacks}: " + ", ".join(
                f"{k} {v[-1]['PSNR']:.2f}/{v[-1]['PSNR-spread']:.2f} dB SGF {v[-1]['SGF']:.3f}" for k, v in rows.items()),
                flush=True)
        table = {name: {k: float(np.nanmean([r[k] for r in rs])) for k in rs[0]} for name, rs in rows.items()}
        results[f"{n} frames"] = {"stacks": stacks, "size": size, "means": table}
        print(markdown(f"{n}-frame synthetic stacks ({stacks} of {size}², nuisances)", table))
    return results


def part_real(threads: int) -> dict:
    folder = dataset_dir("real-stacks/pcb-10")
    if folder is None:
        print("skipping pcb-10: ../shared/data/real-stacks/pcb-10 not present")
        return {}
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif"))
    out: dict = {"frames": len(paths), "size": list(read_image(paths[0]).shape[1::-1])}
    with tempfile.TemporaryDirectory(prefix="bench_stacks_real_") as tmp:
        tmp = Path(tmp)
        code, wall, rss_kb, cpu = _common.run_fuse_cli(paths, tmp / "fused.png", threads=threads, steps=None,
                                                       checkpoint="weights", extra=("--depth-map", str(tmp / "depth.png")))
        out["rediffuse"] = {"exit": code, "wall_s": wall, "cpu_s": cpu, "peak_rss_gb": rss_kb / 1024 ** 2}
        print(f"pcb-10, rediffuse fuse (defaults, {threads} thread(s)): exit {code}, wall {wall:.1f} s, "
              f"CPU {cpu:.1f} s, peak RSS {rss_kb / 1024 ** 2:.2f} GB", flush=True)
        if _program("enfuse") and _program("align_image_stack"):
            ewall, ecpu, work = enfuse_stack(paths, tmp / "enfuse.tif")
            out["align_image_stack + enfuse"] = {"wall_s": ewall, "cpu_s": ecpu}
            print(f"pcb-10, align_image_stack + enfuse: wall {ewall:.1f} s, CPU {ecpu:.1f} s; "
                  f"rediffuse / them: wall {wall / ewall:.2f}×", flush=True)
            f = read_image(tmp / "enfuse.tif")
            f = f[..., :3] if f.ndim == 3 and f.shape[-1] == 4 else f
            al = [read_image(p)[..., :3] for p in sorted(work.glob("al_*.tif"))]
            out["align_image_stack + enfuse"]["SGF"] = 100 * spurious_gradient_fraction(al, f.astype(np.uint8))
        if code == 0:
            # pcb-10 is 8-bit JPEG: the public reader gives the frames as fuse reads them
            frames = FrameReader(lambda i: (load_stack_image(paths[i]), 8), [str(p) for p in paths])
            frames.survey("auto")
            reg = [frames.frame(i)[0] for i in range(len(paths))]
            reg = [np.clip(np.rint(r), 0, 255).astype(np.uint8) for r in reg]
            out["rediffuse"]["SGF"] = 100 * spurious_gradient_fraction(reg, read_image(tmp / "fused.png"))
        for k in ("rediffuse", "align_image_stack + enfuse"):
            if "SGF" in out.get(k, {}):
                print(f"pcb-10 SGF {k}: {out[k]['SGF']:.4f} %")
    return out


def markdown(title: str, table: dict) -> str:
    cols = ["PSNR", "PSNR-spread", "SSIM", "SGF", "speckles/MP", "seconds"]
    lines = [f"**{title}**", "", "| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join("" if np.isnan(row[c]) else f"{row[c]:.4f}" if c in ("SSIM", "SGF")
                                                 else f"{row[c]:.2f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--part", choices=("synthetic", "real", "all"), default="all")
    p.add_argument("--frames", type=int, nargs="+", default=[5, 8])
    p.add_argument("--stacks", type=int, default=6)
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--checkpoints", nargs="+", default=[], metavar="CKPT",
                   help="more models (a .pt or a shipped name), one row each with the library's defaults")
    args = p.parse_args()
    _common.setup(args)
    results: dict = {"threads": args.threads}
    if args.part in ("synthetic", "all"):
        results["synthetic"] = part_synthetic(args.frames, args.stacks, args.size, args.threads,
                                              tuple(args.checkpoints))
    if args.part in ("real", "all"):
        results["real"] = part_real(args.threads)
    _common.write_record(args.json, _tables(results.get("synthetic", {})), values=_values(results.get("real", {})),
                         results=results)


_COLUMNS = [("method", "method", ""), ("PSNR", "PSNR (dB)", ".2f"), ("PSNR-spread", "spread band (dB)", ".2f"), ("SSIM", "SSIM", ".4f"),
            ("SGF", "SGF (%)", ".4f"), ("speckles/MP", "speckles per MP", ".0f"), ("seconds", "s", ".1f")]


def _tables(synthetic: dict) -> dict:
    """One table per stack length: a row per method, the means over the stacks."""
    return {key.replace(" ", "-"): _common.table(_COLUMNS, [{"id": name, "method": name, **row}
                                                            for name, row in part["means"].items()])
            for key, part in synthetic.items()}


def _values(real: dict) -> dict:
    """The scalars of the pcb-10 run that prose quotes (rediffuse against align_image_stack + enfuse)."""
    ours, theirs = real.get("rediffuse", {}), real.get("align_image_stack + enfuse", {})
    if not ours or not theirs:
        return {}
    return {"pcb10_wall_s": round(ours["wall_s"], 1), "pcb10_cpu_s": round(ours["cpu_s"], 1),
            "pcb10_peak_gb": round(ours["peak_rss_gb"], 2), "enfuse_wall_s": round(theirs["wall_s"], 1),
            "wall_ratio": round(ours["wall_s"] / theirs["wall_s"], 2),
            "pcb10_sgf": round(ours.get("SGF", float("nan")), 4), "enfuse_sgf": round(theirs.get("SGF", float("nan")), 4)}


if __name__ == "__main__":
    main()
