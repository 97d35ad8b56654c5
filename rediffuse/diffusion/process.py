"""The forward process, how a model's output is read (ε, x0 or a weight map over the sources), and the
training loss."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
from torch import Tensor

from .schedules import NoiseSchedule

__all__ = ["q_sample", "training_loss", "predict_x0_eps", "register_prediction", "PREDICTIONS", "weight_map",
           "image_gradient_l1", "Model"]


class Model(Protocol):
    """What the diffusion process calls a model: ``model(x_t [B, C, H, W], t LongTensor [B], cond)``."""

    def __call__(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor: ...


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _per_sample(values: Tensor, t: Tensor | int, x: Tensor) -> Tensor:
    """values[t] (float64 → x.dtype), shaped to broadcast against x: [B, 1, 1, ...] or scalar."""
    if isinstance(t, int):
        return values[t].to(device=x.device, dtype=x.dtype)
    t = t.to(values.device, torch.long)
    v = values[t].to(device=x.device, dtype=x.dtype)
    return v.view(-1, *([1] * (x.ndim - 1)))


def _randn(shape: Sequence[int], generator: torch.Generator | None, device, dtype) -> Tensor:
    """Standard normal drawn on the generator's own device (so a CPU generator works for CUDA
    samples and gives the same numbers everywhere), then moved."""
    gdev = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gdev, dtype=dtype).to(device)


def _randint(high: int, n: int, generator: torch.Generator | None, device) -> Tensor:
    gdev = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=gdev).to(device)


# --------------------------------------------------------------------------------------------------
# Forward process and the interpretation of model output
# --------------------------------------------------------------------------------------------------


def q_sample(x0: Tensor, t: Tensor | int, noise: Tensor, schedule: NoiseSchedule) -> Tensor:
    """x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε.  x0, noise: [B, C, H, W]; t: LongTensor [B] or int (index)."""
    a = _per_sample(schedule.alphas_cumprod.sqrt(), t, x0)
    s = _per_sample((1.0 - schedule.alphas_cumprod).sqrt(), t, x0)
    return a * x0 + s * noise


# A converter maps (model_out, x_t, √ᾱ_t, √(1−ᾱ_t), cond) to the unclipped pair (x̂0, ε̂);
# √ᾱ_t and √(1−ᾱ_t) are already in x_t's dtype and broadcastable. ``cond`` is there for
# parameterisations that build x̂0 from the sources (a weight map over I_A, I_B).
Converter = Callable[[Tensor, Tensor, Tensor, Tensor, "Tensor | None"], "tuple[Tensor, Tensor]"]


def _from_eps(out: Tensor, x_t: Tensor, a: Tensor, s: Tensor, cond: Tensor | None):
    return (x_t - s * out) / a, out


def _from_x0(out: Tensor, x_t: Tensor, a: Tensor, s: Tensor, cond: Tensor | None):
    return out, (x_t - a * out) / s


def weight_map(out: Tensor) -> Tensor:
    """The per-pixel weight of source A that a ``"weights"`` model's raw output encodes (sigmoid)."""
    return torch.sigmoid(out)


def _from_weights(out: Tensor, x_t: Tensor, a: Tensor, s: Tensor, cond: Tensor | None):
    """Weight-map fusion (DRFusion's fusion constraint): x̂0 = w·I_A + (1 − w)·I_B, w = sigmoid(out).

    ``cond`` holds the two sources ``[B, 2·C, H, W]``. The output stays a per-pixel convex
    combination of the sources, so in-focus source pixels can be copied exactly.
    """
    if cond is None or cond.shape[1] != 2 * out.shape[1]:
        raise ValueError("the 'weights' prediction needs cond = the two sources [B, 2*C, H, W]")
    c = out.shape[1]
    w = weight_map(out)
    x0 = w * cond[:, :c] + (1 - w) * cond[:, c:]
    return x0, (x_t - a * x0) / s


# name -> (converter, space the training loss is taken in by default: "eps" or "x0")
PREDICTIONS: dict[str, tuple[Converter, str]] = {
    "eps": (_from_eps, "eps"),
    "x0": (_from_x0, "x0"),
    "weights": (_from_weights, "x0"),
}


def register_prediction(name: str, converter: Converter, loss_space: str = "x0") -> None:
    """Add a parameterisation, e.g. ``"weights"``: ``converter(out, x_t, sqrt_ab, sqrt_1m_ab, cond)``
    must return the unclipped (x̂0, ε̂) with x_t = sqrt_ab·x̂0 + sqrt_1m_ab·ε̂."""
    if loss_space not in ("eps", "x0"):
        raise ValueError("loss_space must be 'eps' or 'x0'")
    PREDICTIONS[name] = (converter, loss_space)


def _converter(prediction: str) -> tuple[Converter, str]:
    try:
        return PREDICTIONS[prediction]
    except KeyError:
        raise ValueError(f"unknown prediction {prediction!r}; available: {sorted(PREDICTIONS)}") from None


