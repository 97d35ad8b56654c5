"""Noise schedules, the training loss and samplers for conditional diffusion.

This module knows nothing about networks. A *model* is any callable

    model(x_t: [B, C, H, W], t: LongTensor [B], cond: [B, Cc, H, W]) -> Tensor [B, C, H, W]

and its output is read according to a ``prediction`` setting: ``"eps"`` (the noise, as in
ReDiffuse/FusionDiff) or ``"x0"`` (the clean image, as in DRFusion). Further settings (e.g. a
per-pixel weight map over the sources, turned into x0 by another module) are added with
:func:`register_prediction`; :func:`predict_x0_eps` is the only place that interprets model output.

Conventions
-----------
- Timesteps are 0-based indices ``t = 0 .. T-1``; ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``
  with ``abar_t = alphas_cumprod[t]`` (t = 0 is already slightly noisy, as in improved-DDPM).
  ``t_prev = -1`` denotes the clean image, with ``abar_{-1} = 1``.
- The model receives ``schedule.timesteps[t]`` as a LongTensor [B] on the device of x_t. For the
  schedules built here that is ``t`` itself; a schedule made by :meth:`NoiseSchedule.respace` maps its
  indices back to the timesteps of the schedule the model was trained with.
- Schedule arithmetic is float64; coefficients are cast to the sample's dtype where they are used.
- All randomness comes from the ``generator`` passed in (drawn on the generator's device and moved),
  so training draws and samples are reproducible.
- ``clip`` (every sampler, default ``True``): x̂0 is clamped to [−1, 1] at each step, as the official
  ReDiffuse and FusionDiff code does; the paper's Eq. 6 is written without the clamp (``clip=False``).
  Where the clamp changes x̂0, ε̂ is recomputed so that (x̂0, ε̂) still reproduce x_t.
- ``on_step`` (every sampler): called with a :class:`SamplerStep` at each visited timestep, e.g. a
  :class:`Trajectory` that keeps the states for a figure.


The package's parts: ``schedules`` (β, ᾱ, respacing), ``process`` (the forward process, how output is
read, the loss) and ``samplers`` (reverse steps, samplers, their timesteps, DDNM); every public name is
importable from ``rediffuse.diffusion`` itself.
"""
from __future__ import annotations

from .process import (PREDICTIONS, image_gradient_l1, predict_x0_eps, q_sample, register_prediction, training_loss,
                      weight_map)
from .samplers import (SAMPLERS, SamplerStep, Trajectory, check_timesteps, ddim_coefficients,
                       ddim_sampler, ddim_step, ddnm_lambda, get_sampler, make_ddnm_correction, posterior_coefficients,
                       posterior_mean_sampler, posterior_mean_step, sampling_timesteps, x0_prediction_error,
                       x0_regression_sampler)
from .schedules import SCHEDULES, NoiseSchedule, cosine_schedule, get_schedule, linear_schedule

__all__ = [
    "NoiseSchedule", "cosine_schedule", "linear_schedule", "get_schedule", "SCHEDULES", "q_sample", "training_loss",
    "predict_x0_eps", "register_prediction", "PREDICTIONS", "weight_map", "image_gradient_l1", "sampling_timesteps",
    "check_timesteps", "posterior_coefficients", "ddim_coefficients", "posterior_mean_step", "ddim_step",
    "posterior_mean_sampler", "ddim_sampler", "x0_regression_sampler", "SAMPLERS", "get_sampler", "ddnm_lambda",
    "make_ddnm_correction", "SamplerStep", "Trajectory", "x0_prediction_error",
]
