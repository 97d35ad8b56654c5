"""Schedules, forward process, loss and samplers (all small, CPU, float64 where exactness is checked)."""
import math

import pytest
import torch

from rediffuse import diffusion as D
from rediffuse.diffusion import (
    cosine_schedule,
    ddim_coefficients,
    ddim_sampler,
    ddim_step,
    ddnm_lambda,
    get_sampler,
    get_schedule,
    linear_schedule,
    make_ddnm_correction,
    posterior_coefficients,
    posterior_mean_sampler,
    posterior_mean_step,
    predict_x0_eps,
    q_sample,
    sampling_timesteps,
    training_loss,
    x0_regression_sampler,
)


def _x0(shape=(2, 1, 8, 8), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=dtype) * 1.8 - 0.9


def oracle_eps(x0, schedule):
    """A model returning the true noise of x_t for a known x0."""

    def model(x_t, t, cond):
        ab = schedule.alphas_cumprod[t].to(x_t.dtype).view(-1, 1, 1, 1)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    return model


def oracle_x0(x0):
    return lambda x_t, t, cond: x0.expand_as(x_t).clone()


def toy_model(x_t, t, cond):
    """A fixed, nonlinear stand-in network (depends on x_t, t and cond)."""
    return 0.5 * torch.tanh(x_t + cond[:, :1]) + 1e-4 * t.to(x_t.dtype).view(-1, 1, 1, 1)


# -------------------------------------------------------------------------------------------------
# schedules


@pytest.mark.parametrize("T", [2000, 50])
def test_cosine_closed_form_and_clip(T):
    s = 0.008
    sch = cosine_schedule(T)
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    assert sch.betas.dtype == torch.float64 and sch.alphas_cumprod.dtype == torch.float64
    assert float(sch.betas.max()) <= 0.999 and float(sch.betas.min()) > 0
    clipped = (sch.betas >= 0.999).nonzero()
    first = int(clipped[0]) if len(clipped) else T
    assert first >= T - 2  # only the very last β's hit the clip
    expect = torch.tensor([f((t + 1) / T) / f(0) for t in range(first)], dtype=torch.float64)
    torch.testing.assert_close(sch.alphas_cumprod[:first], expect, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(sch.alphas, 1 - sch.betas)


def test_linear_and_get_schedule():
    sch = linear_schedule(100)
    assert sch.T == 100 and float(sch.betas[0]) == pytest.approx(1e-4) and float(sch.betas[-1]) == pytest.approx(0.02)
    assert get_schedule("cosine", 30).T == 30
    with pytest.raises(ValueError, match="cosine"):
        get_schedule("sigmoid", 10)


def test_respace_keeps_marginals():
    sch = cosine_schedule(100)
    sub = [0, 10, 50, 99]
    r = sch.respace(sub)
    torch.testing.assert_close(r.alphas_cumprod, sch.alphas_cumprod[sub])
    assert r.timesteps.tolist() == sub


def test_to_device_keeps_float64():
    sch = cosine_schedule(10).to("cpu")
    assert sch.betas.dtype == torch.float64 and sch.alpha_bar(-1) == 1.0


# -------------------------------------------------------------------------------------------------
# forward process, conversion, loss


def test_q_sample_statistics():
    sch = cosine_schedule(1000)
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((4, 1, 128, 128), 0.5, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 300, 700, 999])
    xt = q_sample(x0, t, noise, sch)
    for i, ti in enumerate(t.tolist()):
        ab = sch.alpha_bar(ti)
        assert float(xt[i].mean()) == pytest.approx(0.5 * math.sqrt(ab), abs=0.02)
        assert float(xt[i].std()) == pytest.approx(math.sqrt(1 - ab), rel=0.03)
    # exact formula per sample, and int t broadcasts
    torch.testing.assert_close(q_sample(x0, 300, noise, sch)[1], xt[1])


