"""A loaded fusion model and how it samples: :class:`SamplingModel` (checkpoint loading and validation,
the one sampling path; ``rediffuse.fuse.FusionModel`` is this class with the pipeline's ``fuse``
added) and :class:`SamplingSettings` (every sampling setting, resolved and validated once, timesteps
included).

**Speed** (``SPEEDS``, weight-map models): only the last sampling step decides the weight map; the
steps before it hand it a starting estimate. ``"balanced"`` (the default) runs them on the sources
scaled down (``layers.resize``, anti-aliased) and starts the last step, at full size, from their
weight map brought up along the sources' edges (:func:`guided_upsample`, He & Sun's fast guided
filter); ``"fast"`` runs the last step at a reduced size too and upsamples its weight map the same
way. Images above ``working_size`` megapixels are processed scaled down to it, their weight maps
applied to the full-size sources. All of it commutes with quarter turns. What each preset costs and
scores is measured in ``benchmarks/bench_fuse.py`` and ``benchmarks/bench_peers.py`` (docs/speed.md).
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .baselines import guided_coefficients
from .checkpoint import load_model
from .diffusion import PREDICTIONS, SAMPLERS, get_sampler, get_schedule, sampling_timesteps
from .evidence import REFERENCES
from .layers import resize
from .runtime import cpu_has_bf16, exact_precision, resolve_device
from .tiling import TiledNet, auto_tile, pad_to, plan_tiles
from .weights import is_shipped_name, resolve_checkpoint

__all__ = ["SamplingModel", "SamplingSettings", "SPEEDS", "DEFAULT_SPEED", "PRECISIONS", "MIN_WORKING_SIDE",
           "GUIDE_RADIUS", "GUIDE_EPS", "guided_upsample"]

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


class SamplingModel:
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
            raise RuntimeError("this GPU has no bfloat16 arithmetic; use precision=fp32")
        if precision == "bf16" and device == "cpu" and not cpu_has_bf16():
            warnings.warn("precision bf16: this CPU has no bfloat16 arithmetic (AVX-512 BF16 or AMX), so the "
                          "network runs many times slower than in fp32; use precision=fp32 here", RuntimeWarning,
                          stacklevel=2)
        self.precision = precision
        path = resolve_checkpoint(checkpoint)
        named = is_shipped_name(checkpoint)
        if (not checkpoint or named) and not path.is_file():
            what = f"the shipped model {str(checkpoint)!r}:" if named else "the default checkpoint"
            raise FileNotFoundError(
                f"{what} {path} is not there (it is not shipped yet); "
                "pass one as checkpoint=PATH, e.g. a run's last.pt "
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
        self.stack_reference = cfg.get("stack_reference", "mean")  # what a stack's frames are weighed against
        if self.stack_reference not in REFERENCES:
            raise ValueError(f"{path} weighs a stack's frames against {self.stack_reference!r}, unknown to this "
                             f"version (known: {', '.join(REFERENCES)})")
        self.model.to(device)
        self.device = device
        self.path = path
        self.schedule = get_schedule(cfg.get("schedule", "cosine"), cfg.get("T", 2000)).to(device)

    @property
    def min_size(self) -> int:
        """Smallest side the network accepts; ``fuse_y`` pads smaller inputs up to it."""
        return int(self.model.min_size)

    def auto_tile(self) -> int:
        """Tile side whose network activations take about ``tiling.TILE_BUDGET_BYTES``."""
        return auto_tile(int(self.model.config["base"]))

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
        name, k = self.default_sampler()
        sampler = sampler or name
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; available: {', '.join(sorted(SAMPLERS))}")
        # the one place a number of steps is checked and turned into the timesteps the samplers visit
        timesteps = tuple(sampling_timesteps(self.schedule.T, k if steps is None else steps))
        tile, overlap = self.resolve_tile(tile, overlap)
        res = self.resolve_speed(speed, scale=scale, coarse=coarse, working_size=working_size)
        return SamplingSettings(sampler, timesteps, tile, overlap, int(seed), bool(clip), **res)

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
               timesteps: Sequence[int] | None = None, on_step: Callable | None = None) -> torch.Tensor:
        """The one sampling path: ``cond`` ``[B, 2·C, H, W]`` (two sources in [-1, 1]) → ``[B, C, H, W]``.

        Owns what every caller needs: inputs below ``min_size`` reflect-padded and cropped back,
        tiled network evaluations, the generator (x_T drawn once for the whole image from a CPU
        generator seeded by ``settings.seed``, unless ``x_T`` is given), and the NaN checks.
        ``correct(x0_hat, t_index)`` is the sampler's per-step correction (e.g. the range–null-space
        projection of ``rediffuse.restore``; needs inputs of at least ``min_size``); ``observe(out)``
        sees the network's whole-image output at every step; ``callback()`` runs after every network
        evaluation; ``on_step(step)`` sees every sampler step (``diffusion.SamplerStep``: t, x_t, x̂0, …;
        e.g. a ``diffusion.Trajectory``). ``timesteps`` (decreasing, from the model's schedule): run
        only those of ``settings.timesteps`` (one part of a multi-resolution run).
        Always at the resolution of ``cond``: the reduced resolutions of ``settings.scale``,
        ``coarse`` and ``working_size`` are applied by :meth:`sample_with_logits`.
        """
        st = settings or self.settings()
        ts = list(st.timesteps if timesteps is None else timesteps)
        c = self.channels
        if cond.ndim != 4 or cond.shape[1] != 2 * c:
            raise ValueError(f"sample expects the two sources as [B, {2 * c}, H, W], got {tuple(cond.shape)}")
        h, w = cond.shape[-2:]
        cond = cond.to(self.device, torch.float32)
        cond, pads = pad_to(cond, self.min_size)
        if any(pads) and correct is not None:
            raise ValueError(f"images must be at least {self.min_size} px on each side for a corrected sampler, "
                             f"got {w}×{h}")
        H, W = cond.shape[-2:]
        bar = tqdm(total=self.count_evaluations(h, w, len(ts), st.tile, st.overlap), desc="fusing", unit="eval",
                   leave=False) if progress else None

        def on_eval():
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback()

        tiled = TiledNet(self.model, H, W, st.tile, st.overlap, on_eval, self.precision)

        def net(x, t, cnd):
            out = tiled(x, t, cnd)
            if observe is not None:
                observe(out)
            return out

        if x_T is not None:
            x_T, _ = pad_to(x_T.to(self.device, torch.float32), self.min_size)
        g = torch.Generator(device="cpu").manual_seed(st.seed)
        try:
            # TF32 convolutions on Ampere+ GPUs would break the exact-equivariance claim (~0.01 grey levels)
            with exact_precision():
                out = get_sampler(st.sampler)(net, cond, (cond.shape[0], c, H, W), self.schedule, timesteps=ts,
                                              on_step=on_step,
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
        ts = st.timesteps
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
        # sample() reflect-pads small inputs, centred (tiling.pad_to); observe sees the padded output
        h, w = cond.shape[-2:]
        H, W = last[0].shape[-2:]
        t, l = (H - h) // 2, (W - w) // 2
        return out, last[0][..., t:t + h, l:l + w].float().cpu()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, device: str = "cpu",
                        ema: bool = True) -> "SamplingModel":
        """A shipped model by name (``SHIPPED_MODELS``: ``"weights"``, ``"weights-small"``, ``"weights-plain"``,
        ``"paper"``),
        or a checkpoint file; ``None``: the default model."""
        return cls(name_or_path, device=device, ema=ema)


@dataclass(frozen=True)
class SamplingSettings:
    """How a :class:`SamplingModel` samples, resolved and validated by :meth:`SamplingModel.settings`:
    ``sampler`` name, ``timesteps`` (the decreasing timesteps it visits, computed once from the number
    of steps by ``diffusion.sampling_timesteps``; ``steps`` is their count), ``tile`` side in px (0:
    whole image) and its ``overlap``, ``seed``, and
    ``clip``: clamp x̂0 to [−1, 1] at every step as the official code does (default), or not, as the
    paper's Eq. 6 is written (see ``rediffuse.diffusion``; a weight-map x̂0 never leaves the range).
    Speed (``SPEEDS``; :meth:`SamplingModel.sample_with_logits`): ``scale``, the resolution of the last
    step as a fraction of the image side; ``coarse``, that of the steps before it as a fraction of
    the last step's; ``working_size``, the most megapixels the last step works on (0: no limit).
    The defaults (1, 1, 0) sample every step at full resolution."""

    sampler: str
    timesteps: tuple[int, ...]
    tile: int
    overlap: int
    seed: int = 0
    clip: bool = True
    scale: float = 1.0
    coarse: float = 1.0
    working_size: float = 0.0

    @property
    def steps(self) -> int:
        """The number of sampling steps (network evaluations per tile)."""
        return len(self.timesteps)
