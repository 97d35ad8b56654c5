"""How the frames of an N-frame stack get their weights: probes of designs, on stacks with truth.

    python benchmarks/probe_stack_weights.py [--frames 5 8] [--stacks 3] [--size 384]
        [--variants mean best:6 prior:16 tau:1] [--checkpoint weights [CKPT ...]] [--json OUT.json]

``rediffuse.fuse`` weighs frame i of N by the pair network against the mean of the other frames,
``l_i = f(Y_i, R_i)``, and blends by ``softmax_i(l_i / τ)`` (``rediffuse.stack.fuse_softmax``).
Against the mean of the rest, every frame sharper than that mean looks sharp, so with many frames
the weights spread over frames of similar blur. This script measures alternatives on the stacks of
``bench_stacks.py --part synthetic`` (same seeds, same scoring: PSNR / PSNR in the spread band /
SGF / depth-map speckles per MP), beside GFF and focus-select, in one run:

- ``mean``: the library as it is;
- ``best:β``: ``R_i`` the focus-weighted mean of the others, weights ``E_j^β`` (``E`` the
  relative gradient energy of ``rediffuse.evidence.focus_energy`` after a Gaussian of σ 2 px): the best of
  the rest instead of its mean;
- ``prior:γ``: ``softmax_i(l_i / τ + γ · G₂ * log E_i)``: the network's weights with a sharpness
  prior that breaks ties between frames it rates alike;
- ``tau:τ``: another softmax temperature;
- every ``--checkpoint`` (a shipped name or a ``.pt``, e.g. a run of ``rediffuse train
  --stack-frames``; ``PATH:raw`` for a run's training weights instead of its EMA weights): the
  library as it is with that model (the variants run with the first checkpoint).

Every variant keeps the fusion order-independent (a per-frame function, or sums over all frames).
"""
from __future__ import annotations

import _common  # noqa: F401  (thread pools and sys.path first)

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

import rediffuse.fuse as fuse_module
from bench_stacks import BORDER, _crop, speckles_per_mp, spread_band
from rediffuse import stack
from rediffuse.baselines import get_baseline
from rediffuse.data import image_to_tensor, luma
from rediffuse.evidence import focus_energy
from rediffuse.metrics import _gray64, psnr, spurious_gradient_fraction

_LIBRARY_SOFTMAX = stack.fuse_softmax


def _log_energy(a: np.ndarray) -> np.ndarray:
    """``log(G₂ * E)`` ``[1, H, W]`` float32 of a frame (0–255, grey or RGB)."""
    e = ndimage.gaussian_filter(focus_energy(luma(np.asarray(a, np.float32))), 2.0)
    return np.log(np.maximum(e, 1e-12))[None].astype(np.float32)


def best_of_rest_softmax(beta: float):
    """``fuse_softmax`` with ``R_i`` the ``E^β``-weighted mean of the other frames (a 1e-3 share of
    their plain mean keeps it defined where one frame dominates)."""
    def run(frames, logit, total, *, channels, tau=stack.TAU, depth=False, keep=None, rgb=False):
        n = frames.n
        sharp = stack.OnlineSoftmax(n, total.shape)
        z = []
        for i in range(n):
            a, valid = frames.frame(i)
            z.append(beta * _log_energy(a))
            sharp.add(i, z[-1], image_to_tensor(a, y_only=channels == 1).numpy(), valid)
        acc = stack.OnlineSoftmax(n, total.shape, depth=depth, keep=keep, value_channels=3 if rgb else None)
        for i in range(n):
            a, valid = frames.frame(i)
            y = image_to_tensor(a, y_only=channels == 1)
            values = image_to_tensor(a, y_only=False).numpy() if rgb else None
            yn = y.numpy()
            w = np.exp(z[i] - sharp.m).astype(np.float64)
            rest = (sharp.num - w * yn + 1e-3 * (total - yn)) / (sharp.d - w + 1e-3 * (n - 1))
            out = logit(y[None], torch.from_numpy(rest.astype(np.float32))[None])[0].cpu().numpy()
            acc.add(i, out, yn if values is None else values, valid, scale=1.0 / tau)
        return acc
    return run


def prior_softmax(gamma: float):
    """``fuse_softmax`` with ``τ · γ · G₂ * log E_i`` added to each frame's logit (after the evidence fill, so it acts in flat regions too)."""
    def run(frames, logit, total, *, channels, tau=stack.TAU, **kw):
        def with_prior(y, r):
            grey = ((y[0].mean(0).numpy() + 1) * 127.5).astype(np.float32)
            prior = ndimage.gaussian_filter(np.log(np.maximum(focus_energy(grey), 1e-8)), 2.0)
            return logit(y, r) + torch.from_numpy((tau * gamma * prior)[None, None].astype(np.float32))
        return _LIBRARY_SOFTMAX(frames, with_prior, total, channels=channels, tau=tau, **kw)
    return run


