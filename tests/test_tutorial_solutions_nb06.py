"""Notebook 06's exercises: the references pass, typical wrong answers fail with a message that says
what is wrong (the feedback states: test_tutorial_feedback.py)."""
import pytest
import torch

from rediffuse import tutorial_solutions as ts


@pytest.fixture(autouse=True)
def strict_checks(monkeypatch):
    """These tests name wrong answers by the ExerciseError a strict check raises (graders' mode)."""
    monkeypatch.setattr(ts, "STRICT", True)


def test_references_pass_their_checks():
    assert ts.check_conv_parameters(ts.conv_parameters).startswith("correct")
    assert ts.check_predict_turned_output(ts.predict_turned_output).startswith("correct")


def _counts(rote, plain):
    return lambda i, o, m, p: {"rote": rote(i, o, m, p), "plain": plain(i, o, m, p)}


_plain = lambda i, o, m, p: o * m * i * m * p * p + o * m  # noqa: E731
_rote = lambda i, o, m, p: o * i * m * p * p + o  # noqa: E731


@pytest.mark.parametrize("wrong, message", [
    (_counts(lambda i, o, m, p: o * i * m * p * p, _plain), "bias is missing"),
    (_counts(lambda i, o, m, p: o * i * m * p * p + o * m, _plain), "one bias per output \\*field\\*"),
    (_counts(lambda i, o, m, p: o * i * p * p + o, _plain), "a factor m you left out"),
    (_counts(_plain, _plain), "not learned again"),
    (_counts(_rote, lambda i, o, m, p: o * m * i * m * p * p), "bias per output channel"),
    (_counts(_rote, lambda i, o, m, p: o * i * m * p * p + o * m), "same channel widths"),
    (lambda i, o, m, p: (_rote(i, o, m, p), _plain(i, o, m, p)), "keys 'rote' and 'plain'"),
])
def test_a_wrong_parameter_count_fails(wrong, message):
    with pytest.raises(ts.ExerciseError, match=message):
        ts.check_conv_parameters(wrong)


def _rot(output, k):
    return torch.rot90(output, k, dims=(-2, -1))


@pytest.mark.parametrize("wrong, message", [
    (lambda out, k, flip, eq: _rot(out, -k) if eq and not flip else ts.predict_turned_output(out, k, flip, eq),
     "other way"),
    (lambda out, k, flip, eq: out if eq and not flip else ts.predict_turned_output(out, k, flip, eq), "invariant"),
    (lambda out, k, flip, eq: _rot(out, k) if not flip else None, "plain CNN"),  # trusts the plain twin too
    (lambda out, k, flip, eq: _rot(out, k) if eq and k % 4 == 0 else ts.predict_turned_output(out, k, flip, eq),
     "mirror is not one of them"),
    (lambda out, k, flip, eq: ts.predict_turned_output(out, k, flip, eq) if eq else None, "did not change"),
    (lambda out, k, flip, eq: None, "exactly equivariant to quarter turns|did not change"),
    (lambda out, k, flip, eq: out[..., :4] if eq and not flip and k else ts.predict_turned_output(out, k, flip, eq),
     "expected a tensor shaped like"),
])
def test_a_wrong_prediction_fails(wrong, message):
    with pytest.raises(ts.ExerciseError, match=message):
        ts.check_predict_turned_output(wrong)
