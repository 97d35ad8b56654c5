"""The tutorial's exercises: the references pass their checks, wrong answers fail them, and an
unwritten exercise falls back to the reference (so papermill runs every notebook end to end)."""
import numpy as np
import pytest
import torch

from rediffuse import tutorial_solutions as ts
from rediffuse.theory import loglog_fit


def test_references_pass_their_checks():
    assert ts.check_group_conv_filter(ts.group_conv_filter).startswith("correct")
    assert ts.check_lift_conv(ts.lift_conv).startswith("correct")


def test_a_wrong_tying_fails_with_a_message_naming_the_block():
    def wrong(weight, basis_t):  # (t − a) instead of (a − t)
        O, I, m, R = weight.shape
        t = torch.arange(m)
        tied = weight[:, :, (t[:, None] - t[None, :]) % m]
        filt = torch.einsum("tyxr,oitar->otiayx", basis_t, tied)
        return filt.reshape(O * m, I * m, basis_t.shape[1], basis_t.shape[2])

    with pytest.raises(ts.ExerciseError, match=r"input orientation a = \d+.*\(a − t\) mod m"):
        ts.check_group_conv_filter(wrong)


def test_a_lift_with_a_per_channel_bias_is_caught():
    def wrong(x, weight, basis_t, bias):
        out = ts.lift_conv(x, weight, basis_t, None)
        return out + torch.arange(out.shape[1], dtype=out.dtype)[None, :, None, None] * 0.1

    with pytest.raises(ts.ExerciseError, match="bias"):
        ts.check_lift_conv(wrong)


def test_unwritten_exercise_uses_the_reference_until_told_not_to(capsys):
    @ts.exercise("lift_conv")
    def lift_conv(x, weight, basis_t, bias=None):
        raise NotImplementedError

    assert ts.check_lift_conv(lift_conv).startswith("correct")
    assert "not written yet" in capsys.readouterr().out
    ts.use_reference(False)
    try:
        with pytest.raises(NotImplementedError):
            ts.check_lift_conv(lift_conv)
    finally:
        ts.use_reference(True)


def test_unknown_exercise_name():
    with pytest.raises(ValueError, match="unknown exercise"):
        ts.exercise("nope")


# ------------------------------------------------------------------------- notebook 02

def test_notebook02_references_pass_their_checks():
    assert ts.check_bias_offset(ts.bias_offset).startswith("correct")
    assert ts.check_envelope_constant(ts.envelope_constant).startswith("correct")


@pytest.mark.parametrize("wrong, message", [
    (lambda b, m, k: -ts.bias_offset(b, m, k), "sign"),
    (lambda b, m, k: b - b.reshape(-1, m).roll(-k * m // 4, 1).reshape(-1), "wrong way"),
    (lambda b, m, k: b - b.reshape(-1, m).roll(k, 1).reshape(-1), "m/4 orientation steps"),
    (lambda b, m, k: torch.zeros_like(b), "no defect"),
    (lambda b, m, k: b[:m], "shape"),
])
def test_a_wrong_bias_prediction_fails(wrong, message):
    with pytest.raises(ts.ExerciseError, match=message):
        ts.check_bias_offset(wrong)


@pytest.mark.parametrize("wrong, message", [
    (lambda d, e: float(np.mean(np.asarray(e) / np.asarray(d))), "lies above your bound"),
    (lambda d, e: loglog_fit(d, e)[0] if np.unique(d).size > 1 else float(e[0] / d[0]), "least-squares fit"),
    (lambda d, e: float(np.median(np.asarray(e) / np.asarray(d))), "lies above your bound"),
    (lambda d, e: 1.5 * float(np.max(np.asarray(e) / np.asarray(d))), "larger than needed"),
    (lambda d, e: [1.0, 2.0], "one number"),
])
def test_a_wrong_envelope_fails(wrong, message):
    with pytest.raises(ts.ExerciseError, match=message):
        ts.check_envelope_constant(wrong)


def test_unwritten_notebook02_exercises_fall_back_to_the_reference():
    @ts.exercise("envelope_constant")
    def envelope_constant(deltas, errors):
        raise NotImplementedError

    assert ts.check_envelope_constant(envelope_constant).startswith("correct")