def test_predict_x0_eps_roundtrip_and_clip():
    sch = cosine_schedule(100)
    x0 = _x0()
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.tensor([5, 80])
    xt = q_sample(x0, t, eps, sch)
    a, e = predict_x0_eps(eps, xt, t, sch, "eps", clip=False)
    torch.testing.assert_close(a, x0)
    assert torch.equal(e, eps)
    a, e = predict_x0_eps(x0, xt, t, sch, "x0", clip=False)
    torch.testing.assert_close(e, eps)
    # clipping: x̂0 in [−1, 1] and the pair stays consistent with x_t
    big = 3 * x0
    a, e = predict_x0_eps(big, xt, t, sch, "x0", clip=True)
    assert float(a.abs().max()) <= 1
    ab = sch.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(ab.sqrt() * a + (1 - ab).sqrt() * e, xt)
    with pytest.raises(ValueError, match="eps"):
        predict_x0_eps(x0, xt, t, sch, "velocity")


def test_register_prediction_extends_conversion(monkeypatch):
    """A 'weights'-style parameterisation builds x̂0 from the sources in cond."""

    def from_weights(out, x_t, a, s, cond):
        x0 = torch.sigmoid(out) * cond[:, :1] + (1 - torch.sigmoid(out)) * cond[:, 1:2]
        return x0, (x_t - a * x0) / s

    monkeypatch.setitem(D.PREDICTIONS, "weights", (from_weights, "x0"))
    sch = cosine_schedule(50)
    cond = torch.cat([torch.full((1, 1, 4, 4), 0.8), torch.full((1, 1, 4, 4), -0.4)], 1).double()
    xt = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x0, _ = predict_x0_eps(torch.zeros_like(xt), xt, 10, sch, "weights", cond=cond)
    torch.testing.assert_close(x0, torch.full_like(xt, 0.2))
    loss = training_loss(lambda x, t, c: torch.zeros_like(x), cond[:, :1], cond, sch,
                         torch.Generator().manual_seed(0), prediction="weights")
    assert float(loss) == pytest.approx(0.6**2)


def test_training_loss_reproducible_and_exact():
    sch = cosine_schedule(200)
    x0 = _x0((3, 1, 8, 8), dtype=torch.float32)
    cond = torch.cat([x0, -x0], 1)
    l1 = training_loss(toy_model, x0, cond, sch, torch.Generator().manual_seed(7), loss_scale=128.0)
    l2 = training_loss(toy_model, x0, cond, sch, torch.Generator().manual_seed(7), loss_scale=128.0)
    l3 = training_loss(toy_model, x0, cond, sch, torch.Generator().manual_seed(8), loss_scale=128.0)
    assert torch.equal(l1, l2) and not torch.equal(l1, l3)
    # documented draw order: t first, then the noise
    g = torch.Generator().manual_seed(7)
    t = torch.randint(0, sch.T, (3,), generator=g)
    n = torch.randn(x0.shape, generator=g)
    manual = 128.0 * ((toy_model(q_sample(x0, t, n, sch), t, cond) - n) ** 2).mean()
    torch.testing.assert_close(l1, manual)
    # x0-prediction loss is on x̂0
    lx = training_loss(oracle_x0(x0), x0, cond, sch, torch.Generator().manual_seed(7), prediction="x0")
    assert float(lx) == 0.0


def test_training_loss_backprops():
    sch = cosine_schedule(20)
    w = torch.nn.Parameter(torch.tensor(0.3))
    model = lambda x, t, c: w * x
    x0 = _x0(dtype=torch.float32)
    loss = training_loss(model, x0, x0, sch, torch.Generator().manual_seed(0))
    loss.backward()
    assert w.grad is not None and torch.isfinite(w.grad)


# -------------------------------------------------------------------------------------------------
# reverse steps


