"""The fusion pipeline: a trained U-Net + a sampler, applied to the luminance of a focus stack.

``fuse(images, model)`` takes a focus stack (arrays or file names) and returns the fused image, the
size of the inputs: ``uint8``, or ``uint16`` when an input holds finer levels than 8 bits (16-bit
files or arrays), so 16 bits in give 16 bits out:

- **Colour.** A luminance model sees Y only. With a weight-map model (the default ``colour="auto"``
  → ``"weights"``) each source's weight map is then applied to its R, G and B alike: every output
  pixel is a convex combination of the sources' pixels, so where one source is chosen its pixel is
  copied exactly, colour included (the paper's chroma rule mixes in the other source's chroma
  there, and the Y'CbCr round trip moves grey levels by ±1; on Lytro this costs the same weight
  maps 0.05 QMI). ``colour="paper"`` (the only choice for ε/x₀ models, which have no weights) fuses
  Y by the model and Cb, Cr by the saturation-weighted rule ``Σ C_i |C_i − 128| / Σ |C_i − 128|``
  over *all* sources, as in the ReDiffuse code (``data.recombine``, in row strips). Grey stacks
  give grey output. A stack mixing grey and colour is fused in colour, the grey images counting as
  neutral (R = G = B; chroma 128, so they take no part in the chroma rule); a ``UserWarning`` says
  so. An RGB model (FusionDiff-style, 9 inputs and 3 outputs, ``rediffuse train --rgb``) fuses R,
  G and B directly instead.
- **Stacks of N ≥ 2 images, order-independent** (``symmetric``, the default for N > 2): a weight-map
  model gives every frame a logit l_i = f(Y_i, R_i) against R_i, the mean of the other frames (one
  sampling run per frame, same seed), and the fused luminance is Σ_i softmax_i(l_i / 2) · Y_i. No
  step depends on the order of the frames. For N = 2 this is σ((f(A, B) − f(B, A)) / 2), the pair
  model made symmetric in its inputs (two runs instead of one). ``symmetric=False`` folds pairwise
  instead, F = ((Y₁ ⊕ Y₂) ⊕ Y₃) ⊕ …, which depends on the order (the only way for ε/x₀ models, which
  have no weights). The frames are streamed (``rediffuse.stack``): a stack of 50 frames of 24 MP is
  never in memory at once. ``depth_map`` writes the index of each pixel's strongest frame,
  ``save_weights`` every frame's weight map.
- **Alignment** (``align``: ``"none"`` by default here, ``"auto"`` in ``rediffuse fuse``): frames are
  registered to frame ``reference`` with OpenCV's ECC on a luminance pyramid (``rediffuse.align``:
  translation, similarity for focus breathing and handheld shots, or homography); ``"auto"``
  registers only when a cheap check finds a frame misaligned by more than a pixel. The result keeps
  the reference frame's size and framing; where a registered frame does not reach, it takes no
  part in the fusion (the reference covers every pixel).
- **Any size.** The U-Net accepts any size from its ``min_size`` up (it pads internally to keep
  its rot90 symmetry). Images with a side below ``min_size`` but at least ``MIN_SIDE`` (8) pixels
  are reflect-padded up to ``min_size`` and cropped back; anything smaller is refused (there is
  nothing meaningful to fuse in a strip a few pixels wide).
- **Speed** (``speed``, weight-map models; ``SPEEDS``): only the last sampling step decides the
  weight map, the steps before it hand it a starting estimate. ``"balanced"`` (the default) runs
  them on the sources scaled to a quarter (``layers.resize``, anti-aliased) and starts the last
  step, at full size, from their weight map brought up along the sources' edges
  (:func:`guided_upsample`, He & Sun's fast guided filter): every Lytro score within 0.0001 of
  ``"quality"`` (every step at full size) for 2.5–2.7× less CPU. ``"fast"`` runs the last step at
  half size too and upsamples its weight map the same way (7–8× less CPU; QMI 0.005–0.023 lower on
  Lytro). Images above ``working_size`` megapixels (balanced 4, fast 1) are processed scaled down to
  it, their weight maps applied to the full-size sources, so a 24-MP pair costs about as much as a
  4-MP one. All of it commutes with quarter turns (the network stays exactly equivariant), and a
  stack's frames are still weighed one by one, order-independently. ``FusionModel(precision="bf16")``
  runs the network in bfloat16 (``PRECISIONS``).
- **Bounded memory: overlapping tiles.** With ``tile=N`` (default ``"auto"``: about 0.75 GiB of
  network activations per tile, 768 px for the default model) an image with a side longer than
  ``N`` is covered by a grid of overlapping tiles of at most N×N pixels. Tiling happens *inside
  every sampling step*: the sampler keeps the whole-image state x_t (its initial noise x_T is drawn
  once for the whole image, so it does not depend on the tiling), and each network evaluation is
  computed tile by tile and blended with raised-cosine windows (weights ramping smoothly over the
  overlap, normalised to sum to one). Every step therefore starts from one consistent image, and
  there are no seams; the only differences to an untiled run come from what a tile's network does
  not see (context beyond the tile and its GroupNorm statistics), which the overlap keeps small.
  ``tile=0`` (or ``None``) processes whole images.
- **Flat regions** (``evidence_fill``, on by default): where every frame is flat, nothing says which
  is sharp and the network's weights wander; there each weight logit takes the decision of the
  nearest structure (``rediffuse.evidence``), so frames of different exposure leave no blotches.
- **Exact quarter turns.** The stack is fused in the quarter turn its brightness centroid chooses
  (``rediffuse.orientation``) and the result turned back: the starting noise and the tile grid then
  turn with the inputs, and a turned stack gives the turned result bit for bit.
- **Stacks share a budget** (``stack_megapixels``, ``STACK_MEGAPIXELS``): each of N > 2 frames runs
  its last step at most at budget / N megapixels, so a long stack of large frames costs about what a
  short one does.
- **Checks.** Non-finite network output or samples raise a ``RuntimeError`` naming the step (a
  broken or diverged checkpoint); a checkpoint with non-finite weights or the wrong shape of model
  is refused at load time with a one-line ``ValueError``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from .align import ALIGN_MODES
from .baselines import guided_coefficients
from .checkpoint import load_model
from .data import luminance, tensor_to_image, ycbcr_to_rgb
from .diffusion import PREDICTIONS, SAMPLERS, get_sampler, get_schedule, sampling_timesteps
from .evidence import Evidence
from .imageio import TiffPage, read_image_native, stack_frames
from .layers import resize
from .orientation import canonical_turns, turn
from .runtime import exact_precision, resolve_device
from .stack import (TAU, FrameReader, accumulate, check_pixels, check_sizes, fuse_fold, fuse_softmax, logit_store,
                    write_depth_map, write_weight_maps)

__all__ = [
    "FusionModel", "SamplingSettings", "DEFAULT_CHECKPOINT", "SHIPPED_MODELS", "resolve_checkpoint", "checkpoint_available", "WEIGHTS_DIR", "MIN_SIDE", "TILE_BUDGET_BYTES", "SYMMETRIC_PAIRS", "fuse", "load_stack_image", "check_stack",
    "plan_tiles", "tile_window", "SPEEDS", "DEFAULT_SPEED", "PRECISIONS", "MIN_WORKING_SIDE", "GUIDE_RADIUS", "GUIDE_EPS",
    "guided_upsample", "STACK_MEGAPIXELS", "stack_settings",
]

#: Shipped weights live inside the package, so they are found from an installed wheel as well.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "rediffuse-layered-bconv.pt"

#: Shipped checkpoints by name (``--checkpoint paper``; model card: ``rediffuse/weights/README.md``):
#: the default weight-map model (5 levels with bottleneck attention, trained on layered-defocus pairs
#: from real photos), and three small models trained alike on the first training set: the Rot-E
#: weight-map model, its plain twin and the paper's ε-prediction model.
SHIPPED_MODELS = {
    "weights": DEFAULT_CHECKPOINT,
    "weights-small": WEIGHTS_DIR / "rediffuse-weights-bconv.pt",
    "weights-plain": WEIGHTS_DIR / "rediffuse-weights-plain.pt",
    "paper": WEIGHTS_DIR / "rediffuse-eps-bconv.pt",
}


def resolve_checkpoint(checkpoint: str | os.PathLike | None) -> Path:
    """A checkpoint path from a path or a ``SHIPPED_MODELS`` name (``None``/"": the default)."""
    if checkpoint is None or str(checkpoint) == "":
        return DEFAULT_CHECKPOINT
    name = str(checkpoint)
    if name in SHIPPED_MODELS and not Path(name).exists():
        return SHIPPED_MODELS[name]
    return Path(checkpoint)


def checkpoint_available(checkpoint: str | os.PathLike | None) -> bool:
    """Whether a shipped model name or checkpoint path refers to an existing file."""
    return resolve_checkpoint(checkpoint).is_file()

#: Images with a side shorter than this are refused; from here up to the network's ``min_size`` they
#: are reflect-padded.
MIN_SIDE = 8

#: Whether ``fuse(symmetric=None)`` fuses a pair symmetrically, σ((f(A, B) − f(B, A)) / 2), at the cost of two
#: sampling runs instead of one (stacks of three or more are always fused order-independently).
SYMMETRIC_PAIRS = False
#: How a luminance model colours its result (see :func:`fuse`).
COLOUR_MODES = ("auto", "weights", "paper")

#: Speed presets of weight-map models (``fuse(speed=...)``, ``FusionModel.settings(speed=...)``,
#: ``rediffuse fuse --speed``), each a set of :class:`SamplingSettings` fields: ``scale``, the
#: resolution of the last sampling step (the one whose weight map is used) as a fraction of the image
#: side; ``coarse``, the resolution of the steps before it as a fraction of the last step's (they only
#: hand the last step its starting estimate, and their resolution changed no Lytro score); and
#: ``working_size``, the most megapixels the last step works on (larger images are processed at the
#: scale that fits, 0: no limit). Measured in ``benchmarks/bench_fuse.py`` (quality, 24 MP) and
#: ``benchmarks/bench_peers.py --part time``.
SPEEDS: dict[str, dict[str, float]] = {
    "quality": dict(scale=1.0, coarse=1.0, working_size=0.0),  # every step at full resolution
    "balanced": dict(scale=1.0, coarse=0.25, working_size=4.0),  # earlier steps at ¼, the last at full size
    "fast": dict(scale=0.5, coarse=0.5, working_size=1.0),  # the last step at ½, the earlier ones at ¼
}
#: The speed ``fuse`` uses for weight-map models when none is given (ε/x₀ models always run "quality").
DEFAULT_SPEED = "balanced"
#: Network megapixels the last sampling steps of a stack of N > 2 frames share (``fuse(stack_megapixels=)``):
#: each frame's working size is at most this / N, so a long stack of large frames costs about what a
#: few frames cost (the weight maps are brought to full size along each frame's edges, and flat
#: regions take their weights from their surroundings anyway). Pairs are not affected.
STACK_MEGAPIXELS = 5.0
#: Network arithmetic: "fp32" (the default: quarter turns exact to float32 round-off) or "bf16"
#: (autocast; the samplers stay in float32): Lytro scores unchanged to 4 decimals, ~1.5× less CPU
#: where the CPU has bfloat16 instructions (AMX, AVX-512 BF16), but a quarter-turned input then
#: matches only to bfloat16 rounding.
PRECISIONS = ("fp32", "bf16")
#: A reduced resolution never takes the shorter side of the network's input below this many pixels.
MIN_WORKING_SIDE = 64
#: The guided filter that brings a weight map from a reduced resolution to full size: window radius
#: (pixels of the reduced grid) and regularisation (intensities in [-1, 1]); measured on Lytro.
GUIDE_RADIUS = 4
GUIDE_EPS = 1e-2

#: Activation memory aimed at per tile by ``tile="auto"``.
TILE_BUDGET_BYTES = 768 * 2**20

# Peak activation bytes per pixel and per base channel of a U-Net forward pass without gradients,
# measured on the default model (base 16, mults 1 2 4: ≈ 1.27 kB/px at 512²) and rounded up.
_BYTES_PER_PX_PER_BASE_CHANNEL = 80

# a TiffPage is one page (z-slice) of a multi-page TIFF, read when needed (imageio.stack_frames)
ImageLike = Union[np.ndarray, str, os.PathLike, TiffPage]


# --------------------------------------------------------------------------------------------------
# Tiles
# --------------------------------------------------------------------------------------------------


def _axis_tiles(n: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Intervals ``[a, b)`` covering ``0..n``: the fewest tiles of at most ``tile`` that overlap by
    at least ``overlap``, all of one length and spread evenly (first at 0, last ending at n)."""
    if tile <= 0 or n <= tile:
        return [(0, n)]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be ≥ 0 and smaller than the tile ({tile}), got {overlap}")
    k = math.ceil((n - overlap) / (tile - overlap))
    side = min(tile, math.ceil((n + (k - 1) * overlap) / k))
    while True:
        starts = [round(i * (n - side) / (k - 1)) for i in range(k)]
        # rounding the starts may cost a pixel of overlap: widen the tiles by one where it did
        if side >= tile or all(starts[i] + side - starts[i + 1] >= overlap for i in range(k - 1)):
            return [(s, s + side) for s in starts]
        side += 1


