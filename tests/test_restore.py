import numpy as np
import pytest
import torch

from rediffuse.data import generate_synthetic_folder
from rediffuse.degradations import GaussianBlur
from rediffuse.fuse import FusionModel
from rediffuse.restore import (DEGRADATION_SETTINGS, DegradationSetting, classical_restore, degradation_rows,
                               fuse_degraded, naive_upsample)


def _smooth(seed=0, size=48):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).tanh() * 0.7


@pytest.mark.parametrize("name", ["avgpool2", "bicubic4"])
def test_restore_of_downsampled_is_consistent(name):
    st = DEGRADATION_SETTINGS[name]
    x = _smooth()
    y = st.observe(x)
    r = classical_restore(y, st)
    assert r.shape == x.shape and naive_upsample(y, st).shape == x.shape
    torch.testing.assert_close(st.op.A(r), y, atol=2e-5, rtol=0)  # back-projection: A r = y


def test_classical_restorers_beat_the_observation():
    x = _smooth(1, 64)
    for name in ("noise15", "blur2"):
        st = DEGRADATION_SETTINGS[name]
        y = st.observe(x, torch.Generator().manual_seed(0))
        err_y = float((y - x).pow(2).mean())
        err_r = float((classical_restore(y, st) - x).pow(2).mean())
        assert err_r < 0.5 * err_y, name


def test_wiener_approaches_pinv_and_rejects_bad_nsr():
    op = GaussianBlur(1.5)
    y = op.A(_smooth(2))
    torch.testing.assert_close(op.wiener(y, 1e-9), op.A_pinv(y), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="nsr"):
        op.wiener(y, 0.0)


class _AlwaysA(torch.nn.Module):
    """A 'weights' network whose weight map is 1 (source A) everywhere."""

    min_size = 1

    def forward(self, x, t, cond):
        return torch.full_like(x, 60.0)


@pytest.mark.parametrize("name", ["noise15", "blur2", "avgpool2", "bicubic4"])
def test_correct_mode_matches_observation_where_the_weight_map_is_one(tiny_checkpoint, name):
    # with a weight map of 1 everywhere and σ_y = 0 (λ = 1), the fused image must reproduce y_A exactly
    fm = FusionModel(tiny_checkpoint)
    fm.model = _AlwaysA()
    base = DEGRADATION_SETTINGS[name]
    st = DegradationSetting(name, base.op, noise=0.0)
    a, b = _smooth(3), _smooth(4)
    y_a, y_b = st.observe(a), st.observe(b)
    out = fuse_degraded(fm, y_a, y_b, st, "correct", steps=3)
    assert out.shape == a.shape
    torch.testing.assert_close(st.op.A(out), y_a.clamp(-1, 1), atol=1e-4, rtol=0)


def test_correct_mode_needs_weight_map_model(tiny_checkpoint):
    fm = FusionModel(tiny_checkpoint)
    fm.prediction = "eps"
    y = _smooth()
    with pytest.raises(ValueError, match="weight-map model"):
        fuse_degraded(fm, y, y, DEGRADATION_SETTINGS["noise15"], "correct")
    with pytest.raises(ValueError, match="unknown mode"):
        fuse_degraded(fm, y, y, DEGRADATION_SETTINGS["noise15"], "magic")


def test_degradation_rows(tiny_checkpoint, tmp_path):
    folder = generate_synthetic_folder(tmp_path / "syn", n=1, size=40, seed=5)
    fm = FusionModel(tiny_checkpoint)
    settings = [DEGRADATION_SETTINGS["avgpool2"], DEGRADATION_SETTINGS["noise15"]]
    rows = degradation_rows(fm, folder, settings, progress=False)
    assert len(rows) == 2 * 4
    assert {r["method"] for r in rows} == {"plain", "restore", "correct", "restore+gff"}
    assert all(np.isfinite(r["PSNR"]) and 0 < r["SSIM"] <= 1 for r in rows)
    with pytest.raises(FileNotFoundError, match="GT"):
        degradation_rows(fm, _no_gt(folder, tmp_path), settings, progress=False)


def _no_gt(folder, tmp_path):
    import shutil

    dst = tmp_path / "nogt"
    shutil.copytree(folder, dst)
    shutil.rmtree(dst / "GT")
    return dst
