"""The tutorial's exercises: the references pass their checks, wrong answers fail them, and an
unwritten exercise falls back to the reference (so papermill runs every notebook end to end).
The three states of the feedback (not attempted, correct, wrong) are tested in test_tutorial_feedback.py."""
import numpy as np
import pytest
import torch

from rediffuse import tutorial_solutions as ts
from rediffuse.theory import loglog_fit


@pytest.fixture(autouse=True)
def strict_checks(monkeypatch):
    """These tests name wrong answers by the ExerciseError a strict check raises (graders' mode)."""
    monkeypatch.setattr(ts, "STRICT", True)


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

    from rediffuse.bconv import LiftConv2d
    x, w, basis_t = torch.randn(1, 2, 9, 9), torch.randn(3, 2, 25), LiftConv2d(2, 3, 5, m=4).basis_t
    assert torch.equal(lift_conv(x, w, basis_t), ts.REFERENCE["lift_conv"](x, w, basis_t))
    assert "not written yet" in capsys.readouterr().out
    ts.use_reference(False)
    try:
        with pytest.raises(NotImplementedError):
            lift_conv(x, w, basis_t)
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


# ------------------------------------------------------------------------- notebook 04

def _mi_from_counts(s, f):  # entropies of raw counts, never normalised
    joint = np.zeros((256, 256))
    np.add.at(joint, (s.ravel(), f.ravel()), 1.0)
    h = lambda q: -(q[q > 0] * np.log2(q[q > 0])).sum()  # noqa: E731
    return h(joint.sum(1)) + h(joint.sum(0)) - h(joint)


def _mi_with_nan(s, f):  # 0·log 0 left in
    joint = np.zeros((256, 256))
    np.add.at(joint, (s.ravel(), f.ravel()), 1.0)
    p = joint / joint.sum()
    with np.errstate(all="ignore"):
        h = lambda q: -(q * np.log2(q)).sum()  # noqa: E731
        return h(p.sum(1)) + h(p.sum(0)) - h(p)


def test_notebook04_references_pass_their_checks():
    assert ts.check_mutual_information(ts.mutual_information).startswith("correct")
    assert ts.check_qg_by_hand(ts.qg_by_hand).startswith("correct")


def test_notebook04_reference_qg_is_the_library_qg_on_a_real_crop():
    from skimage import data as skdata
    from scipy import ndimage
    from rediffuse.metrics import qg
    y = skdata.camera()[200:264, 200:264].astype(np.float64)
    blur = np.round(ndimage.gaussian_filter(y, 2))
    a, b = np.hstack([y[:, :32], blur[:, 32:]]), np.hstack([blur[:, :32], y[:, 32:]])
    assert abs(ts.qg_by_hand(a, b, y) - qg(*(x.astype(np.uint8) for x in (a, b, y)))) < 1e-9


@pytest.mark.parametrize("wrong, message", [
    (lambda s, f: ts.mutual_information(s, f) * np.log(2), "nats"),
    (_mi_with_nan, "0·log 0"),
    (_mi_from_counts, "normalise the histogram counts"),
    (lambda s, f: -ts.mutual_information(s, f), "sign is reversed"),
    (lambda s, f: np.histogram2d(s.ravel(), f.ravel(), 256)[0], "one number"),
])
def test_a_wrong_mutual_information_fails(wrong, message):
    with pytest.raises(ts.ExerciseError, match=message):
        ts.check_mutual_information(wrong)


def test_qmi_normalisation_inside_mi_is_named():
    def normalised(s, f):
        return ts.mutual_information(s, f) / (ts.mutual_information(s, s) + ts.mutual_information(f, f))

    with pytest.raises(ts.ExerciseError, match="plain MI in bits"):
        ts.check_mutual_information(normalised)


def _qg_with(**slip):
    from rediffuse.tutorial_solutions import nb04
    return lambda a, b, f: nb04._qg_variant(a, b, f, **slip)


@pytest.mark.parametrize("wrong, message", [
    (_qg_with(pad="reflect"), "mode='reflect'"),
    (_qg_with(angle="arctan2"), "arctan2"),
    (_qg_with(angle="pi/2"), "Qabf form"),
    (_qg_with(ratio="F/S"), "smaller strength over the larger"),
    (_qg_with(pooling="per-pixel mean"), "per-pixel normalised score"),
    (_qg_with(pooling="plain mean"), "without weights"),
    (lambda a, b, f: np.zeros_like(a), "one number"),
])
def test_a_wrong_qg_fails_with_the_slip_named(wrong, message):
    with pytest.raises(ts.ExerciseError, match=message):
        ts.check_qg_by_hand(wrong)


def test_qg_without_zero_guards_and_qabf_are_named():
    from rediffuse.metrics import qabf

    def unguarded(a, b, f):  # the reference without the 1e-5 guards: 0/0 where nothing changes
        from scipy import ndimage
        k = np.array([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
        with np.errstate(all="ignore"):
            grads = [(ndimage.correlate(x, k, mode="constant"), ndimage.correlate(x, k.T, mode="constant"))
                     for x in (a, b, f)]
            (ga, aa), (gb, ab), (gf, af) = [(np.hypot(gx, gy), np.arctan(gy / gx)) for gx, gy in grads]

            def q(gs, al):
                G = np.where(gs > gf, gf / gs, gs / gf)
                A = 1 - 2 * np.abs(al - af) / np.pi
                return 0.9994 / (1 + np.exp(-15 * (G - 0.5))) * 0.9879 / (1 + np.exp(-22 * (A - 0.8)))

            return float((q(ga, aa) * ga + q(gb, ab) * gb).sum() / (ga + gb).sum())

    with pytest.raises(ts.ExerciseError, match="1e-5"):
        ts.check_qg_by_hand(unguarded)
    with pytest.raises(ts.ExerciseError, match="that is Qabf"):
        ts.check_qg_by_hand(lambda a, b, f: qabf(*(x.astype(np.uint8) for x in (a, b, f))))
