"""Blending frames of different exposure at the local brightness of the result (rediffuse.exposure)."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from rediffuse.exposure import ExposureBlend, local_mean
from rediffuse.metrics import spurious_gradient_fraction


def _texture(h=128, w=160, seed=0, blur=3.0):
    """A blurred texture in [-1, 1] (a background blurred in every frame)."""
    rng = np.random.default_rng(seed)
    t = ndimage.gaussian_filter(rng.standard_normal((h, w)), blur)
    return (0.1 + 0.6 * t / np.abs(t).max()).astype(np.float32)


def _patches(h, w, seed=1, cell=16):
    """Weights that switch between two frames in blocks, as wandering weights do."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 2, (h // cell + 1, w // cell + 1)), np.ones((cell, cell)))[:h, :w].astype(np.float32)


def _to8(v):
    return np.clip(np.rint((v + 1) * 127.5), 0, 255).astype(np.uint8)


def test_switching_between_frames_of_different_exposure_leaves_no_patches():
    t = _texture()
    x, y = t[None], ((t + 1) * 1.3 - 1)[None]  # y: the same scene 30 % brighter
    w = _patches(*t.shape)[None, None]
    plain = w[0] * x + (1 - w[0]) * y
    out = ExposureBlend(t.shape).pair(torch.from_numpy(w), torch.from_numpy(x)[None], torch.from_numpy(y)[None])
    sources = [_to8(x[0]), _to8(y[0])]
    assert spurious_gradient_fraction(sources, _to8(plain[0])) > 0.02  # the plain blend shows the blocks
    assert spurious_gradient_fraction(sources, _to8(out[0, 0].numpy())) == 0.0
    # and the result is the scene at one smooth exposure, between the two frames'
    ratio = ((out[0, 0].numpy() + 1) / (t + 1))[16:-16, 16:-16]
    assert 1.0 - 1e-5 <= ratio.min() and ratio.max() <= 1.3 + 1e-5
    assert np.abs(np.diff(ratio, axis=1)).max() < 0.03  # ramps, where the plain blend steps by 0.3


def test_exposure_changes_within_the_tolerance_are_left_alone():
    """Frames whose exposures differ by 2 %: the result is the plain blend exactly."""
    t = _texture(seed=6)
    x, y = t[None], ((t + 1) * 1.02 - 1)[None]
    w = _patches(*t.shape)[None, None]
    out = ExposureBlend(t.shape).pair(torch.from_numpy(w), torch.from_numpy(x)[None], torch.from_numpy(y)[None])
    plain = w[0] * x + (1 - w[0]) * y
    assert np.abs(out[0].numpy() - plain).max() * 127.5 < 1e-3


def test_a_frame_that_wins_outright_comes_out_unchanged():
    t = _texture(seed=2)
    x, y = t[None], ((t + 1) * 0.8 - 1)[None]
    w = torch.ones(1, 1, *t.shape)
    out = ExposureBlend(t.shape).pair(w, torch.from_numpy(x)[None], torch.from_numpy(y)[None])
    assert float((out[0] - torch.from_numpy(x)).abs().max()) * 127.5 < 0.01  # grey levels


def test_frames_of_one_exposure_give_the_plain_blend_to_within_a_grey_level():
    # high-contrast blocks, black to white (the hardest case: a defocused edge moves the most light)
    sharp = (0.85 * np.kron(np.indices((6, 8)).sum(0) % 2 * 2 - 1, np.ones((16, 16)))).astype(np.float32)
    soft = ndimage.gaussian_filter(sharp, 4.0).astype(np.float32)  # the same scene defocused
    w = np.zeros_like(sharp)
    w[:, :64] = 1  # a focus boundary down the middle
    plain = w * sharp + (1 - w) * soft
    out = ExposureBlend(sharp.shape).pair(torch.from_numpy(w)[None, None], torch.from_numpy(sharp)[None, None],
                                          torch.from_numpy(soft)[None, None])[0, 0].numpy()
    assert np.abs((out - plain) * 127.5).max() < 1.0


def test_local_mean_counts_only_covered_pixels_and_commutes_with_quarter_turns():
    rng = np.random.default_rng(4)
    v = rng.uniform(-1, 1, (3, 60, 84)).astype(np.float32)
    valid = np.ones((60, 84), bool)
    valid[:, 70:] = False
    v2 = v.copy()
    v2[:, :, 70:] = 5.0  # what lies outside the coverage does not count
    assert np.allclose(local_mean(v, valid), local_mean(v2, valid))
    turned = local_mean(np.rot90(v, 1, (1, 2)).copy())
    assert np.allclose(turned, np.rot90(local_mean(v), 1, (1, 2)), atol=1e-5)


@pytest.mark.parametrize("symmetric", [False, True])
def test_fuse_blends_frames_of_different_exposure_without_patches(symmetric):
    """End to end: three frames of one blurred background at different exposures; whatever the
    network's weights do there, the result has no edge that no frame has."""
    from rediffuse.fuse import fuse

    t = _texture(96, 96, seed=5)
    frames = [_to8((t + 1) * g - 1) for g in (1.0, 1.25, 0.8)][: 3 if symmetric else 2]
    out = fuse(frames, "weights", symmetric=symmetric, evidence_fill=False)
    plain = fuse(frames, "weights", symmetric=symmetric, evidence_fill=False, exposure=False)
    assert out.shape == plain.shape == frames[0].shape
    # the plain blend: 1 % and 3 % of the pixels (measured); the common exposure: 0 and 0.04 % (four
    # pixels, where a step within the tolerance meets a texture edge)
    assert spurious_gradient_fraction(frames, plain) > 0.005
    assert spurious_gradient_fraction(frames, out) < 0.1 * spurious_gradient_fraction(frames, plain)