@pytest.mark.parametrize("make", [lambda: cosine_schedule(300), lambda: linear_schedule(300)])
def test_ddim_eta1_all_steps_is_ddpm_posterior(make):
    sch = make()
    assert sampling_timesteps(sch.T, sch.T) == list(range(sch.T - 1, -1, -1))
    g = torch.Generator().manual_seed(3)
    for t in range(1, sch.T):
        ab, ab_p = sch.alpha_bar(t), sch.alpha_bar(t - 1)
        beta = float(sch.betas[t])
        # DDPM coefficients, written from β_t directly
        mean_x0 = math.sqrt(ab_p) * beta / (1 - ab)
        mean_xt = math.sqrt(1 - beta) * (1 - ab_p) / (1 - ab)
        var = beta * (1 - ab_p) / (1 - ab)
        c_x0, c_eps, sigma = ddim_coefficients(sch, t, t - 1, eta=1.0)
        # ε̂ = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t) turns the DDIM update into the (x̂0, x_t) form
        assert c_eps / math.sqrt(1 - ab) == pytest.approx(mean_xt, rel=1e-9, abs=1e-15)
        assert c_x0 - c_eps * math.sqrt(ab) / math.sqrt(1 - ab) == pytest.approx(mean_x0, rel=1e-9, abs=1e-15)
        assert sigma**2 == pytest.approx(var, rel=1e-9, abs=1e-18)
        assert posterior_coefficients(sch, t) == pytest.approx((mean_x0, mean_xt, var), rel=1e-12)
    # and the step functions themselves agree
    x0 = _x0()
    xt = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    for t in (1, 150, sch.T - 2):
        _, eps = predict_x0_eps(x0, xt, t, sch, "x0", clip=False)
        ddpm = posterior_mean_step(xt, x0, sch, t, t - 1) + math.sqrt(posterior_coefficients(sch, t)[2]) * z
        torch.testing.assert_close(ddim_step(x0, eps, sch, t, t - 1, eta=1.0, noise=z), ddpm)


def test_sampling_timesteps():
    assert sampling_timesteps(2000, 1) == [1999]
    ts = sampling_timesteps(2000, 7)
    assert ts[0] == 1999 and ts[-1] == 0 and len(set(ts)) == 7 and ts == sorted(ts, reverse=True)
    with pytest.raises(ValueError):
        sampling_timesteps(10, 11)


# -------------------------------------------------------------------------------------------------
# samplers


@pytest.mark.parametrize("steps", [1, 10, 100])
def test_ddim_eta0_with_oracle_eps_recovers_x0(steps):
    sch = cosine_schedule(100)
    x0 = _x0()
    cond = torch.zeros_like(x0)
    out = ddim_sampler(oracle_eps(x0, sch), cond, x0.shape, sch, steps=steps,
                       generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-9)


@pytest.mark.parametrize("steps", [None, 7])
def test_posterior_mean_sampler_with_oracle(steps):
    sch = cosine_schedule(100)
    x0 = _x0()
    cond = torch.zeros_like(x0)
    g = lambda: torch.Generator().manual_seed(0)
    out = posterior_mean_sampler(oracle_x0(x0), cond, x0.shape, sch, steps=steps, generator=g(), prediction="x0")
    assert torch.equal(out, x0)
    out = posterior_mean_sampler(oracle_eps(x0, sch), cond, x0.shape, sch, steps=steps, generator=g())
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-9)


def test_x0_regression_sampler_with_oracle():
    sch = cosine_schedule(1000)
    x0 = _x0()
    out = x0_regression_sampler(oracle_x0(x0), torch.zeros_like(x0), x0.shape, sch,
                                generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, x0)


