"""The x̂0 clamp is an explicit sampler option (default on, as in the official code; off = the paper's
Eq. 6 as printed), the pipeline passes it through, and the step hook sees what the clamp did."""
import pytest
import torch

from rediffuse.data import generate_synthetic_folder
from rediffuse.diffusion import (Trajectory, cosine_schedule, ddim_sampler, get_sampler, posterior_mean_sampler,
                                 x0_prediction_error)
from rediffuse.fewstep import clamp_effect, clamp_table
from rediffuse.fuse import FusionModel, checkpoint_available


def overshooting_eps(x_t, t, cond):
    """An ε-model whose x̂0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ lands far outside [−1, 1] at noisy steps."""
    return -0.5 * x_t + 0.1 * cond[:, :1]


def _setup(seed=0):
    sch = cosine_schedule(50)
    g = torch.Generator().manual_seed(seed)
    cond = torch.rand(1, 2, 8, 8, generator=g) * 2 - 1
    x_T = torch.randn(1, 1, 8, 8, generator=g)
    return sch, cond, x_T


@pytest.mark.parametrize("sampler", ["posterior_mean", "ddim"])
def test_clip_off_follows_eq6_and_changes_the_result(sampler):
    sch, cond, x_T = _setup()
    runs = {}
    for clip in (True, False):
        traj = Trajectory()
        out = get_sampler(sampler)(overshooting_eps, cond, x_T.shape, sch, 10, x_T=x_T, clip=clip, on_step=traj)
        runs[clip] = (out, traj)
    (on, t_on), (off, t_off) = runs[True], runs[False]
    assert t_on.timesteps == t_off.timesteps and len(t_on.timesteps) == 10
    # with the clamp every x̂0 the update used lies in [-1, 1]; the network's own x̂0 did not
    assert all(float(x.abs().max()) <= 1 for x in t_on.x0_hat)
    assert max(t_on.out_of_range) > 0.5
    # without it the update uses the unclamped x̂0 (Eq. 6 as printed) and the sample leaves the range
    assert float(off.abs().max()) > 1
    assert not torch.allclose(on, off)


def test_clip_is_on_by_default():
    sch, cond, x_T = _setup()
    for sampler in (posterior_mean_sampler, ddim_sampler):
        default = sampler(overshooting_eps, cond, x_T.shape, sch, 5, x_T=x_T)
        assert torch.equal(default, sampler(overshooting_eps, cond, x_T.shape, sch, 5, x_T=x_T, clip=True))


def test_clip_changes_nothing_when_x0_stays_in_range():
    """A weight-map x̂0 is a convex combination of the sources: the clamp never acts on it."""
    sch, cond, x_T = _setup()

    def weights_model(x_t, t, cond):
        return 3.0 * torch.tanh(x_t) + cond[:, 1:]

    outs = [posterior_mean_sampler(weights_model, cond, x_T.shape, sch, 7, x_T=x_T, clip=c, prediction="weights")
            for c in (True, False)]
    assert torch.equal(*outs)


def test_trajectory_keeps_the_requested_steps():
    sch, cond, x_T = _setup()
    traj = Trajectory(keep=3, steps=9)
    out = posterior_mean_sampler(overshooting_eps, cond, x_T.shape, sch, 9, x_T=x_T, on_step=traj)
    assert len(traj.timesteps) == 9 and len(traj.kept) == 3
    assert traj.kept[0] == traj.timesteps[0] and traj.kept[-1] == traj.timesteps[-1] == 0
    assert torch.equal(traj.final, out)
    assert torch.equal(traj.x_t[0], x_T)
    with pytest.raises(ValueError):
        Trajectory(keep=3)


def test_x0_error_of_an_oracle_is_zero_and_a_blind_model_degrades_with_t():
    sch = cosine_schedule(50)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64) * 1.8 - 0.9
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)

    def oracle(x_t, t, cond):
        ab = sch.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    assert max(x0_prediction_error(oracle, x0, x0, sch, [0, 10, 49], noise)) < 1e-20
    blind = x0_prediction_error(lambda x_t, t, c: torch.zeros_like(x_t), x0, x0, sch, [0, 25, 45], noise, clip=False)
    assert blind[0] < blind[1] < blind[2]


@pytest.fixture(scope="module")
def paper_model():
    if not checkpoint_available("paper"):
        pytest.skip("the shipped ε model is not there")
    return FusionModel("paper")


def test_settings_carry_the_clip_to_the_pipeline(paper_model):
    fm = paper_model
    assert fm.settings().clip is True
    g = torch.Generator().manual_seed(0)
    cond = torch.rand(1, 2, 24, 24, generator=g) * 2 - 1
    outs = {}
    for clip in (True, False):
        st = fm.settings("posterior_mean", 3, tile=0, seed=0, clip=clip)
        assert st.clip is clip
        outs[clip] = fm.sample(cond, st)
        x_T = torch.randn(1, 1, 24, 24, generator=torch.Generator().manual_seed(0))
        direct = posterior_mean_sampler(fm.model, cond, (1, 1, 24, 24), fm.schedule, 3, x_T=x_T, clip=clip)
        assert torch.allclose(outs[clip], direct, rtol=1e-5, atol=1e-5)  # the study's direct path = the pipeline
    assert not torch.allclose(outs[True], outs[False])


def test_clamp_effect_table(paper_model, tmp_path):
    folder = generate_synthetic_folder(tmp_path / "pairs", n=1, seed=3, size=32)
    runs = clamp_effect(paper_model, folder, [2], crop=24)
    assert [(r.steps, r.clip) for r in runs] == [(2, True), (2, False)]
    table = clamp_table(runs)
    on, off = table
    assert -1 <= on["output_min"] and on["output_max"] <= 1
    assert on["max_diff_grey"] == off["max_diff_grey"] > 0
    assert 0 < on["x0_out_of_range"] <= 1 and runs[0].timesteps == [1999, 0]