def plan_tiles(height: int, width: int, tile: int | None, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles ``(top, bottom, left, right)`` covering a ``height × width`` image (one tile if it fits)."""
    tile = int(tile or 0)
    return [(t, b, l, r) for t, b in _axis_tiles(height, tile, overlap) for l, r in _axis_tiles(width, tile, overlap)]


def tile_window(length: int, ramp_start: bool, ramp_end: bool, overlap: int) -> torch.Tensor:
    """1-D blending weights of a tile: raised-cosine ramps 0 → 1 over ``overlap`` pixels at the ends
    that border another tile, 1 elsewhere (and at the image border). Strictly positive."""
    w = torch.ones(length, dtype=torch.float64)
    r = min(overlap, length)
    if r > 0:
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(r, dtype=torch.float64) + 0.5) / r)
        if ramp_start:
            w[:r] *= ramp
        if ramp_end:
            w[length - r:] *= ramp.flip(0)
    return w


class _TiledNet:
    """``model(x_t, t, cond)`` for the samplers: the network evaluated tile by tile and blended.

    Also checks every output for NaN/inf and reports each evaluation to ``on_eval``.
    """

    def __init__(self, net: torch.nn.Module, height: int, width: int, tile: int | None, overlap: int,
                 on_eval: Callable[[], None] | None, precision: str = "fp32"):
        self.net = net
        self.low = torch.bfloat16 if precision == "bf16" else None
        self.tiles = plan_tiles(height, width, tile, overlap)
        self.overlap = overlap
        self.height, self.width = height, width
        self.on_eval = on_eval
        self._wsum: torch.Tensor | None = None

    def _window(self, t: int, b: int, l: int, r: int, device) -> torch.Tensor:
        wy = tile_window(b - t, t > 0, b < self.height, self.overlap)
        wx = tile_window(r - l, l > 0, r < self.width, self.overlap)
        return (wy[:, None] * wx[None, :]).to(device=device, dtype=torch.float32)

    def _check(self, out: torch.Tensor, t: torch.Tensor, where: str) -> None:
        if not bool(torch.isfinite(out).all()):
            step = int(t.reshape(-1)[0])
            raise RuntimeError(f"the network produced NaN/inf values at timestep {step}{where}: "
                               "the checkpoint looks broken (diverged training?); try another checkpoint")

    def _run(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.low is None:
            return self.net(x, t, cond)
        # the network in bfloat16 (autocast), everything the sampler does with its output in float32
        with torch.autocast(device_type=x.device.type, dtype=self.low):
            return self.net(x, t, cond).float()

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if len(self.tiles) == 1:
            out = self._run(x, t, cond)
            self._check(out, t, "")
            if self.on_eval:
                self.on_eval()
            return out
        if self._wsum is None:
            wsum = torch.zeros(self.height, self.width, device=x.device)
            for tb in self.tiles:
                wsum[tb[0]:tb[1], tb[2]:tb[3]] += self._window(*tb, x.device)
            self._wsum = wsum
        acc = None
        for i, (t0, t1, l0, l1) in enumerate(self.tiles):
            o = self._run(x[..., t0:t1, l0:l1], t, cond[..., t0:t1, l0:l1])
            self._check(o, t, f" (tile {i + 1} of {len(self.tiles)}, rows {t0}-{t1}, columns {l0}-{l1})")
            if acc is None:
                acc = x.new_zeros(x.shape[0], o.shape[1], self.height, self.width)
            acc[..., t0:t1, l0:l1] += o * self._window(t0, t1, l0, l1, x.device)
            del o
            if self.on_eval:
                self.on_eval()
        return acc.div_(self._wsum)


def _pad_to(y: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Reflect-pad ``[B, C, H, W]`` so both sides are ≥ ``size`` (repeated reflection when the pad is
    wider than the image); returns the padded tensor and ``(top, bottom, left, right)``."""
    h, w = y.shape[-2:]
    ph, pw = max(size - h, 0), max(size - w, 0)
    pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
    if not any(pads):
        return y, pads
    a = np.pad(y.cpu().numpy(), ((0, 0), (0, 0), pads[:2], pads[2:]), mode="reflect")
    return torch.from_numpy(a).to(y.device), pads


# --------------------------------------------------------------------------------------------------
# Reduced resolution
# --------------------------------------------------------------------------------------------------


def _working_size(height: int, width: int, fraction: float) -> tuple[int, int]:
    """``(h, w)`` of an image scaled by ``fraction`` (≤ 1), the shorter side kept at
    ``MIN_WORKING_SIDE`` or more (never above the image). Rounded per side, so a quarter-turned
    image gets the quarter-turned size."""
    f = max(float(fraction), min(1.0, MIN_WORKING_SIDE / min(height, width)))
    if f >= 1.0:
        return height, width
    return max(1, round(height * f)), max(1, round(width * f))


def guided_upsample(logit: torch.Tensor, guide_small: torch.Tensor, guide: torch.Tensor,
                    radius: int = GUIDE_RADIUS, eps: float = GUIDE_EPS) -> torch.Tensor:
    """Weight logits ``[B, C, h, w]``, predicted on ``guide_small`` ``[B, C, h, w]`` (the source they
    weigh, at that resolution), brought to the size of ``guide`` ``[B, C, H, W]`` (the same source at
    full resolution) along its edges: He & Sun's fast guided filter. The filter's local linear model
    ``logit ≈ a · guide + b`` is fitted on the small grid (``baselines.guided_coefficients``, windows
    of ``2·radius + 1`` small pixels), the window-averaged a and b are upsampled bilinearly and
    applied to the full-resolution guide, so the weight map follows the sharp edges of the source
    instead of the blocky ones of a plain upsampling. Every step commutes with quarter turns.
    Returns ``[B, C, H, W]`` float32 on ``guide``'s device (three full-size maps at most)."""
    b, c, h, w = logit.shape
    if guide_small.shape != logit.shape or guide.shape[:2] != (b, c):
        raise ValueError(f"guided_upsample: logits {tuple(logit.shape)}, small guide {tuple(guide_small.shape)} and "
                         f"guide {tuple(guide.shape)} do not match")
    coef = np.empty((b, 2 * c, h, w), np.float32)
    lg = logit.detach().double().cpu().numpy()
    gs = guide_small.detach().double().cpu().numpy()
    for i in range(b):
        for k in range(c):
            coef[i, 2 * k], coef[i, 2 * k + 1] = guided_coefficients(gs[i, k], lg[i, k], radius, eps)
    up = resize(torch.from_numpy(coef).to(guide.device), tuple(guide.shape[-2:]))
    out = up[:, 0::2] * guide.to(torch.float32)
    return out.add_(up[:, 1::2])


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class FusionModel:
    """A loaded checkpoint with its diffusion settings; ``fuse_y`` fuses two luminance tensors.

    ``checkpoint``: a file written by ``rediffuse train``, or a name in ``SHIPPED_MODELS`` (``"weights"``,
    ``"weights-small"``, ``"weights-plain"``, ``"paper"``); ``None``: ``DEFAULT_CHECKPOINT``.
    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``; asking for CUDA where there is none
    raises a ``RuntimeError``. A missing, unreadable or incompatible checkpoint (one that is not a
    luminance model with 3 inputs and 1 output, has non-finite weights or an unknown parameterisation)
    raises ``FileNotFoundError`` / ``ValueError`` with a one-line message. ``precision``: a name in
    ``PRECISIONS`` (``"bf16"`` on a GPU without bfloat16 is a ``RuntimeError``).
    """

    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str = "cpu", ema: bool = True,
                 precision: str = "fp32"):

        device = resolve_device(str(device))
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if precision == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
            raise RuntimeError("this GPU has no bfloat16 arithmetic; use precision fp32 (--precision fp32)")
        self.precision = precision
        path = resolve_checkpoint(checkpoint)
        named = str(checkpoint) in SHIPPED_MODELS and not Path(str(checkpoint)).exists()
        if (not checkpoint or named) and not path.is_file():
            what = f"the shipped model {str(checkpoint)!r}:" if named else "the default checkpoint"
            raise FileNotFoundError(
                f"{what} {path} is not there (it is not shipped yet); "
                "pass one with --checkpoint PATH (python: FusionModel(PATH)), e.g. a run's last.pt "
                "written by `rediffuse train`")
        try:
            self.model, cfg = load_model(path, ema=ema, map_location=device)
        except (TypeError, KeyError, AttributeError, IndexError) as e:
            raise ValueError(f"{path} is not a checkpoint this version of rediffuse can use "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        mc = self.model.config
        if (mc["in_channels"], mc["out_channels"]) not in ((3, 1), (9, 3)):
            raise ValueError(f"{path} holds a model with {mc['in_channels']} input and {mc['out_channels']} "
                             "output channels; fusion needs a luminance model (3 inputs: A, B, noisy Y; 1 output) "
                             "or an RGB one (9 inputs, 3 outputs)")
        self.channels = int(mc["out_channels"])  # 1: luminance Y, 3: RGB
        bad = [n for n, p in self.model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
        if bad:
            raise ValueError(f"{path} is corrupt: {len(bad)} weight tensors hold NaN/inf values (e.g. {bad[0]}); "
                             "the training run diverged or the file was damaged")
        self.prediction = cfg.get("prediction", "eps")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"{path} uses the prediction {self.prediction!r}, unknown to this version "
                             f"(known: {', '.join(sorted(PREDICTIONS))})")
        self.model.to(device)
        self.device = device
        self.path = path
        self.schedule = get_schedule(cfg.get("schedule", "cosine"), cfg.get("T", 2000)).to(device)

    @property
    def min_size(self) -> int:
        """Smallest side the network accepts; ``fuse_y`` pads smaller inputs up to it."""
        return int(self.model.min_size)

    def auto_tile(self, budget_bytes: int = TILE_BUDGET_BYTES) -> int:
        """Tile side (a multiple of 32) whose network activations take about ``budget_bytes``."""
        per_px = _BYTES_PER_PX_PER_BASE_CHANNEL * int(self.model.config["base"])
        return max(64, int(math.sqrt(budget_bytes / per_px)) // 32 * 32)

    def resolve_tile(self, tile: int | str | None, overlap: int | None) -> tuple[int, int]:
        """``(tile, overlap)`` in pixels from user settings: ``tile`` "auto", 0/None (whole images) or
        ≥ 32; ``overlap`` defaults to a quarter of the tile and must be below half of it."""
        if tile == "auto":
            tile = self.auto_tile()
        try:
            tile = int(tile or 0)
        except (TypeError, ValueError):
            raise ValueError(f"tile must be 'auto', 0 or a number of pixels ≥ 32, got {tile!r}") from None
        if tile and tile < max(32, self.min_size):
            raise ValueError(f"tile must be 0 (no tiling) or at least {max(32, self.min_size)} pixels, got {tile}")
        if overlap is None:
            overlap = tile // 4
        overlap = int(overlap)
        if overlap < 0 or (tile and 2 * overlap >= tile):
            raise ValueError(f"overlap must be ≥ 0 and less than half the tile ({tile}), got {overlap}")
        return tile, overlap

    def default_sampler(self) -> tuple[str, int]:
        """Few-step DDIM for image/weight predictions; the paper's full sampler for ε-prediction."""
        return ("posterior_mean", self.schedule.T) if self.prediction == "eps" else ("x0_regression", 3)

    def sampler_settings(self, sampler: str | None = None, steps: int | None = None) -> tuple[str, int]:
        """``(sampler, steps)`` with the defaults filled in, both validated."""
        name, k = self.default_sampler()
        sampler = sampler or name
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; available: {', '.join(sorted(SAMPLERS))}")
        if steps is None:
            steps = k
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= self.schedule.T:
            raise ValueError(f"steps must be a whole number from 1 to {self.schedule.T} (the model's T), got {steps!r}")
        return sampler, int(steps)

    def settings(self, sampler: str | None = None, steps: int | None = None, *, tile: int | str | None = None,
                 overlap: int | None = None, seed: int = 0, clip: bool = True, speed: str | None = None,
                 scale: float | None = None, coarse: float | None = None,
                 working_size: float | None = None) -> "SamplingSettings":
        """Every sampling setting resolved (defaults filled in) and validated once; see
        :class:`SamplingSettings`. ``tile``: "auto", 0/None (whole images) or a side ≥ 32 px.
        ``speed``: a name in ``SPEEDS`` (``None``: :meth:`default_speed`); ``scale``, ``coarse`` and
        ``working_size`` override its fields one by one (reduced resolutions need a weight-map model)."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
        sampler, steps = self.sampler_settings(sampler, steps)
        tile, overlap = self.resolve_tile(tile, overlap)
        res = self.resolve_speed(speed, scale=scale, coarse=coarse, working_size=working_size)
        return SamplingSettings(sampler, steps, tile, overlap, int(seed), bool(clip), **res)

    def default_speed(self) -> str:
        """``DEFAULT_SPEED`` for weight-map models; "quality" for ε/x₀ models (whose samples cannot be
        upsampled along the sources' edges: they predict an image, not weights)."""
        return DEFAULT_SPEED if self.prediction == "weights" else "quality"

    def resolve_speed(self, speed: str | None = None, *, scale: float | None = None, coarse: float | None = None,
                      working_size: float | None = None) -> dict[str, float]:
        """The ``scale``, ``coarse`` and ``working_size`` of ``speed`` (a ``SPEEDS`` name; ``None``: the
        model's default), each overridden where given; validated (one-line ``ValueError``)."""
        name = self.default_speed() if speed is None else speed
        if name not in SPEEDS:
            raise ValueError(f"unknown speed {speed!r}; choose one of {', '.join(SPEEDS)}")
        out = dict(SPEEDS[name])
        for key, value in (("scale", scale), ("coarse", coarse), ("working_size", working_size)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(value):
                raise ValueError(f"{key} must be a number, got {value!r}")
            if key == "working_size" and value < 0:
                raise ValueError(f"working_size must be ≥ 0 megapixels (0: no limit), got {value}")
            if key != "working_size" and not 0 < value <= 1:
                raise ValueError(f"{key} must be a fraction of the resolution in (0, 1], got {value}")
            out[key] = float(value)
        if self.prediction != "weights" and (out["scale"] < 1 or out["coarse"] < 1 or out["working_size"] > 0):
            raise ValueError(f"{self.path.name} predicts {self.prediction!r}, not weights: it samples at full "
                             "resolution only (speed 'quality', scale and coarse 1, no working size)")
        return out

    def step_sizes(self, height: int, width: int, settings: "SamplingSettings") -> list[tuple[int, int]]:
        """The size ``(h, w)`` of the network's input at each sampling step of a ``height × width``
        pair (before padding up to ``min_size``): the last step at ``settings.scale`` (less when
        ``working_size`` megapixels would be exceeded), the earlier ones at ``coarse`` times that;
        no side below ``MIN_WORKING_SIDE`` through the reduction."""
        st = settings
        frac = st.scale
        if st.working_size > 0:
            frac = min(frac, math.sqrt(st.working_size * 1e6 / (height * width)))
        last = _working_size(height, width, frac)
        first = _working_size(*last, st.coarse) if st.coarse < 1 else last
        return [first] * (st.steps - 1) + [last]

    def evaluations(self, height: int, width: int, settings: "SamplingSettings") -> int:
        """Network evaluations (tiles × steps, at each step's size) one pairwise fusion of this size takes."""
        return sum(self.count_evaluations(h, w, 1, settings.tile, settings.overlap)
                   for h, w in self.step_sizes(height, width, settings))

    def count_evaluations(self, height: int, width: int, steps: int, tile: int | None, overlap: int) -> int:
        """Network evaluations (tiles × steps) one pairwise fusion of this size takes."""
        h, w = max(height, self.min_size), max(width, self.min_size)
        return steps * len(plan_tiles(h, w, tile, overlap))

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, settings: "SamplingSettings | None" = None, *, x_T: torch.Tensor | None = None,
               correct: Callable | None = None, observe: Callable[[torch.Tensor], None] | None = None,
               callback: Callable[[], None] | None = None, progress: bool = False,
               timesteps: Sequence[int] | None = None) -> torch.Tensor:
        """The one sampling path: ``cond`` ``[B, 2·C, H, W]`` (two sources in [-1, 1]) → ``[B, C, H, W]``.

        Owns what every caller needs: inputs below ``min_size`` reflect-padded and cropped back,
        tiled network evaluations, the generator (x_T drawn once for the whole image from a CPU
        generator seeded by ``settings.seed``, unless ``x_T`` is given), and the NaN checks.
        ``correct(x0_hat, t_index)`` is the sampler's per-step correction (e.g. the range–null-space
        projection of ``rediffuse.restore``; needs inputs of at least ``min_size``); ``observe(out)``
        sees the network's whole-image output at every step; ``callback()`` runs after every network
        evaluation. ``timesteps`` (decreasing, from the model's schedule): run only those steps instead
        of ``settings.steps`` spread over the whole schedule (one part of a multi-resolution run).
        Always at the resolution of ``cond``: the reduced resolutions of ``settings.scale``,
        ``coarse`` and ``working_size`` are applied by :meth:`sample_with_logits`.
        """
        st = settings or self.settings()
        schedule, steps = self.schedule, st.steps
        if timesteps is not None:
            ts = [int(t) for t in timesteps]
            if not ts or any(a <= b for a, b in zip(ts, ts[1:])) or ts[-1] < 0 or ts[0] >= self.schedule.T:
                raise ValueError(f"timesteps must decrease within [0, {self.schedule.T}), got {list(timesteps)}")
            schedule, steps = self.schedule.respace(ts), len(ts)
        c = self.channels
        if cond.ndim != 4 or cond.shape[1] != 2 * c:
            raise ValueError(f"sample expects the two sources as [B, {2 * c}, H, W], got {tuple(cond.shape)}")
        h, w = cond.shape[-2:]
        cond = cond.to(self.device, torch.float32)
        cond, pads = _pad_to(cond, self.min_size)
        if any(pads) and correct is not None:
            raise ValueError(f"images must be at least {self.min_size} px on each side for a corrected sampler, "
                             f"got {w}×{h}")
        H, W = cond.shape[-2:]
        bar = tqdm(total=self.count_evaluations(h, w, steps, st.tile, st.overlap), desc="fusing", unit="eval",
                   leave=False) if progress else None

        def on_eval():
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback()

        tiled = _TiledNet(self.model, H, W, st.tile, st.overlap, on_eval, self.precision)

        def net(x, t, cnd):
            out = tiled(x, t, cnd)
            if observe is not None:
                observe(out)
            return out

        if x_T is not None:
            x_T, _ = _pad_to(x_T.to(self.device, torch.float32), self.min_size)
        g = torch.Generator(device="cpu").manual_seed(st.seed)
        try:
            # TF32 convolutions on Ampere+ GPUs would break the exact-equivariance claim (~0.01 grey levels)
            with exact_precision():
                out = get_sampler(st.sampler)(net, cond, (cond.shape[0], c, H, W), schedule, steps,
                                              generator=g, x_T=x_T, progress=False, prediction=self.prediction,
                                              clip=st.clip,
                                              **({"correct": correct} if correct is not None else {}))
        finally:
            if bar is not None:
                bar.close()
        if not bool(torch.isfinite(out).all()):
            raise RuntimeError(f"sampling produced NaN/inf values ({st.sampler}, {st.steps} steps) with {self.path}; "
                               "the checkpoint looks broken, or try fewer steps / another sampler")
        return out[..., pads[0]:H - pads[1], pads[2]:W - pads[3]]

    def fuse_y(self, y_a: torch.Tensor, y_b: torch.Tensor, sampler: str | None = None, steps: int | None = None,
               seed: int = 0, progress: bool = False, *, tile: int | str | None = None, overlap: int | None = None,
               callback: Callable[[], None] | None = None) -> torch.Tensor:
        """Fuse ``[B, C, H, W]`` images in [-1, 1] (C = ``self.channels``: 1 luminance, 3 RGB); returns
        ``[B, C, H, W]`` in [-1, 1] (on the device). A convenience over :meth:`sample` with the
        settings given one by one (``tile`` default: whole image). Deterministic given ``seed``.
        """
        c = self.channels
        if y_a.shape != y_b.shape or y_a.ndim != 4 or y_a.shape[1] != c:
            raise ValueError(f"fuse_y expects two [B, {c}, H, W] tensors of one shape, got {tuple(y_a.shape)} "
                             f"and {tuple(y_b.shape)}")
        st = self.settings(sampler, steps, tile=tile, overlap=overlap, seed=seed)
        return self.sample(torch.cat([y_a, y_b], 1), st, callback=callback, progress=progress)

    def sample_with_logits(self, cond: torch.Tensor, settings: "SamplingSettings | None" = None, *,
                           callback: Callable[[], None] | None = None, x_T: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sample on ``cond`` ``[B, 2·C, H, W]`` at the resolutions ``settings`` asks for, also returning
        the weight logit of the first source: the network's raw output at the last step, ``[B, C, H, W]``
        float32 on the CPU (the sample is then σ(l)·A + (1 − σ(l))·B). ``None`` for models that predict
        no weights (ε, x₀).

        At full resolution (speed "quality") this is :meth:`sample`. Otherwise (weight-map models):
        the sources are resized (``layers.resize``, anti-aliased) to each step's size
        (:meth:`step_sizes`); the steps before the last run at the coarse size, and their weight map,
        upsampled along the sources' edges (:func:`guided_upsample`), gives the estimate
        x̂0 = σ(l)·A + (1 − σ(l))·B the last step starts from (x_t = √ᾱ_t·x̂0 at its timestep t, as
        DDIM would hand it over, less the noise term of size √(1 − ᾱ_t), a few thousandths at t = 0);
        the last step's weight map is brought to full size the same way and applied to the
        full-resolution sources. ``x_T``: the starting noise at the size of the first step."""
        st = settings or self.settings()
        c = self.channels
        if cond.ndim != 4 or cond.shape[1] != 2 * c:
            raise ValueError(f"sample expects the two sources as [B, {2 * c}, H, W], got {tuple(cond.shape)}")
        h, w = cond.shape[-2:]
        sizes = self.step_sizes(h, w, st)
        native = dataclasses.replace(st, scale=1.0, coarse=1.0, working_size=0.0)
        if all(size == (h, w) for size in sizes):
            return self._sample_native(cond, native, callback=callback, x_T=x_T)
        if self.prediction != "weights":
            raise ValueError(f"{self.path.name} predicts {self.prediction!r}: reduced resolutions need a weight-map model")
        src = cond.to(self.device, torch.float32)
        ts = sampling_timesteps(self.schedule.T, st.steps)
        small = resize(src, sizes[-1])
        if sizes[0] != sizes[-1]:  # the steps before the last at the coarse size: the last step's start
            coarse = resize(src, sizes[0])
            _, lc = self._sample_native(coarse, native, callback=callback, x_T=x_T, timesteps=ts[:-1])
            wc = torch.sigmoid(guided_upsample(lc.to(self.device), coarse[:, :c], small[:, :c]))
            x0 = wc * small[:, :c] + (1 - wc) * small[:, c:]
            del wc
            x_last = x0.mul_(math.sqrt(float(self.schedule.alphas_cumprod[ts[-1]])))
            _, logit = self._sample_native(small, native, callback=callback, x_T=x_last, timesteps=ts[-1:])
        else:  # every step at the last step's size
            _, logit = self._sample_native(small, native, callback=callback, x_T=x_T)
        if sizes[-1] != (h, w):
            logit = guided_upsample(logit.to(self.device), small[:, :c], src[:, :c])
        del small
        wgt = torch.sigmoid(logit)
        out = wgt * src[:, :c] + (1 - wgt) * src[:, c:]
        return out, logit.float().cpu()

    def _sample_native(self, cond: torch.Tensor, settings: "SamplingSettings", *, callback: Callable[[], None] | None,
                       x_T: torch.Tensor | None = None, timesteps: Sequence[int] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`sample` at the resolution of ``cond``, with the last step's weight logit (CPU float32)."""
        last: list[torch.Tensor] = []
        out = self.sample(cond, settings, observe=lambda o: last.__setitem__(slice(None), [o]), callback=callback,
                          x_T=x_T, timesteps=timesteps)
        if self.prediction != "weights" or not last:
            return out, None
        # sample() reflect-pads small inputs, centred (its _pad_to); observe sees the padded output
        h, w = cond.shape[-2:]
        H, W = last[0].shape[-2:]
        t, l = (H - h) // 2, (W - w) // 2
        return out, last[0][..., t:t + h, l:l + w].float().cpu()

    def fuse(self, images: Sequence[ImageLike], **kwargs) -> np.ndarray:
        """Fuse a focus stack with this model: :func:`rediffuse.fuse.fuse` (same keyword arguments)."""
        return fuse(images, self, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, device: str = "cpu",
                        ema: bool = True) -> "FusionModel":
        """A shipped model by name (``SHIPPED_MODELS``: ``"weights"``, ``"weights-small"``, ``"weights-plain"``,
        ``"paper"``),
        or a checkpoint file; ``None``: the default model."""
        return cls(name_or_path, device=device, ema=ema)


@dataclass(frozen=True)
class SamplingSettings:
    """How a :class:`FusionModel` samples, resolved and validated by :meth:`FusionModel.settings`:
    ``sampler`` name, ``steps``, ``tile`` side in px (0: whole image) and its ``overlap``, ``seed``, and
    ``clip``: clamp x̂0 to [−1, 1] at every step as the official code does (default), or not, as the
    paper's Eq. 6 is written (see ``rediffuse.diffusion``; a weight-map x̂0 never leaves the range).
    Speed (``SPEEDS``; :meth:`FusionModel.sample_with_logits`): ``scale``, the resolution of the last
    step as a fraction of the image side; ``coarse``, that of the steps before it as a fraction of
    the last step's; ``working_size``, the most megapixels the last step works on (0: no limit).
    The defaults (1, 1, 0) sample every step at full resolution."""

    sampler: str
    steps: int
    tile: int
    overlap: int
    seed: int = 0
    clip: bool = True
    scale: float = 1.0
    coarse: float = 1.0
    working_size: float = 0.0


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


def load_stack_image(path: str | os.PathLike | TiffPage) -> np.ndarray:
    """Read one image of a stack at the precision it was stored with: ``uint8`` for 8-bit files,
    ``uint16`` for 16-bit PNG/TIFF (grey or colour), ``float32`` in [0, 1] for floating-point TIFF.
    EXIF orientation applied; alpha dropped with a warning; one-line ``FileNotFoundError``/``ValueError``
    for missing or unreadable files. A ``TiffPage`` (a z-stack's page) is decoded alone (a blank
    page is an error)."""
    return path.read() if isinstance(path, TiffPage) else read_image_native(path)


def _on_8bit_levels(v: np.ndarray) -> bool:
    """Whether float data in the 0–255 scale holds only whole grey levels (an 8-bit image)."""
    return float(np.abs(v - np.rint(v)).max(initial=0.0)) < 1e-3


def _as_array(img: ImageLike, name: str) -> tuple[np.ndarray, int]:
    """An image of the stack as uint8 or float32 0–255, ``[H, W]`` or ``[H, W, 3]``, and the bits
    per channel it carries (8, or 16 for finer levels)."""
    a = load_stack_image(img) if isinstance(img, (str, os.PathLike, TiffPage)) else np.asarray(img)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] in (2, 4):
        warnings.warn(f"{name}: alpha channel dropped (image treated as opaque)", stacklevel=3)
        a = a[..., :-1] if a.shape[-1] == 4 else a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        raise ValueError(f"{name}: expected a grey [H, W] or colour [H, W, 3] image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a, 8
    if a.dtype == np.uint16:
        return a.astype(np.float32) / np.float32(257.0), 16
    if a.dtype.kind == "f":
        if a.size and not np.isfinite(a).all():
            raise ValueError(f"{name}: the image holds NaN or infinite values")
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(f"{name}: float images must hold values in [0, 1] (as read_image_float returns); "
                             "convert 0-255 data to uint8")
        v = a.astype(np.float32) * np.float32(255.0)
        return v, 8 if _on_8bit_levels(v) else 16
    raise ValueError(f"{name}: unsupported pixel type {a.dtype} (use uint8, uint16 or float in [0, 1])")


def _quantise(v: np.ndarray, bits: int) -> np.ndarray:
    """Float 0–255 → ``uint8``, or ``uint16`` (the same scale × 257), rounded and clipped."""
    if bits == 8:
        return np.clip(np.rint(v), 0, 255).astype(np.uint8)
    return np.clip(np.rint(v * 257.0), 0, 65535).astype(np.uint16)


def _strips(height: int, rows: int = 256):
    for r in range(0, height, rows):
        yield slice(r, min(r + rows, height))


def _luma(img: np.ndarray) -> np.ndarray:
    """Y (float32, 0–255) computed in row strips (no full-size float64 copy of a colour image)."""
    if img.ndim == 2:
        return img.astype(np.float32)
    y = np.empty(img.shape[:2], np.float32)
    for s in _strips(img.shape[0]):
        y[s] = luminance(img[s])
    return y


def check_stack(arrays: Sequence[np.ndarray], names: Sequence[str], min_side: int = MIN_SIDE) -> None:
    """Refuse (one-line ``ValueError``) a stack whose images differ in size or are too small."""
    check_sizes([a.shape[:2] for a in arrays], names, min_side)


def stack_settings(fm: FusionModel, settings: SamplingSettings, frames: int, symmetric: bool,
                   stack_megapixels: float | None = None) -> SamplingSettings:
    """``settings`` with the working size a stack of ``frames`` gets from its shared budget
    (``stack_megapixels``, ``None``: ``STACK_MEGAPIXELS``; 0: none): order-independent stacks of more
    than two frames, weight-map models at a reduced-resolution speed only; otherwise unchanged."""
    budget = STACK_MEGAPIXELS if stack_megapixels is None else float(stack_megapixels)
    if not (math.isfinite(budget) and budget >= 0):
        raise ValueError(f"stack_megapixels must be ≥ 0 (0: no shared budget), got {stack_megapixels!r}")
    st = settings
    reduced = st.scale < 1 or st.coarse < 1 or st.working_size > 0  # "quality" stays at full size
    if budget and symmetric and frames > 2 and fm.prediction == "weights" and reduced:
        share = budget / frames
        if not st.working_size or st.working_size > share:
            st = dataclasses.replace(st, working_size=share)
    return st


def fuse(images: Sequence[ImageLike] | str | os.PathLike, model: FusionModel | str | os.PathLike | None = None, *,
         sampler: str | None = None, steps: int | None = None, seed: int = 0, device: str = "cpu",
         tile: int | str | None = "auto", overlap: int | None = None, progress: bool = False,
         callback: Callable[[], None] | None = None, names: Sequence[str] | None = None,
         settings: SamplingSettings | None = None, bits: int | None = None, align: str = "none",
         reference: int = 0, symmetric: bool | None = None, depth_map: str | os.PathLike | None = None,
         save_weights: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
         colour: str = "auto", speed: str | None = None, depth_index: bool = False,
         evidence_fill: bool = True, max_pixels: int | None = None,
         stack_megapixels: float | None = None) -> np.ndarray:
    """Fuse a focus stack; returns ``[H, W]`` (all grey) or ``[H, W, 3]``, the size of the reference
    frame (all frames have one size), as ``uint8`` or ``uint16`` (see ``bits``).

    ``images``: N ≥ 2 arrays (``uint8``, ``uint16`` or float in [0, 1]; ``[H, W]``, ``[H, W, 3]``, an
    alpha channel is dropped with a warning) or file names (read with EXIF orientation, 16-bit
    precision kept), all of one size. File names are read when needed (two to four times), so a
    stack of many large frames is never in memory at once. A single path stands for the frames it
    holds (``imageio.stack_frames``): every page (z-slice) of a multi-page TIFF, read one page at a
    time, or the image files of a folder in natural order; such pages (``imageio.TiffPage``) may
    also be given in the sequence. ``model``: a ``FusionModel``, a
    checkpoint path, or ``None`` for ``DEFAULT_CHECKPOINT`` (loaded on ``device``).
    ``sampler``/``steps``: default the model's (``FusionModel.default_sampler``). ``tile``:
    ``"auto"``, a tile side in pixels, or 0/None for whole images; ``overlap`` defaults to a quarter
    of the tile. ``progress`` shows a bar over the network evaluations of the whole stack,
    ``callback()`` is called after each evaluation. ``names`` label the images in messages (default:
    their file names, or "image 1", "image 2", ...). ``speed``: a name in ``SPEEDS`` ("quality":
    every step at full resolution; "balanced": the steps before the last at a quarter of it;
    "fast": the last step at half resolution too; ``None``: ``FusionModel.default_speed``, i.e.
    ``DEFAULT_SPEED`` for weight-map models). ``settings`` (from ``FusionModel.settings``)
    replaces sampler/steps/seed/tile/overlap/speed when given. ``bits``: 8 (``uint8``) or 16 (``uint16``,
    the 0–255 scale × 257); ``None`` chooses 16 when an input holds finer levels than 8 bits
    (``uint16`` arrays, 16-bit files, float data between the 8-bit levels) and 8 otherwise, so
    8-bit pairs give exactly the 8-bit result they always did.

    ``align``: ``"none"`` (default: the frames are used as they are), ``"auto"`` (register them,
    similarity, when a cheap check finds one misaligned by more than ``align.AUTO_THRESHOLD_PX``),
    ``"translation"``, ``"similarity"`` or ``"homography"``; frames are registered to
    ``images[reference]``. A frame that cannot be registered raises a one-line ``ValueError``
    (``"auto"``: a ``UserWarning``, and the frames are fused as they are). ``symmetric``: the
    order-independent N-frame fusion (see the module docstring); ``None`` = on for N > 2 and
    ``SYMMETRIC_PAIRS`` for N = 2; needs a weight-map model (ε/x₀ models fold pairwise).
    ``depth_map``: write there an image of each pixel's strongest frame (``stack.write_depth_map``:
    frame i at grey round(i·255/(N−1)); with ``depth_index`` the index i itself, 16-bit, which needs
    a PNG or TIFF path); ``save_weights``: write each frame's weight map into that
    folder (``weight-01.png``, …, 16-bit, weight × 65535). ``log(message)`` receives one-line notes
    (the alignment decision). ``colour`` (colour stacks, luminance models): ``"weights"`` applies
    each frame's weight map to its R, G and B (every output pixel a convex combination of the
    frames' pixels), ``"paper"`` joins the fused luminance with chroma fused by the paper's
    saturation-weighted rule; ``"auto"`` (default) = ``"weights"`` for a weight-map model, ``"paper"``
    otherwise. ``evidence_fill`` (weight-map models, pairs and order-independent stacks): where every
    frame is flat (no structure in any of them), each weight follows what the nearest structured
    surroundings decide (``rediffuse.evidence``) instead of the network's wandering guess; ``False``
    keeps the network's weights everywhere. ``max_pixels``: a file or page of more pixels is refused
    from its header, before anything is decoded (``stack.check_pixels``; ``None``: as many as this
    machine's memory can fuse, 0: no limit). ``stack_megapixels`` (order-independent stacks of more than
    two frames, reduced-resolution speeds): the network megapixels the frames share, each frame's
    working size at most this / N (``None``: ``STACK_MEGAPIXELS``; 0: each frame at the speed's own
    working size). See the module docstring for the method.
    """
    if bits not in (None, 8, 16):
        raise ValueError(f"bits must be 8, 16 or None (follow the inputs), got {bits!r}")
    if isinstance(images, np.ndarray):
        raise TypeError("fuse expects a sequence of images (arrays or file names), not a single image")
    if isinstance(images, (str, os.PathLike)):  # a z-stack (multi-page TIFF) or a folder of frames
        stack = images
        images = stack_frames(stack)
        if len(images) < 2:
            raise ValueError(f"need at least two images to fuse: {stack} holds {len(images) or 'no'} "
                             f"image{'' if len(images) == 1 else 's'}, and a stack needs two or more (a multi-page "
                             "TIFF, a folder of frames, or a list of images)")
    images = list(images)
    if len(images) < 2:
        raise ValueError(f"need at least two images to fuse, got {len(images)}")
    if depth_index and depth_map is not None and Path(depth_map).suffix.lower() not in (".png", ".tif", ".tiff"):
        raise ValueError(f"a depth map of frame indices needs 16 bits: name a .png or .tif file, not {depth_map}")
    if names is None:
        names = [str(im) if isinstance(im, (str, os.PathLike, TiffPage)) else f"image {i + 1}"
                 for i, im in enumerate(images)]
    names = [str(n) for n in names]
    if len(names) != len(images):
        raise ValueError(f"got {len(names)} names for {len(images)} images")
    if colour not in COLOUR_MODES:
        raise ValueError(f"colour must be one of {', '.join(COLOUR_MODES)}, got {colour!r}")
    if align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {', '.join(ALIGN_MODES)}, got {align!r}")
    if isinstance(reference, bool) or not isinstance(reference, (int, np.integer)) or not 0 <= reference < len(images):
        raise ValueError(f"reference must be the index of one of the {len(images)} images (0 to {len(images) - 1}), "
                         f"got {reference!r}")
    fm = model if isinstance(model, FusionModel) else FusionModel(model, device=device)
    n = len(images)
    if symmetric and fm.prediction != "weights":
        raise ValueError(f"the order-independent fusion needs a weight-map model; {fm.path.name} predicts "
                         f"{fm.prediction!r}: fuse with symmetric=False (--no-symmetric) or another checkpoint")
    if colour == "weights" and fm.prediction != "weights":
        raise ValueError(f"colour='weights' needs a weight-map model; {fm.path.name} predicts {fm.prediction!r}: "
                         "use colour='paper' (--colour paper)")
    if symmetric is None:
        symmetric = fm.prediction == "weights" and (n > 2 or SYMMETRIC_PAIRS)
    if (depth_map or save_weights) and not (symmetric or n == 2):
        raise ValueError("depth and weight maps of a stack of more than two images need the order-independent "
                         "fusion (symmetric=True; drop --no-symmetric)")
    if (depth_map or save_weights) and fm.prediction != "weights":
        raise ValueError(f"depth and weight maps need a weight-map model; {fm.path.name} predicts {fm.prediction!r}")
    if n > 2 and not symmetric:
        warnings.warn(f"{n} images folded pairwise in the order given: another order gives another result "
                      "(the order-independent fusion needs a weight-map model and symmetric=True)", stacklevel=2)
    st = settings or fm.settings(sampler, steps, tile=tile, overlap=overlap, seed=seed, speed=speed)
    st = stack_settings(fm, st, n, symmetric, stack_megapixels)

    check_pixels(images, names, max_pixels)  # from the headers, before any frame is decoded
    # fused in the orientation the content chooses, so turned inputs give the turned output exactly
    turns = canonical_turns(_as_array(images[i], names[i])[0] for i in range(n))

    def load(i: int) -> tuple[np.ndarray, int]:
        a, b = _as_array(images[i], names[i])
        return turn(a, turns), b

    frames = FrameReader(load, names, int(reference))
    info = frames.survey(align, MIN_SIDE, log)
    is_colour = info.colour
    bits = bits or max(info.bits)
    if any(is_colour) and not all(is_colour):
        grey = ", ".join(nm for nm, c in zip(names, is_colour) if not c)
        warnings.warn(f"mixing grey and colour images: {grey} treated as colour (R = G = B); the result is colour",
                      stacklevel=2)
    h, w = info.height, info.width
    c = fm.channels  # 1: the luminance is fused (colour by its weights or the chroma rule); 3: an RGB model
    if colour == "auto":
        colour = "weights" if fm.prediction == "weights" else "paper"
    rgb = c == 1 and any(is_colour) and colour == "weights"
    evidence = Evidence(h, w) if evidence_fill and fm.prediction == "weights" and (symmetric or n == 2) else None
    total_sum, cbcr = accumulate(frames, info, channels=c, frame_sum=symmetric,
                                 chroma=c == 1 and any(is_colour) and not rgb, evidence=evidence)
    fill = evidence.fill() if evidence is not None else None

    runs = n if symmetric else n - 1
    bar = tqdm(total=runs * fm.evaluations(h, w, st), desc="fusing",
               unit="eval") if progress else None

    def on_eval():
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback()

    def pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, logit = fm.sample_with_logits(torch.cat([x, y.to(x.device)], 1), st, callback=on_eval)
        if fill is None or logit is None:
            return out, logit
        logit = fill(logit)  # the weights of flat regions from their surroundings
        wgt = torch.sigmoid(logit).to(out.device)
        return wgt * x.to(out.device) + (1 - wgt) * y.to(out.device), logit

    try:
        with logit_store(save_weights) as keep:
            if symmetric:
                acc = fuse_softmax(frames, lambda y, r: pair(y, r)[1], total_sum, channels=c, tau=TAU,
                                   depth=depth_map is not None, keep=keep, rgb=rgb)
                fused = torch.from_numpy(acc.result())[None]
            else:
                fused, acc = fuse_fold(frames, pair, channels=c, depth=depth_map is not None, keep=keep, rgb=rgb)
            del total_sum
            if depth_map is not None:
                write_depth_map(depth_map, turn(acc.index, -turns), n, as_index=depth_index)
            if save_weights is not None:
                write_weight_maps(save_weights, acc, names, turns=-turns)
            del acc
    finally:
        if bar is not None:
            bar.close()
    return turn(_output(fused, cbcr, bits, any(is_colour), c == 3 or rgb), -turns)


def _output(fused: torch.Tensor, cbcr: tuple[np.ndarray, np.ndarray] | None, bits: int, colour: bool,
            rgb: bool) -> np.ndarray:
    """The fused ``[1, C, H, W]`` in [-1, 1] as the image ``fuse`` returns: RGB (``rgb``: the
    network's or the weight maps' colour), or Y joined with the fused chroma ``cbcr``, or grey."""
    if rgb:
        if bits == 8:  # the 8-bit path exactly as before, so 8-bit results never change
            out8 = tensor_to_image(fused[0])
            return out8 if colour else np.clip(np.rint(_luma(out8)), 0, 255).astype(np.uint8)
        v = np.moveaxis((fused[0].cpu().double().numpy() + 1.0) * 127.5, 0, -1)
        return _quantise(v if colour else _luma(np.clip(v, 0, 255)), 16)
    y = (fused[0, 0].cpu().numpy().astype(np.float32) + np.float32(1.0)) * np.float32(127.5)
    del fused
    if cbcr is None:
        return _quantise(y, bits)
    h, w = y.shape
    out = np.empty((h, w, 3), np.uint8 if bits == 8 else np.uint16)
    for s in _strips(h):  # Y joined with the fused chroma, as data.recombine does
        out[s] = _quantise(ycbcr_to_rgb(np.stack([y[s].astype(np.float64), cbcr[0][s], cbcr[1][s]], -1)), bits)
    return out
