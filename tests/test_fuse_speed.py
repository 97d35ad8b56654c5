"""Speed modes of the fusion pipeline: coarse earlier steps, a reduced last step with guided upsampling,
a working size for large images; settings checked, quarter turns kept, stacks still order-independent."""
import numpy as np
import pytest
import torch

from rediffuse import cli
from rediffuse.cli import fuse as fuse_cli
from rediffuse.data import image_to_tensor
from rediffuse.fuse import (DEFAULT_CHECKPOINT, DEFAULT_SPEED, MIN_WORKING_SIDE, SPEEDS, FusionModel, fuse,
                            guided_upsample)
from rediffuse.groups import rotate_image
from rediffuse.metrics import psnr
from rediffuse.train import save_checkpoint
from rediffuse.unet import ReDiffuseUNet
from stacks import misaligned_stack

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def eps_model(tmp_path_factory):
    torch.manual_seed(0)
    net = ReDiffuseUNet(base=8, mults=(1,), groups=2)
    path = tmp_path_factory.mktemp("eps") / "eps.pt"
    save_checkpoint(path, dict(model=net.state_dict(), model_config=net.config,
                               config=dict(prediction="eps", T=20, schedule="cosine")))
    return FusionModel(path)


def _cond(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
    return torch.cat([image_to_tensor(a, y_only=True), image_to_tensor(b, y_only=True)])[None]


# ----------------------------------------------------------------------------- settings


def test_speed_settings_are_resolved_and_checked(tiny, eps_model):
    assert tiny.default_speed() == DEFAULT_SPEED and eps_model.default_speed() == "quality"
    for name, fields in SPEEDS.items():
        st = tiny.settings(speed=name)
        assert (st.scale, st.coarse, st.working_size) == (fields["scale"], fields["coarse"], fields["working_size"])
    st = tiny.settings(speed="fast", scale=0.75, working_size=0)
    assert (st.scale, st.coarse, st.working_size) == (0.75, SPEEDS["fast"]["coarse"], 0.0)
    assert tiny.settings() == tiny.settings(speed=DEFAULT_SPEED)
    bad = [dict(speed="turbo"), dict(scale=0), dict(scale=1.5), dict(scale=float("nan")), dict(coarse=-0.5),
           dict(scale=True), dict(working_size=-1), dict(scale="half")]
    for kw in bad:
        with pytest.raises(ValueError) as e:
            tiny.settings(**kw)
        assert "\n" not in str(e.value)
    # ε models predict an image, not weights: full resolution only, and that is their default
    assert eps_model.settings().scale == 1.0
    for kw in (dict(speed="fast"), dict(speed="balanced"), dict(scale=0.5)):
        with pytest.raises(ValueError, match="full resolution only"):
            eps_model.settings(**kw)
    with pytest.raises(ValueError, match="timesteps must decrease"):
        tiny.sample(torch.zeros(1, 2, 40, 40), timesteps=[3, 7])


def test_step_sizes_follow_the_speed_and_the_working_size(tiny):
    q, b, f = (tiny.settings(speed=s) for s in ("quality", "balanced", "fast"))
    assert tiny.step_sizes(520, 520, q) == [(520, 520)] * 3
    assert tiny.step_sizes(520, 520, b) == [(130, 130)] * 2 + [(520, 520)]
    assert tiny.step_sizes(520, 520, f) == [(130, 130)] * 2 + [(260, 260)]
    # a quarter-turned image gets the quarter-turned sizes
    assert tiny.step_sizes(520, 778, f) == [(h, w) for w, h in tiny.step_sizes(778, 520, f)]
    # 24 MP: the last step works on at most working_size megapixels
    (h, w), = set(tiny.step_sizes(4000, 6000, b)[-1:])
    assert h * w <= SPEEDS["balanced"]["working_size"] * 1e6 and abs(w / h - 1.5) < 0.01
    # never below MIN_WORKING_SIDE on the shorter side, never above the image
    assert min(tiny.step_sizes(100, 300, f)[0]) == MIN_WORKING_SIDE
    assert tiny.step_sizes(40, 36, f) == [(40, 36)] * 3
    assert tiny.evaluations(520, 520, b) == 3
    assert tiny.settings(steps=1, speed="balanced").steps == 1
    assert tiny.step_sizes(520, 520, tiny.settings(steps=1, speed="balanced")) == [(520, 520)]


# ----------------------------------------------------------------------------- guided upsampling


def test_guided_upsample_follows_the_guide_and_commutes_with_quarter_turns():
    rng = np.random.default_rng(0)
    guide = torch.from_numpy(rng.uniform(-1, 1, (1, 1, 60, 84))).float()
    small = torch.nn.functional.avg_pool2d(guide, 3)
    # a logit linear in the source is reproduced exactly at full size (the filter's local model is exact)
    up = guided_upsample(3 * small + 1, small, guide, eps=1e-9)
    assert torch.allclose(up, 3 * guide + 1, atol=1e-3)
    # a step edge of the guide: the upsampled weight map steps where the full-size guide steps
    edge = torch.zeros(1, 1, 64, 64)
    edge[..., 33:] = 1.0  # the edge at column 33, between the small grid's pixels (16 px of 4)
    logit_small = torch.where(torch.nn.functional.avg_pool2d(edge, 4) > 0.5, 6.0, -6.0)
    sharp = guided_upsample(logit_small, torch.nn.functional.avg_pool2d(edge, 4), edge, eps=1e-4)
    plain = torch.nn.functional.interpolate(logit_small, size=(64, 64), mode="bilinear", align_corners=False)
    err = lambda x: float(((x > 0).float() - edge).abs().mean())  # noqa: E731
    assert err(sharp) < err(plain) and err(sharp) < 0.01
    # quarter turns
    logit = torch.from_numpy(rng.normal(0, 3, (1, 1, 20, 28))).float()
    for k in (1, 2, 3):
        a = guided_upsample(rotate_image(logit, k), rotate_image(small, k), rotate_image(guide, k))
        assert torch.allclose(a, rotate_image(guided_upsample(logit, small, guide), k), atol=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        guided_upsample(logit, small[..., :10, :], guide)


def test_the_reduced_resolution_path_commutes_with_quarter_turns(tiny):
    # the starting noise turned with the sources: every remaining difference would come from the path
    frames, _, _, _ = misaligned_stack(2, (136, 200), seed=3, shift=0)
    cond = _cond(*frames)
    for speed in ("balanced", "fast"):
        st = tiny.settings(speed=speed)
        sizes = tiny.step_sizes(136, 200, st)
        assert sizes[-1] != (136, 200) or sizes[0] != (136, 200)
        x_T = torch.randn((1, 1, *sizes[0]), generator=torch.Generator().manual_seed(1))
        _, base = tiny.sample_with_logits(cond, st, x_T=x_T)
        for k in (1, 2, 3):
            _, turned = tiny.sample_with_logits(rotate_image(cond, k), st, x_T=rotate_image(x_T, k))
            assert torch.allclose(turned, rotate_image(base, k), atol=1e-4), (speed, k)


# ----------------------------------------------------------------------------- the trained model


def test_balanced_matches_quality_and_fast_stays_close(shipped):
    _, aligned, gt, _ = misaligned_stack(2, (192, 256), seed=0, shift=0)
    cond = _cond(*aligned)
    w = {s: torch.sigmoid(shipped.sample_with_logits(cond, shipped.settings(speed=s))[1])
         for s in ("quality", "balanced", "fast")}
    # measured (default at step 20,000): mean |Δw| 0.0005 (balanced) and 0.04 (fast); the same winner at
    # 96 % of pixels for fast (step 7,200: 0.0002, 0.06, 93 %)
    assert float((w["balanced"] - w["quality"]).abs().mean()) < 0.002
    assert float((w["fast"] - w["quality"]).abs().mean()) < 0.1
    assert float(((w["fast"] > 0.5) == (w["quality"] > 0.5)).float().mean()) > 0.9
    fused = {s: fuse(aligned, shipped, speed=s) for s in ("quality", "balanced", "fast")}
    # measured: 45.09, 45.02 and 41.89 dB against the all-in-focus truth (step 7,200: 45.18, 45.19, 41.66);
    # balanced and quality are 74.5 dB apart, and on Lytro within 0.0001 on every metric
    assert psnr(fused["balanced"], gt) >= psnr(fused["quality"], gt) - 0.1
    assert psnr(fused["fast"], gt) >= psnr(fused["quality"], gt) - 5
    assert psnr(fused["balanced"], fused["quality"]) > 45


def test_quality_is_the_full_resolution_sampler(tiny):
    frames, _, _, _ = misaligned_stack(2, (96, 128), seed=2, shift=0)
    cond = _cond(*frames)
    st = tiny.settings(speed="quality")
    out, logit = tiny.sample_with_logits(cond, st)
    assert torch.equal(out, tiny.sample(cond, st))
    assert logit.shape == (1, 1, 96, 128)


# ----------------------------------------------------------------------------- stacks and the command


def test_stacks_stay_order_independent_at_every_speed(tiny, tmp_path):
    _, frames, _, _ = misaligned_stack(3, (144, 160), seed=1, shift=0)
    for speed in ("balanced", "fast"):
        ref = fuse(frames, tiny, speed=speed, depth_map=tmp_path / f"depth-{speed}.png")
        for order in ([2, 0, 1], [1, 2, 0]):
            out = fuse([frames[i] for i in order], tiny, speed=speed)
            assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1, (speed, order)
        assert (tmp_path / f"depth-{speed}.png").is_file()


def _write_pair(folder) -> list:
    """An aligned colour pair (128×96) written as PNG into ``folder``; returns the two paths."""
    from PIL import Image

    _, frames, _, _ = misaligned_stack(2, (96, 128), seed=0, shift=0)
    paths = [folder / f"f{i}.png" for i in range(len(frames))]
    for f, path in zip(frames, paths):
        Image.fromarray(f).save(path)
    return paths


def test_command_line_speed_options(tiny_checkpoint, eps_model, tmp_path, capsys):
    assert fuse_cli.SPEED_CHOICES == tuple(SPEEDS) and fuse_cli.DEFAULT_SPEED_NAME == DEFAULT_SPEED
    from rediffuse.fuse import STACK_MEGAPIXELS
    assert fuse_cli.STACK_MEGAPIXELS == STACK_MEGAPIXELS
    paths = _write_pair(tmp_path)
    base = ["fuse", *map(str, paths), "--checkpoint", str(tiny_checkpoint), "--align", "none"]
    assert cli.main(base + ["-o", str(tmp_path / "fast.png"), "--speed", "fast"]) == 0
    assert "3 steps (3× 85×64)" in capsys.readouterr().err  # 128×96 at half: the shorter side kept at 64
    assert cli.main(base + ["-o", str(tmp_path / "b.png"), "--speed", "balanced"]) == 0
    assert "3 steps (2× 85×64, 1× 128×96)" in capsys.readouterr().err
    for bad in (["--scale", "0"], ["--scale", "2"], ["--working-size", "-1"], ["--speed", "turbo"]):
        with pytest.raises(SystemExit) as e:
            cli.main(base + ["-o", str(tmp_path / "x.png"), *bad])
        assert e.value.code == 2
        capsys.readouterr()
    code = cli.main(["fuse", *map(str, paths), "--checkpoint", str(eps_model.path), "--align", "none",
                     "-o", str(tmp_path / "e.png"), "--speed", "fast"])
    err = capsys.readouterr().err
    # a speed this model cannot run is a bad option value: one line, exit 2 (as every bad option value)
    assert code == 2 and err.count("\n") == 1 and "full resolution only" in err


# ----------------------------------------------------------------------------- bfloat16 network arithmetic


@pytest.mark.filterwarnings("ignore:precision bf16:RuntimeWarning")  # slow, not wrong, on a CPU without bfloat16
def test_bf16_fuses_like_fp32_and_is_refused_when_unknown(shipped):
    _, aligned, gt, _ = misaligned_stack(2, (192, 256), seed=0, shift=0)
    low = FusionModel(DEFAULT_CHECKPOINT, precision="bf16")
    cond = _cond(*aligned)
    w32 = torch.sigmoid(shipped.sample_with_logits(cond, shipped.settings())[1])
    w16 = torch.sigmoid(low.sample_with_logits(cond, low.settings())[1])
    assert w16.dtype == torch.float32  # the sampler and the weights stay in float32
    diff = float((w16 - w32).abs().mean())
    assert 0 < diff < 0.01, diff  # bfloat16 rounding moves the weights, a little
    a, b = fuse(aligned, shipped), fuse(aligned, low)
    assert psnr(b, gt) >= psnr(a, gt) - 0.1
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.2
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        FusionModel(DEFAULT_CHECKPOINT, precision="fp8")


def test_bf16_warns_on_a_cpu_without_bfloat16_arithmetic(tiny_checkpoint, monkeypatch, recwarn):
    import rediffuse.fusion_model as fm

    monkeypatch.setattr(fm, "cpu_has_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="no bfloat16 arithmetic .* use precision=fp32"):
        fm.SamplingModel(tiny_checkpoint, precision="bf16")
    fm.SamplingModel(tiny_checkpoint, precision="fp32")  # fp32 never warns
    monkeypatch.setattr(fm, "cpu_has_bf16", lambda: True)
    fm.SamplingModel(tiny_checkpoint, precision="bf16")
    assert not [w for w in recwarn if "bfloat16" in str(w.message)]


def test_command_line_precision(tiny_checkpoint, tmp_path, capsys):
    from rediffuse.fuse import PRECISIONS

    assert fuse_cli.PRECISION_CHOICES == PRECISIONS
    paths = _write_pair(tmp_path)
    base = ["fuse", *map(str, paths), "--checkpoint", str(tiny_checkpoint), "--align", "none"]
    assert cli.main(base + ["-o", str(tmp_path / "bf16.png"), "--precision", "bf16"]) == 0
    assert ", cpu bf16, " in capsys.readouterr().err
    assert (tmp_path / "bf16.png").is_file()
    with pytest.raises(SystemExit) as e:
        cli.main(base + ["-o", str(tmp_path / "x.png"), "--precision", "fp16"])
    assert e.value.code == 2


def test_a_stack_shares_its_network_megapixels_and_pairs_keep_theirs():
    from rediffuse.fuse import STACK_MEGAPIXELS, FusionModel, checkpoint_available, stack_settings

    if not checkpoint_available("weights"):
        pytest.skip("the default model is not shipped")
    fm = FusionModel("weights")
    st = fm.settings()  # balanced: working size 4 MP
    assert stack_settings(fm, st, 2, False) == st and stack_settings(fm, st, 2, True) == st
    ten = stack_settings(fm, st, 10, True)
    assert ten.working_size == pytest.approx(STACK_MEGAPIXELS / 10)
    h, w = fm.step_sizes(1536, 2048, ten)[-1]
    assert h * w <= STACK_MEGAPIXELS / 10 * 1e6 * 1.01 and h * 4 == w * 3  # the shape kept
    assert stack_settings(fm, st, 10, True, 0) == st  # no shared budget
    assert stack_settings(fm, st, 10, False) == st  # a pairwise fold is not a shared stack
    quality = fm.settings(speed="quality")
    assert stack_settings(fm, quality, 10, True) == quality  # full size was asked for
    with pytest.raises(ValueError, match="stack_megapixels"):
        stack_settings(fm, st, 10, True, -1)
