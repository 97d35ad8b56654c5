"""Exercises of notebooks 03 (x̂0 from ε, the DDPM posterior) and 05 (a DDIM step, few-step timesteps):
the references pass, typical wrong answers fail with a message naming the slip (the feedback states:
test_tutorial_feedback.py)."""
import math

import numpy as np
import pytest
import torch

from rediffuse import tutorial_solutions as ts
from rediffuse.diffusion import cosine_schedule, ddim_sampler, posterior_mean_step, sampling_timesteps


@pytest.fixture(autouse=True)
def strict_checks(monkeypatch):
    """These tests name wrong answers by the ExerciseError a strict check raises (graders' mode)."""
    monkeypatch.setattr(ts, "STRICT", True)


def test_references_pass_their_checks():
    assert ts.check_x0_from_eps(ts.x0_from_eps).startswith("correct")
    assert ts.check_posterior_step(ts.posterior_step).startswith("correct")
    assert ts.check_ddim_update(ts.ddim_update).startswith("correct")
    assert ts.check_few_step_timesteps(ts.few_step_timesteps).startswith("correct")


# ------------------------------------------------------------------------- notebook 03: x̂0 from ε

@pytest.mark.parametrize("wrong, message", [
    (lambda x, e, ab: (x - math.sqrt(ab) * e) / math.sqrt(1 - ab), "swapped places"),
    (lambda x, e, ab: (x - (1 - ab) * e) / ab, "square root is missing"),
    (lambda x, e, ab: (x + math.sqrt(1 - ab) * e) / math.sqrt(ab), "sign"),
    (lambda x, e, ab: x - math.sqrt(1 - ab) * e, "forgot to divide"),
    (lambda x, e, ab: ((x - math.sqrt(1 - ab) * e) / math.sqrt(ab)).clamp(-1, 1), "clamp"),
    (lambda x, e, ab: x[0], "shape"),
    (lambda x, e, ab: x - e, "differs from the library"),
])
def test_a_wrong_x0_fails(wrong, message):
    with pytest.raises(ts.ExerciseError, match=message):
        ts.check_x0_from_eps(wrong)


# ------------------------------------------------------------------------- notebook 03: the posterior

def _posterior(c_x0, c_xt, var):
    """A posterior_step built from coefficient formulas f(β, ᾱ_t, ᾱ_{t−1})."""
    def fn(x_t, x0, sch, t):
        b, ab, abp = float(sch.betas[t]), sch.alpha_bar(t), sch.alpha_bar(t - 1)
        return c_x0(b, ab, abp) * x0 + c_xt(b, ab, abp) * x_t, var(b, ab, abp)
    return fn


RIGHT_X0 = lambda b, ab, abp: math.sqrt(abp) * b / (1 - ab)  # noqa: E731
RIGHT_XT = lambda b, ab, abp: math.sqrt(1 - b) * (1 - abp) / (1 - ab)  # noqa: E731
RIGHT_VAR = lambda b, ab, abp: b * (1 - abp) / (1 - ab)  # noqa: E731


@pytest.mark.parametrize("wrong, message", [
    (_posterior(lambda b, ab, abp: math.sqrt(ab) * b / (1 - abp), lambda b, ab, abp: math.sqrt(1 - b) * (1 - ab) / (1 - abp),
                RIGHT_VAR), "swapped"),
    (_posterior(lambda b, ab, abp: abp * b / (1 - ab), RIGHT_XT, RIGHT_VAR), "square root is missing in the x̂0"),
    (_posterior(RIGHT_X0, lambda b, ab, abp: (1 - b) * (1 - abp) / (1 - ab), RIGHT_VAR), "square root is missing in the x_t"),
    (_posterior(RIGHT_XT, RIGHT_X0, RIGHT_VAR), "weights are swapped"),
    (_posterior(RIGHT_X0, lambda b, ab, abp: 0.0, RIGHT_VAR), "x_t term is missing"),
    (_posterior(RIGHT_X0, RIGHT_XT, lambda b, ab, abp: b), "β_t is the variance of the forward step"),
    (_posterior(RIGHT_X0, RIGHT_XT, lambda b, ab, abp: b * (1 - ab) / (1 - abp)), "upside down"),
    (_posterior(RIGHT_X0, RIGHT_XT, lambda b, ab, abp: math.sqrt(b * (1 - abp) / (1 - ab))), "standard deviation"),
    (lambda x_t, x0, sch, t: ts.posterior_step(x_t, x0, sch, t)[0], "two things"),
])
def test_a_wrong_posterior_fails(wrong, message):
    with pytest.raises(ts.ExerciseError, match=message):
        ts.check_posterior_step(wrong)