@pytest.mark.parametrize(
    "name,kw",
    [("posterior_mean", dict(steps=20)), ("ddim", dict(steps=5, eta=0.7)), ("x0_regression", {})],
)
def test_samplers_deterministic_given_generator(name, kw):
    sch = cosine_schedule(100)
    cond = _x0((2, 2, 8, 8), dtype=torch.float32)
    shape = (2, 1, 8, 8)
    sample = get_sampler(name)
    a = sample(toy_model, cond, shape, sch, generator=torch.Generator().manual_seed(11), **kw)
    b = sample(toy_model, cond, shape, sch, generator=torch.Generator().manual_seed(11), **kw)
    c = sample(toy_model, cond, shape, sch, generator=torch.Generator().manual_seed(12), **kw)
    assert a.shape == shape and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_ddim_eta_noise_comes_from_generator():
    sch = cosine_schedule(100)
    cond = torch.zeros(1, 1, 8, 8)
    xT = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(steps=5, eta=1.0, x_T=xT)
    a = ddim_sampler(toy_model, cond, xT.shape, sch, generator=torch.Generator().manual_seed(1), **kw)
    b = ddim_sampler(toy_model, cond, xT.shape, sch, generator=torch.Generator().manual_seed(2), **kw)
    c = ddim_sampler(toy_model, cond, xT.shape, sch, generator=torch.Generator().manual_seed(2), **kw)
    assert not torch.equal(a, b) and torch.equal(b, c)


def test_correct_hook_and_model_timesteps():
    sch = cosine_schedule(100)
    seen_model_t, seen_hook_t = [], []
    target = torch.full((1, 1, 4, 4), 0.25, dtype=torch.float64)

    def model(x, t, c):
        assert t.dtype == torch.long and t.shape == (1,)
        seen_model_t.append(int(t[0]))
        return torch.zeros_like(x)

    def correct(x0_hat, t):
        seen_hook_t.append(t)
        return target

    out = ddim_sampler(model, torch.zeros_like(target), target.shape, sch, steps=4,
                       generator=torch.Generator().manual_seed(0), correct=correct)
    assert seen_model_t == seen_hook_t == sampling_timesteps(100, 4)
    assert torch.equal(out, target)
    # a respaced schedule hands the model the original timesteps
    seen_model_t.clear()
    r = sch.respace([0, 33, 66, 99])
    ddim_sampler(model, torch.zeros_like(target), target.shape, r, steps=4, generator=torch.Generator())
    assert seen_model_t == [99, 66, 33, 0]


def test_get_sampler_error_lists_names():
    assert get_sampler("ddim") is ddim_sampler
    with pytest.raises(ValueError) as e:
        get_sampler("euler")
    for n in ("posterior_mean", "ddim", "x0_regression"):
        assert n in str(e.value)


def test_ddnm_lambda():
    sch = cosine_schedule(1000)
    assert ddnm_lambda(sch, 500, 499, 0.0) == 1.0
    assert ddnm_lambda(sch, 500, 499, 1e-6) == 1.0  # σ_t ≥ a_t σ_y
    for t, tp, sy in [(10, 9, 0.5), (500, 250, 0.2), (5, -1, 0.1)]:
        ab, ab_p = sch.alpha_bar(t), sch.alpha_bar(tp)
        beta = 1 - ab / ab_p
        a_t = math.sqrt(ab_p) * beta / (1 - ab)
        sig = math.sqrt(beta * (1 - ab_p) / (1 - ab))
        lam = 1.0 if sig >= a_t * sy else sig / (a_t * sy)
        assert ddnm_lambda(sch, t, tp, sy) == pytest.approx(lam, rel=1e-12, abs=1e-15)
    assert ddnm_lambda(sch, 5, -1, 0.1) == 0.0


def test_make_ddnm_correction_passes_lambda():
    sch = cosine_schedule(100)
    ts = sampling_timesteps(100, 3)
    got = []
    hook = make_ddnm_correction(lambda x, lam: got.append(lam) or x, sch, ts, sigma_y=0.05)
    for t in ts:
        hook(torch.zeros(1), t)
    prev = ts[1:] + [-1]
    assert got == [ddnm_lambda(sch, t, p, 0.05) for t, p in zip(ts, prev)]
