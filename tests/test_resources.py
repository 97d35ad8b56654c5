"""What a configuration costs: parameter counts, the memory estimate against measured allocation peaks,
and FLOPs that scale with the pixels of a batch."""
import pytest

from rediffuse.resources import format_bytes, measured_cpu_peak, memory_estimate, parameter_counts, training_flops

SMALL = dict(base=16, mults=(1, 2, 4), groups=4)
PAPER = dict(base=64, mults=(1, 2, 4, 8), groups=16, layout="fusiondiff")


def test_paper_counts():
    assert parameter_counts(PAPER) == {"model": 6_789_521, "plain": 26_910_785, "per_channel_time_bias": 7_554_353}
    assert set(parameter_counts({**SMALL, "conv": "plain"})) == {"model", "plain"}


@pytest.mark.parametrize("grad_checkpoint", [False, True])
def test_memory_estimate_bounds_the_measured_peak(grad_checkpoint):
    est = memory_estimate(SMALL, 2, 48, grad_checkpoint=grad_checkpoint)
    measured = measured_cpu_peak(SMALL, 2, 48, grad_checkpoint=grad_checkpoint)
    assert 1.0 <= est.peak / measured <= 1.4, (format_bytes(est.peak), format_bytes(measured))


def test_checkpointing_and_size_scale_the_estimate():
    a = memory_estimate(PAPER, 32, 256)
    b = memory_estimate(PAPER, 32, 256, grad_checkpoint=True)
    c = memory_estimate(PAPER, 8, 256)
    assert b.activations < 0.6 * a.activations and a.state == b.state
    assert c.activations == pytest.approx(a.activations / 4, rel=0.05)  # activations ∝ pixels per step
    with pytest.raises(ValueError, match="minimum input"):
        memory_estimate(PAPER, 1, 4)


def test_flops_scale_with_pixels():
    # affine in the pixels of a step: convolutions per pixel, plus the filter expansion once per step
    one, two, four = (training_flops(SMALL, b, 32) for b in (1, 2, 4))
    assert 0 < one < two and four - two == pytest.approx(2 * (two - one), rel=1e-3)
    assert training_flops(SMALL, 1, 64) == pytest.approx(four, rel=0.01)