def tau_softmax(temperature: float):
    """``fuse_softmax`` at temperature ``temperature`` instead of ``stack.TAU``."""
    def run(frames, logit, total, *, channels, tau=stack.TAU, **kw):
        return _LIBRARY_SOFTMAX(frames, logit, total, channels=channels, tau=temperature, **kw)
    return run


def variant(spec: str):
    """The ``fuse_softmax`` a ``--variants`` entry names."""
    kind, _, value = spec.partition(":")
    if kind == "mean":
        return _LIBRARY_SOFTMAX
    makers = {"best": best_of_rest_softmax, "prior": prior_softmax, "tau": tau_softmax}
    if kind not in makers or not value:
        raise SystemExit(f"unknown variant {spec!r}: use mean, best:BETA, prior:GAMMA or tau:TAU")
    return makers[kind](float(value))


def score(f: np.ndarray, gt: np.ndarray, frames: list[np.ndarray], band: np.ndarray, depth, n: int) -> tuple:
    fc, gc = _crop(f), _crop(gt)
    err = (_gray64(fc, "f") - _gray64(gc, "gt"))[band]
    return (psnr(fc, gc), 10 * np.log10(255 ** 2 / max(float(np.mean(err ** 2)), 1e-12)),
            100 * spurious_gradient_fraction([_crop(x) for x in frames], fc),
            speckles_per_mp(_crop(depth), n) if depth is not None else float("nan"))


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--frames", type=int, nargs="+", default=[5, 8])
    p.add_argument("--stacks", type=int, default=3)
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--variants", nargs="+", default=["mean", "best:6", "prior:16", "tau:1"])
    p.add_argument("--checkpoint", nargs="+", default=["weights"])
    args = p.parse_args()
    _common.setup(args)
    from rediffuse.synthesis import LayeredPairs, PhotoLibrary, default_photo_root

    root = default_photo_root()
    if root is None:
        print("skipping: ../shared/data/photos not present")
        return
    library = PhotoLibrary(root, split="val", y_only=False)
    # "CKPT:raw": the training weights of a run's checkpoint instead of its EMA weights
    models = {ck: fuse_module.FusionModel(ck.removesuffix(":raw"), ema=not ck.endswith(":raw")) for ck in args.checkpoint}
    runs = [(f"{ck} {v}" if len(models) > 1 else v, ck, v) for ck in models for v in args.variants
            if v == "mean" or ck == args.checkpoint[0]]
    results = {}
    for n in args.frames:
        ds = LayeredPairs(library, n=args.stacks, size=args.size + 2 * BORDER, frames=n, seed=4000 + n, nuisances=True)
        rows: dict[str, list[tuple]] = {}
        for i in range(args.stacks):
            d = ds.sample(i)
            frames, gt, ref = [d[k] for k in ds.keys], d["GT"], int(d["reference"])
            band = _crop(spread_band(gt, frames))
            for name, ck, v in runs:
                fuse_module.fuse_softmax = variant(v)
                try:
                    t0 = time.perf_counter()
                    with tempfile.TemporaryDirectory() as tmp:
                        f = fuse_module.fuse(frames, models[ck], align="auto", reference=ref,
                                             depth_map=Path(tmp) / "d.png", depth_index=True)
                        depth = np.asarray(Image.open(Path(tmp) / "d.png")).astype(np.int64)
                finally:
                    fuse_module.fuse_softmax = _LIBRARY_SOFTMAX
                rows.setdefault(name, []).append(score(f, gt, frames, band, depth, n) + (time.perf_counter() - t0,))
            for base in ("gff", "focus-select"):
                rows.setdefault(base, []).append(score(get_baseline(base)(frames), gt, frames, band, None, n) + (0.0,))
            print(f"{n} frames, stack {i + 1}/{args.stacks}: " +
                  ", ".join(f"{k} {v[-1][0]:.2f}/{v[-1][1]:.2f}" for k, v in rows.items()), flush=True)
        table = {k: dict(zip(("PSNR", "PSNR-spread", "SGF", "speckles/MP", "seconds"),
                             (float(x) for x in np.nanmean(np.array(v, float), 0)))) for k, v in rows.items()}
        results[f"{n} frames"] = {"stacks": args.stacks, "size": args.size, "means": table}
        print(f"\n{n}-frame stacks ({args.stacks} of {args.size}²): PSNR / spread band / SGF % / speckles per MP")
        for k, r in table.items():
            print(f"  {k:24s} {r['PSNR']:6.2f} / {r['PSNR-spread']:6.2f} / {r['SGF']:.4f} / {r['speckles/MP']:.0f}")
    _common.write_json(args.json, results)


if __name__ == "__main__":
    main()