def test_the_ddim_step_is_not_the_posterior_mean():
    def ddim_instead(x_t, x0, sch, t):
        return ts.ddim_update(x_t, x0, sch, t, t - 1), ts.posterior_step(x_t, x0, sch, t)[1]

    with pytest.raises(ts.ExerciseError, match="DDIM"):
        ts.check_posterior_step(ddim_instead)


# ------------------------------------------------------------------------- notebook 05: a DDIM step

def _ddim(eps_ab, renoise_ab, sqrt=True, tail=lambda sch, tp: sch.alpha_bar(tp)):
    def fn(x_t, x0, sch, t, tp):
        r = math.sqrt if sqrt else (lambda v: v)
        a_e, a_r = eps_ab(sch, t, tp), renoise_ab(sch, t, tp)
        eps = (x_t - r(a_e) * x0) / r(1 - a_e)
        return r(a_r) * x0 + r(1 - a_r) * eps
    return fn


AT = lambda sch, t, tp: sch.alpha_bar(t)  # noqa: E731
APREV = lambda sch, t, tp: sch.alpha_bar(tp)  # noqa: E731


@pytest.mark.parametrize("wrong, message", [
    (_ddim(AT, AT), "returns x_t unchanged"),
    (_ddim(APREV, AT), "swapped"),
    (lambda x_t, x0, sch, t, tp: sch.alpha_bar(tp) * x0 + (1 - sch.alpha_bar(tp))
        * (x_t - math.sqrt(sch.alpha_bar(t)) * x0) / math.sqrt(1 - sch.alpha_bar(t)), "square roots are missing"),
    (_ddim(AT, lambda sch, t, tp: float(sch.alphas_cumprod[tp])), r"alphas_cumprod\[-1\]"),
    (lambda x_t, x0, sch, t, tp: posterior_mean_step(x_t, x0, sch, t, tp), "posterior mean"),
    (lambda x_t, x0, sch, t, tp: x0, "differs from the library"),
])
def test_a_wrong_ddim_step_fails(wrong, message):
    with pytest.raises(ts.ExerciseError, match=message):
        ts.check_ddim_update(wrong)


# ------------------------------------------------------------------------- notebook 05: timesteps

@pytest.mark.parametrize("wrong, message", [
    (lambda T, k: list(range(0, T, T // k))[::-1][:k] if k > 1 else [T - 1], "first timestep"),
    (lambda T, k: sorted(sampling_timesteps(T, k)), "increases"),
    (lambda T, k: [int(v) for v in np.linspace(T, 0, k)], "T itself is not a timestep"),
    (lambda T, k: list(np.linspace(T - 1, 0, k)), "fractions"),
    (lambda T, k: [T - 1 - i * ((T - 1) // k) for i in range(k)], "last timestep"),
    (lambda T, k: sampling_timesteps(T, k)[:-1] if k > 2 else sampling_timesteps(T, k), "instead of"),
    (lambda T, k: [T - 1] + [int(v) for v in np.geomspace(T / 2, 1, k - 1) - 1] if k > 1 else [T - 1], "uneven"),
])
def test_wrong_timesteps_fail(wrong, message):
    with pytest.raises(ts.ExerciseError, match=message):
        ts.check_few_step_timesteps(wrong)


def test_sample_with_the_exercises_equals_the_library_sampler():
    sch = cosine_schedule(50)
    g = torch.Generator().manual_seed(0)
    cond = torch.rand(1, 2, 8, 8, generator=g) * 2 - 1
    x_T = torch.randn(1, 1, 8, 8, generator=g)

    def model(x_t, t, c):
        return torch.tanh(x_t) + c[:, :1]

    ours = ts.sample_with(ts.ddim_update, ts.few_step_timesteps(50, 6), model, cond, x_T, sch)
    lib = ddim_sampler(model, cond, x_T.shape, sch, 6, x_T=x_T, prediction="weights")
    assert torch.allclose(ours, lib, atol=1e-6)