def predict_x0_eps(
    model_out: Tensor,
    x_t: Tensor,
    t: Tensor | int,
    schedule: NoiseSchedule,
    prediction: str = "eps",
    clip: bool = True,
    cond: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Interpret model output as (x̂0, ε̂), both [B, C, H, W] in x_t's dtype.

    t: index into ``schedule`` (int or LongTensor [B]). With ``clip`` x̂0 is clamped to [−1, 1] and,
    only where the clamp changed a value, ε̂ is recomputed from the clamped x̂0 so that the pair stays
    consistent with x_t (as DDIM's reference code does); elsewhere ε̂ is left bit-exact.
    """
    conv, _ = _converter(prediction)
    model_out = model_out.to(x_t.dtype)
    a = _per_sample(schedule.alphas_cumprod.sqrt(), t, x_t)
    s = _per_sample((1.0 - schedule.alphas_cumprod).sqrt(), t, x_t)
    x0, eps = conv(model_out, x_t, a, s, cond)
    return _clamp_pair(x0, eps, x_t, t, schedule) if clip else (x0, eps)


def _clamp_pair(x0: Tensor, eps: Tensor, x_t: Tensor, t: Tensor | int, schedule: NoiseSchedule):
    """x̂0 clamped to [−1, 1]; ε̂ recomputed from it only where the clamp acted (elsewhere bit-exact)."""
    x0c = x0.clamp(-1.0, 1.0)
    if torch.equal(x0c, x0):
        return x0, eps
    a = _per_sample(schedule.alphas_cumprod.sqrt(), t, x_t)
    s = _per_sample((1.0 - schedule.alphas_cumprod).sqrt(), t, x_t)
    return x0c, torch.where(x0c != x0, (x_t - a * x0c) / s, eps)


def training_loss(
    model: Model,
    x0: Tensor,
    cond: Tensor,
    schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
    prediction: str = "eps",
    loss_scale: float = 1.0,
    loss_space: str | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    loss: str = "mse",
    weight: Tensor | None = None,
) -> Tensor:
    """Scalar ``loss_scale · MSE`` for one batch; x0: [B, C, H, W] in [−1, 1], cond: [B, Cc, H, W].

    t ~ U{0..T−1} [B] is drawn first, then ε ~ N(0, I) like x0, both from ``generator`` (unless
    given). The MSE is on ε̂ vs ε or on x̂0 vs x0 (``loss_space``; default: "eps" for ε-prediction,
    "x0" otherwise). The official ReDiffuse code uses the ε-MSE with ``loss_scale=128``.

    ``loss="l1_grad"`` (x0 space only) replaces the MSE by ``L1(x̂0, x0) + L1(∇x̂0, ∇x0)`` with
    forward differences along both axes: the MSE barely penalises a soft or misplaced focus
    boundary, which is exactly what the gradient-based fusion metrics (QG, QP) and a viewer notice.

    ``weight`` (``[B, 1, H, W]``, ≥ 0) turns every mean into a weighted mean over the pixels (a
    difference between two pixels gets the larger of their weights), e.g. to stress the pixels near
    focus boundaries, which are few but decide how a fusion looks.
    """
    if loss not in ("mse", "l1_grad"):
        raise ValueError(f"loss must be 'mse' or 'l1_grad', got {loss!r}")
    conv, default_space = _converter(prediction)
    space = loss_space or default_space
    if space not in ("eps", "x0"):
        raise ValueError("loss_space must be 'eps' or 'x0'")
    B = x0.shape[0]
    if t is None:
        t = _randint(schedule.T, B, generator, x0.device)
    if noise is None:
        noise = _randn(x0.shape, generator, x0.device, x0.dtype)
    x_t = q_sample(x0, t, noise, schedule)
    out = model(x_t, schedule.timesteps.to(x0.device)[t.to(x0.device)], cond)
    if prediction == "eps" and space == "eps":
        pred, target = out, noise  # skip the round trip through x̂0: exact, and cheaper
    else:
        x0_hat, eps_hat = predict_x0_eps(out, x_t, t, schedule, prediction, clip=False, cond=cond)
        pred, target = (eps_hat, noise) if space == "eps" else (x0_hat, x0)
    pred = pred.to(target.dtype)
    if weight is not None and (weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[0] != B
                               or weight.shape[2:] != target.shape[2:]):
        raise ValueError(f"weight must be [B, 1, H, W] = [{B}, 1, {target.shape[2]}, {target.shape[3]}], "
                         f"got {list(weight.shape)}")
    if loss == "l1_grad":
        if space != "x0":
            raise ValueError("loss='l1_grad' compares images: use it with an x0-space loss")
        return loss_scale * (_weighted_mean((pred - target).abs(), weight) + image_gradient_l1(pred, target, weight))
    return loss_scale * _weighted_mean((pred - target) ** 2, weight)


def _weighted_mean(x: Tensor, weight: Tensor | None) -> Tensor:
    """Mean of ``x`` [B, C, H, W] with per-pixel ``weight`` [B, 1, H, W] (None: the plain mean)."""
    if weight is None:
        return x.mean()
    w = weight.to(x.dtype).expand_as(x)
    return (x * w).sum() / w.sum().clamp_min(1e-12)


def image_gradient_l1(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean absolute difference of the forward differences of ``pred`` and ``target`` (both axes);
    ``weight`` [B, 1, H, W]: a weighted mean, each difference weighted by the larger of its pixels'."""
    d = pred - target
    dy, dx = (d[..., 1:, :] - d[..., :-1, :]).abs(), (d[..., :, 1:] - d[..., :, :-1]).abs()
    if weight is None:
        return 0.5 * (dy.mean() + dx.mean())
    wy = torch.maximum(weight[..., 1:, :], weight[..., :-1, :])
    wx = torch.maximum(weight[..., :, 1:], weight[..., :, :-1])
    return 0.5 * (_weighted_mean(dy, wy) + _weighted_mean(dx, wx))
