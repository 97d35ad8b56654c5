"""The fusion pipeline: a trained U-Net + a sampler, applied to the luminance of a focus stack.

``fuse(images, model)`` takes a focus stack (arrays or file names, a multi-page TIFF or a folder) and
returns the fused image, the size of the inputs: ``uint8``, or ``uint16`` when an input holds finer
levels than 8 bits, so 16 bits in give 16 bits out. How it treats the stack is one
:class:`FuseOptions`; how the model samples is one :class:`~rediffuse.fusion_model.SamplingSettings`.

- **Colour.** A luminance model sees Y only. With a weight-map model (``colour="auto"`` → ``"weights"``)
  each frame's weight map is applied to its R, G and B alike (at the common exposure, below), so
  where one frame wins a region its pixels are copied, colour included.
  ``colour="paper"`` (the only choice for ε/x₀ models) fuses Cb and Cr by the saturation-weighted rule
  ``Σ C_i |C_i − 128| / Σ |C_i − 128|`` over all frames, as the ReDiffuse code does. Grey stacks give
  grey output; a stack mixing grey and colour is fused in colour (with a warning). An RGB model fuses
  R, G and B directly.
- **Stacks of N ≥ 2 frames, order-independent** (``symmetric``, the default for N > 2): a weight-map
  model gives every frame a logit l_i = f(Y_i, R_i) against R_i, the mean of the other frames, and the
  fused luminance is Σ_i softmax_i(l_i / τ) · Y_i (``stack.TAU``). For N = 2 this is the pair model made
  symmetric in its inputs (two runs instead of one). ``symmetric=False`` folds pairwise in the order
  given (the only way for ε/x₀ models). Frames are streamed (``rediffuse.stack``): a long stack of
  large frames is never in memory at once.
- **Alignment** (``align``): frames are registered to frame ``reference`` (``rediffuse.align``); the
  result keeps the reference frame's size and framing. The library's default is ``"none"`` (arrays
  handed over by a program are usually registered already); ``rediffuse fuse`` defaults to ``"auto"``
  (photos from a camera often are not).
- **Any size** from ``MIN_SIDE`` pixels per side up: below the network's ``min_size`` images are
  reflect-padded; large images are tiled inside every sampling step (``rediffuse.tiling``).
- **Speed** (``speed``; ``fusion_model.SPEEDS``): the steps before the last run at a reduced
  resolution, and large images at a bounded working size; stacks of more than two frames share
  ``STACK_MEGAPIXELS``.
- **Flat regions** (``evidence_fill``, on by default): where every frame is flat, nothing says which
  is sharp; there each weight takes the decision of the nearest structure (``rediffuse.evidence``).
- **Exposure** (``exposure``, on by default): the frames are blended at one smooth local exposure,
  the one the weights choose, smoothed (``rediffuse.exposure``; differences under 3 % are left
  alone), so where the weights switch between frames of different exposure or colour no patch
  shows; a pixel one frame wins outright keeps that frame's value.
- **Exact quarter turns.** The stack is fused in the quarter turn its content chooses
  (``rediffuse.orientation``) and the result turned back, so a turned stack gives the turned result
  bit for bit.
- **Checks.** Non-finite network output raises a ``RuntimeError`` naming the step; a checkpoint with
  non-finite weights or the wrong shape of model is refused at load time with a one-line ``ValueError``.
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
from .data import image_to_tensor, luma, tensor_to_image, ycbcr_to_rgb
from .evidence import Evidence, best_of_rest, sharpness
from .fusion_model import (DEFAULT_SPEED, GUIDE_EPS, GUIDE_RADIUS, MIN_WORKING_SIDE, PRECISIONS, SPEEDS,
                           SamplingModel, SamplingSettings, guided_upsample)
from .imageio import TiffPage, read_image_native, stack_frames
from .orientation import canonical_turns, turn
from .maps import logit_store, write_depth_map, write_weight_maps
from .stack import (TAU, FrameReader, OnlineSoftmax, accumulate, check_pixels, check_sizes, fuse_fold, fuse_softmax,
                    strips)
from .tiling import TILE_BUDGET_BYTES, plan_tiles, tile_window
from .weights import DEFAULT_CHECKPOINT, SHIPPED_MODELS, WEIGHTS_DIR, checkpoint_available, resolve_checkpoint

__all__ = [
    "fuse", "FuseOptions", "load_stack_image", "check_stack", "stack_settings", "MIN_SIDE", "SYMMETRIC_PAIRS",
    "COLOUR_MODES", "STACK_MEGAPIXELS", "SAMPLING_KEYS",
    # the model, its settings, tiles and the shipped models, importable from here as before
    "FusionModel", "SamplingModel", "SamplingSettings", "SPEEDS", "DEFAULT_SPEED", "PRECISIONS", "MIN_WORKING_SIDE", "GUIDE_RADIUS",
    "GUIDE_EPS", "guided_upsample", "plan_tiles", "tile_window", "TILE_BUDGET_BYTES", "DEFAULT_CHECKPOINT",
    "SHIPPED_MODELS", "WEIGHTS_DIR", "resolve_checkpoint", "checkpoint_available",
]

#: Images with a side shorter than this are refused; from here up to the network's ``min_size`` they
#: are reflect-padded.
MIN_SIDE = 8
#: Whether a pair is fused symmetrically by default, σ((f(A, B) − f(B, A)) / 2), at the cost of two
#: sampling runs instead of one (stacks of three or more are always fused order-independently).
SYMMETRIC_PAIRS = False
#: How a luminance model colours its result (see :class:`FuseOptions`).
COLOUR_MODES = ("auto", "weights", "paper")
#: Network megapixels the last sampling steps of a stack of N > 2 frames share: each frame's working
#: size is at most this / N, so a long stack of large frames costs about what a few frames cost (the
#: weight maps are brought to full size along each frame's edges). Pairs are not affected.
STACK_MEGAPIXELS = 5.0
#: The keyword arguments of :func:`fuse` that make its :class:`SamplingSettings` (``FusionModel.settings``).
SAMPLING_KEYS = ("sampler", "steps", "seed", "tile", "overlap", "speed")

# a TiffPage is one page (z-slice) of a multi-page TIFF, read when needed (imageio.stack_frames)
ImageLike = Union[np.ndarray, str, os.PathLike, TiffPage]


class FusionModel(SamplingModel):
    __doc__ = SamplingModel.__doc__

    def fuse(self, images: Sequence[ImageLike] | str | os.PathLike, **kwargs) -> np.ndarray:
        """Fuse a focus stack with this model: :func:`fuse` (same keyword arguments)."""
        return fuse(images, self, **kwargs)


@dataclass(frozen=True)
class FuseOptions:
    """How :func:`fuse` treats a stack, validated once when made (one-line ``ValueError``).

    ``align``: ``"none"`` (the frames as they are), ``"auto"`` (register them, similarity, when a cheap
    check finds one misaligned), or a motion of ``align.MOTIONS``; frames are registered to
    ``images[reference]``. ``symmetric``: the order-independent N-frame fusion (``None``: on for N > 2
    and ``SYMMETRIC_PAIRS`` for N = 2; needs a weight-map model). ``colour``: a name in
    ``COLOUR_MODES``. ``evidence_fill``: flat regions take their weights from their surroundings.
    ``exposure``: the frames are blended at one smooth local exposure (``rediffuse.exposure``), so
    frames of different exposure leave no patches where the weights switch (weight-map models).
    ``bits``: 8, 16, or ``None`` (16 when an input holds finer levels than 8 bits). ``depth_map``: write
    each pixel's strongest frame there (``depth_index``: the index itself, 16-bit PNG/TIFF);
    ``save_weights``: write every frame's weight map into that folder. ``max_pixels``: refuse larger
    files from their headers (``None``: what this machine's memory can fuse, 0: no limit).
    ``stack_megapixels``: the budget frames of a stack of N > 2 share (``None``: ``STACK_MEGAPIXELS``,
    0: none)."""

    align: str = "none"
    reference: int = 0
    symmetric: bool | None = None
    colour: str = "auto"
    evidence_fill: bool = True
    exposure: bool = True
    bits: int | None = None
    depth_map: str | os.PathLike | None = None
    depth_index: bool = False
    save_weights: str | os.PathLike | None = None
    max_pixels: int | None = None
    stack_megapixels: float | None = None

    def __post_init__(self) -> None:
        if self.align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {', '.join(ALIGN_MODES)}, got {self.align!r}")
        if isinstance(self.reference, bool) or not isinstance(self.reference, (int, np.integer)) or self.reference < 0:
            raise ValueError(f"reference must be the index of one of the images (from 0), got {self.reference!r}")
        if self.colour not in COLOUR_MODES:
            raise ValueError(f"colour must be one of {', '.join(COLOUR_MODES)}, got {self.colour!r}")
        if self.bits not in (None, 8, 16):
            raise ValueError(f"bits must be 8, 16 or None (follow the inputs), got {self.bits!r}")
        if self.depth_index and self.depth_map is not None \
                and Path(self.depth_map).suffix.lower() not in (".png", ".tif", ".tiff"):
            raise ValueError(f"a depth map of frame indices needs 16 bits: name a .png or .tif file, "
                             f"not {self.depth_map}")
        mp = self.stack_megapixels
        if mp is not None and not (isinstance(mp, (int, float)) and math.isfinite(mp) and mp >= 0):
            raise ValueError(f"stack_megapixels must be ≥ 0 (0: no shared budget), got {mp!r}")

    def check(self, n: int) -> "FuseOptions":
        """These options, refused (one-line ``ValueError``) when ``reference`` is not one of ``n`` frames."""
        if not self.reference < n:
            raise ValueError(f"reference must be the index of one of the {n} images (0 to {n - 1}), "
                             f"got {self.reference!r}")
        return self

    def for_stack(self, n: int, fm: SamplingModel) -> "FuseOptions":
        """These options for a stack of ``n`` frames fused by ``fm``: ``reference`` checked against
        ``n``, ``symmetric`` and ``colour`` resolved, and what the model cannot do refused."""
        self.check(n)
        weights = fm.prediction == "weights"
        if self.symmetric and not weights:
            raise ValueError(f"the order-independent fusion needs a weight-map model; {fm.path.name} predicts "
                             f"{fm.prediction!r}: fuse with symmetric=False or another checkpoint")
        if self.colour == "weights" and not weights:
            raise ValueError(f"colour='weights' needs a weight-map model; {fm.path.name} predicts "
                             f"{fm.prediction!r}: use colour='paper'")
        symmetric = self.symmetric if self.symmetric is not None else weights and (n > 2 or SYMMETRIC_PAIRS)
        maps = self.depth_map is not None or self.save_weights is not None
        if maps and not (symmetric or n == 2):
            raise ValueError("depth and weight maps of a stack of more than two images need the order-independent "
                             "fusion (symmetric=True)")
        if maps and not weights:
            raise ValueError(f"depth and weight maps need a weight-map model; {fm.path.name} predicts {fm.prediction!r}")
        colour = self.colour if self.colour != "auto" else ("weights" if weights else "paper")
        return dataclasses.replace(self, symmetric=symmetric, colour=colour)


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


def check_stack(arrays: Sequence[np.ndarray], names: Sequence[str], min_side: int = MIN_SIDE) -> None:
    """Refuse (one-line ``ValueError``) a stack whose images differ in size or are too small."""
    check_sizes([a.shape[:2] for a in arrays], names, min_side)


def _stack_list(images, names: Sequence[str] | None) -> tuple[list, list[str]]:
    """The frames ``images`` stands for (a z-stack or folder path expanded) and their names."""
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
    if names is None:
        names = [str(im) if isinstance(im, (str, os.PathLike, TiffPage)) else f"image {i + 1}"
                 for i, im in enumerate(images)]
    names = [str(n) for n in names]
    if len(names) != len(images):
        raise ValueError(f"got {len(names)} names for {len(images)} images")
    return images, names


def fuse(images: Sequence[ImageLike] | str | os.PathLike, model: FusionModel | str | os.PathLike | None = None, *,
         options: FuseOptions | None = None, settings: SamplingSettings | None = None,
         names: Sequence[str] | None = None, device: str = "cpu", progress: bool = False,
         callback: Callable[[], None] | None = None, log: Callable[[str], None] | None = None,
         **kwargs) -> np.ndarray:
    """Fuse a focus stack; returns ``[H, W]`` (all grey) or ``[H, W, 3]``, the size of the reference
    frame, as ``uint8`` or ``uint16`` (see ``FuseOptions.bits``).

    ``images``: N ≥ 2 arrays (``uint8``, ``uint16`` or float in [0, 1]; ``[H, W]`` or ``[H, W, 3]``, an
    alpha channel dropped with a warning) or file names, all of one size, read when needed, so a stack
    of many large frames is never in memory at once. A single path stands for the frames it holds
    (``imageio.stack_frames``): the pages of a multi-page TIFF or the images of a folder in natural
    order. ``model``: a ``FusionModel``, a checkpoint path or shipped name, or ``None`` for the default
    (loaded on ``device``).

    ``options``: a :class:`FuseOptions` (alignment, symmetry, colour, output maps, limits); its fields
    may also be given as keywords (``align="auto"``), replacing those of ``options``. ``settings``: the
    sampling (``FusionModel.settings``); without it the keywords ``SAMPLING_KEYS`` (``sampler``,
    ``steps``, ``seed``, ``tile`` (default ``"auto"``), ``overlap``, ``speed``) make it.
    ``names`` label the images in messages (default: their file names, or "image 1", ...);
    ``progress`` shows a bar over the network evaluations, ``callback()`` runs after each one, and
    ``log(message)`` receives one-line notes (the alignment decision).
    """
    sampling = {k: kwargs.pop(k) for k in SAMPLING_KEYS if k in kwargs}
    fields = {f.name for f in dataclasses.fields(FuseOptions)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise TypeError(f"fuse() got unexpected keyword argument{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}")
    opts = dataclasses.replace(options or FuseOptions(), **kwargs) if kwargs else (options or FuseOptions())
    images, names = _stack_list(images, names)
    n = len(images)
    fm = model if isinstance(model, SamplingModel) else FusionModel(model, device=device)
    opts = opts.for_stack(n, fm)
    if n > 2 and not opts.symmetric:
        warnings.warn(f"{n} images folded pairwise in the order given: another order gives another result "
                      "(the order-independent fusion needs a weight-map model and symmetric=True)", stacklevel=2)
    if settings is None:
        settings = fm.settings(**{"tile": "auto", **sampling})
    elif sampling:
        raise TypeError(f"fuse() takes either settings or {', '.join(sorted(sampling))}, not both")
    st = stack_settings(fm, settings, n, opts.symmetric, opts.stack_megapixels)
    check_pixels(images, names, opts.max_pixels)  # from the headers, before any frame is decoded
    # fused in the orientation the content chooses, so turned inputs give the turned output exactly
    turns = canonical_turns(_as_array(images[i], names[i])[0] for i in range(n))

    def load(i: int) -> tuple[np.ndarray, int]:
        a, b = _as_array(images[i], names[i])
        return turn(a, turns), b

    frames = FrameReader(load, names, int(opts.reference))
    return turn(_fuse_frames(frames, fm, st, opts, turns, log=log, progress=progress, callback=callback), -turns)


def _fuse_frames(frames: FrameReader, fm: FusionModel, st: SamplingSettings, opts: FuseOptions, turns: int, *,
                 log: Callable[[str], None] | None, progress: bool,
                 callback: Callable[[], None] | None) -> np.ndarray:
    """The stack surveyed (aligned), weighed and blended, with its maps written: the fused image in the
    orientation the stack is fused in (``turns`` quarter turns from the inputs')."""
    n = frames.n
    info = frames.survey(opts.align, MIN_SIDE, log)
    is_colour = info.colour
    bits = opts.bits or max(info.bits)
    if any(is_colour) and not all(is_colour):
        grey = ", ".join(nm for nm, c in zip(frames.names, is_colour) if not c)
        warnings.warn(f"mixing grey and colour images: {grey} treated as colour (R = G = B); the result is colour",
                      stacklevel=3)
    h, w = info.height, info.width
    c = fm.channels  # 1: the luminance is fused (colour by its weights or the chroma rule); 3: an RGB model
    rgb = c == 1 and any(is_colour) and opts.colour == "weights"
    weighs = fm.prediction == "weights" and (opts.symmetric or n == 2)
    evidence = Evidence(h, w) if opts.evidence_fill and weighs else None
    total_sum, cbcr = accumulate(frames, info, channels=c, frame_sum=opts.symmetric,
                                 chroma=c == 1 and any(is_colour) and not rgb, evidence=evidence)
    fill = evidence.fill() if evidence is not None else None
    runs = n if opts.symmetric else n - 1
    bar = tqdm(total=runs * fm.evaluations(h, w, st), desc="fusing", unit="eval") if progress else None

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

    depth = opts.depth_map is not None
    try:
        with logit_store(opts.save_weights) as keep:
            if opts.symmetric:
                rest = _best_of_rest(frames, total_sum, c) if fm.stack_reference == "best" else None
                acc = fuse_softmax(frames, lambda y, r: pair(y, r)[1], total_sum, channels=c, tau=TAU,
                                   depth=depth, keep=keep, rgb=rgb, exposure=opts.exposure, rest=rest)
                del rest
                fused = torch.from_numpy(acc.result())[None]
            else:
                fused, acc = fuse_fold(frames, pair, channels=c, depth=depth, keep=keep, rgb=rgb,
                                       exposure=opts.exposure)
            del total_sum
            if depth:
                write_depth_map(opts.depth_map, turn(acc.index, -turns), n, as_index=opts.depth_index)
            if opts.save_weights is not None:
                write_weight_maps(opts.save_weights, acc, frames.names, turns=-turns)
            del acc
    finally:
        if bar is not None:
            bar.close()
    return _output(fused, cbcr, bits, any(is_colour), c == 3 or rgb)


def _best_of_rest(frames: FrameReader, total: np.ndarray, channels: int
                  ) -> Callable[[int, np.ndarray, np.ndarray | None], np.ndarray]:
    """``rest(i, Y_i, valid_i)``: frame i's reference, the best of the other frames
    (``evidence.best_of_rest``), for a model trained against it. One more pass over the frames sums
    them weighted by sharpness (a frame counts only where it covers the reference grid)."""
    sharp = OnlineSoftmax(frames.n, total.shape)
    for i in range(frames.n):
        a, valid = frames.frame(i)
        y = image_to_tensor(a, y_only=channels == 1).numpy()
        sharp.add(i, np.broadcast_to(sharpness(y), y.shape), y, valid)

    def rest(i: int, y: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        z = sharpness(y)
        out = np.empty(y.shape, np.float32)
        for s in strips(y.shape[1]):  # row strips keep the temporaries small at 24 MP
            w = np.exp(z[None, s] - sharp.m[:, s])
            if valid is not None:
                w = np.where(valid[None, s], w, np.float32(0))
            out[:, s] = best_of_rest(sharp.num[:, s], sharp.d[:, s], w, y[:, s], total[:, s], frames.n)
        return out

    return rest


def _output(fused: torch.Tensor, cbcr: tuple[np.ndarray, np.ndarray] | None, bits: int, colour: bool,
            rgb: bool) -> np.ndarray:
    """The fused ``[1, C, H, W]`` in [-1, 1] as the image ``fuse`` returns: RGB (``rgb``: the
    network's or the weight maps' colour), or Y joined with the fused chroma ``cbcr``, or grey."""
    if rgb:
        if bits == 8:  # the 8-bit path exactly as before, so 8-bit results never change
            out8 = tensor_to_image(fused[0])
            return out8 if colour else np.clip(np.rint(luma(out8)), 0, 255).astype(np.uint8)
        v = np.moveaxis((fused[0].cpu().double().numpy() + 1.0) * 127.5, 0, -1)
        return _quantise(v if colour else luma(np.clip(v, 0, 255)), 16)
    y = (fused[0, 0].cpu().numpy().astype(np.float32) + np.float32(1.0)) * np.float32(127.5)
    del fused
    if cbcr is None:
        return _quantise(y, bits)
    h, w = y.shape
    out = np.empty((h, w, 3), np.uint8 if bits == 8 else np.uint16)
    for s in strips(h):  # Y joined with the fused chroma, as data.recombine does
        out[s] = _quantise(ycbcr_to_rgb(np.stack([y[s].astype(np.float64), cbcr[0][s], cbcr[1][s]], -1)), bits)
    return out
