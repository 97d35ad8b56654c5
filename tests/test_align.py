"""Registration of focus-stack frames (rediffuse.align): known shifts, rotations and scales recovered."""
import numpy as np
import pytest

from rediffuse.align import (MOTIONS, Pyramid, RegistrationError, displacement, grid_rms, luma, register,
                             similarity_matrix, warp)
from rediffuse.metrics import psnr
from rediffuse.stack import FrameReader
from stacks import misaligned_stack


def register_stack(frames, motion):
    """Every frame registered to the first the way `fuse` does it (stack.FrameReader)."""
    reader = FrameReader(lambda i: (frames[i], 8), [f"frame {i + 1}" for i in range(len(frames))])
    reader.survey(motion)
    return reader.registrations


@pytest.mark.parametrize("motion", MOTIONS)
def test_known_motions_are_recovered_to_a_fifth_of_a_pixel(motion):
    # shifts up to ±20 px, rotations up to ±1°, scales up to ±2 %, between frames focused on different layers
    for seed in range(3):
        kw = dict(angle=0.0, scale=0.0) if motion == "translation" else {}
        frames, _, gt, truth = misaligned_stack(3, (200, 264), seed=seed, **kw)
        regs = register_stack(frames, motion)
        assert regs[0].is_identity
        for reg, m in zip(regs[1:], truth[1:]):
            assert grid_rms(reg.matrix, m, gt.shape[:2]) <= 0.2, (motion, seed)
            assert reg.correlation > 0.9


def test_warp_puts_a_frame_on_the_reference_grid_and_marks_what_it_does_not_cover():
    frames, aligned, _, truth = misaligned_stack(2, (160, 200), seed=4)
    out, valid = warp(frames[1], truth[1])
    assert out.shape == frames[1].shape and out.dtype == np.uint8
    b = 28  # beyond the farthest any frame moves: every pixel there is covered
    assert valid[b:-b, b:-b].all() and not valid.all()
    assert psnr(out[b:-b, b:-b], aligned[1][b:-b, b:-b]) > 45
    # the identity leaves a frame exactly as it was
    same, v = warp(frames[1], np.eye(3))
    assert np.array_equal(same, frames[1]) and v.all()


def test_pyramid_levels_and_matrix_helpers():
    y = luma(np.zeros((1000, 1500, 3), np.uint8))
    pyr = Pyramid(y, max_side=800)
    assert max(pyr.levels[-1].shape) <= 800 and max(pyr.levels[0].shape) <= 160
    assert pyr.factors == sorted(pyr.factors, reverse=True) and pyr.factors[-1] == 2
    m = similarity_matrix(1.0, 0.0, (3.0, -4.0))
    assert displacement(m, (100, 100)) == pytest.approx(4.0)
    assert grid_rms(m, np.eye(3), (100, 100)) == pytest.approx(5.0)


def test_frames_that_cannot_be_registered_give_one_line_errors():
    rng = np.random.default_rng(0)
    frames, _, _, _ = misaligned_stack(2, (128, 160), seed=1)
    other, _, _, _ = misaligned_stack(2, (128, 160), seed=1, photo="coffee")
    ref = Pyramid(luma(frames[0]))
    for bad in (other[0], rng.integers(0, 256, frames[0].shape, dtype=np.uint8), np.full_like(frames[0], 90)):
        for motion in MOTIONS:
            with pytest.raises(RegistrationError) as e:
                register(ref, Pyramid(luma(bad)), motion)
            assert "\n" not in str(e.value) and str(e.value)
    with pytest.raises(ValueError, match="unknown motion"):
        register(ref, ref, "affine")


def test_supersampled_stacks_sample_moved_and_unmoved_frames_alike():
    # rendered 4× finer and area-sampled: the unmoved frame is the aligned one, and a moved frame put
    # back with the true transform matches its aligned twin to resampling accuracy (measured 54–55 dB)
    frames, aligned, gt, truth = misaligned_stack(3, (192, 256), seed=0, supersample=4)
    assert np.array_equal(frames[0], aligned[0]) and gt.shape == frames[0].shape
    b = 28
    for f, a, m in zip(frames[1:], aligned[1:], truth[1:]):
        assert psnr(warp(f, m)[0][b:-b, b:-b], a[b:-b, b:-b]) > 48
    for reg, m in zip(register_stack(frames, "similarity")[1:], truth[1:]):
        assert grid_rms(reg.matrix, m, gt.shape[:2]) <= 0.2


def test_a_16_bit_truth_renders_the_same_scene_as_the_8_bit_one():
    # benchmarks/bench_peers.py --part align scores 8-bit frames against the truth in 16 bits: the same
    # draws, frames and truth, only the truth's rounding differs
    small = dict(seed=1, supersample=2, shift=4)
    f8, a8, gt8, m8 = misaligned_stack(2, (40, 48), **small)
    f, a, gt16, m = misaligned_stack(2, (40, 48), truth_bits=16, **small)
    assert gt16.dtype == np.uint16 and gt8.dtype == np.uint8 and f[1].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(f8 + a8, f + a)) and np.allclose(m8, m)
    assert np.abs(gt16 / 257.0 - gt8).max() <= 0.5 + 1e-6 and not np.array_equal(gt16 % 257, 0 * gt16)
    with pytest.raises(ValueError, match="supersample"):
        misaligned_stack(2, (40, 48), truth_bits=16)
