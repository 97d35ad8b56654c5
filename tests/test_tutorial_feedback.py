"""Exercise feedback in three states, for every exercise of the tutorial: an unwritten exercise says
"not attempted" (never "correct") and the notebook goes on with the reference; the reference is
"correct"; a wrong answer whose own code raises is explained in a line or two, without a traceback, and
stops nothing unless the checks are strict (``ts.STRICT`` or ``REDIFFUSE_STRICT_EXERCISES=1``)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rediffuse import tutorial_solutions as ts

# exercise name -> its check; every registered exercise must be here
CHECKS = {
    "lift_conv": ts.check_lift_conv, "group_conv_filter": ts.check_group_conv_filter,
    "bias_offset": ts.check_bias_offset, "envelope_constant": ts.check_envelope_constant,
    "x0_from_eps": ts.check_x0_from_eps, "posterior_step": ts.check_posterior_step,
    "mutual_information": ts.check_mutual_information, "qg_by_hand": ts.check_qg_by_hand,
    "ddim_update": ts.check_ddim_update, "few_step_timesteps": ts.check_few_step_timesteps,
    "conv_parameters": ts.check_conv_parameters, "predict_turned_output": ts.check_predict_turned_output,
}
NAMES = sorted(CHECKS)


@pytest.fixture(autouse=True)
def lenient(monkeypatch):
    """Every test starts from the default: the flag unset and no environment variable."""
    monkeypatch.setattr(ts, "STRICT", None)
    monkeypatch.delenv(ts.STRICT_ENV, raising=False)


def unwritten(name):
    @ts.exercise(name)
    def fn(*args, **kwargs):
        raise NotImplementedError

    return fn


def raising(name):
    """A wrong answer whose own code fails inside a library call (a matrix product of mismatched shapes)."""
    @ts.exercise(name)
    def fn(*args, **kwargs):
        return torch.ones(2, 3) @ torch.ones(2, 3)

    return fn


def assert_explained(feedback):
    text = str(feedback)
    assert feedback.state == "wrong" and text.startswith("wrong:"), text
    assert "correct" not in text.replace("incorrect", "")
    assert "Traceback" not in text and 'File "' not in text, text
    assert len(text.splitlines()) <= 3, text  # the explanation (and a hint), then where the notebook goes on


def test_every_exercise_has_a_check_here():
    assert set(CHECKS) == set(ts.REFERENCE)


@pytest.mark.parametrize("name", NAMES)
def test_unanswered_says_not_attempted_and_never_correct(name, capsys):
    fn = unwritten(name)
    feedback = CHECKS[name](fn)
    assert feedback.state == "not attempted" and str(feedback).startswith("not attempted"), feedback
    assert "correct" not in feedback
    assert f"tutorial_solutions/{ts.REFERENCE[name].__module__.rsplit('.', 1)[1]}.py" in feedback  # where it is
    assert "correct" not in capsys.readouterr().out
    assert fn.state == "not attempted"


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_is_correct(name):
    feedback = CHECKS[name](ts.exercise(name)(ts.REFERENCE[name]))
    assert feedback.state == "correct" and feedback.startswith("correct") and feedback.passed, feedback


@pytest.mark.parametrize("name", NAMES)
def test_an_exception_in_the_students_code_is_explained_and_stops_nothing(name):
    fn = raising(name)
    feedback = CHECKS[name](fn)  # no raise by default
    assert_explained(feedback)
    assert "raised RuntimeError" in feedback and "torch.ones(2, 3) @ torch.ones(2, 3)" in feedback, feedback
    assert "reference solution" in feedback  # what the notebook does next


@pytest.mark.parametrize("name", NAMES)
def test_strict_checks_raise(name, monkeypatch):
    monkeypatch.setattr(ts, "STRICT", True)
    with pytest.raises(ts.ExerciseError, match="raised RuntimeError"):
        CHECKS[name](raising(name))
    with pytest.raises(ts.ExerciseError, match="not attempted"):
        CHECKS[name](unwritten(name))
    assert CHECKS[name](ts.REFERENCE[name]).state == "correct"


def test_the_environment_variable_makes_checks_strict(monkeypatch):
    monkeypatch.setenv(ts.STRICT_ENV, "1")
    with pytest.raises(ts.ExerciseError):
        ts.check_envelope_constant(raising("envelope_constant"))
    monkeypatch.setattr(ts, "STRICT", False)  # the flag, once set, wins over the variable
    assert ts.check_envelope_constant(raising("envelope_constant")).state == "wrong"


def test_a_wrong_answer_keeps_its_named_mistake_without_raising():
    feedback = ts.check_envelope_constant(lambda d, e: float(np.mean(np.asarray(e) / np.asarray(d))))
    assert feedback.state == "wrong" and "lies above your bound" in feedback


def test_a_lift_without_the_expanded_bias_names_the_mistake(capsys):
    @ts.exercise("lift_conv")
    def lift_conv(x, weight, basis_t, bias=None):
        O, C, R = weight.shape
        m, p = basis_t.shape[0], basis_t.shape[1]
        filt = torch.einsum("tyxr,ocr->otcyx", basis_t.to(weight), weight).reshape(O * m, C, p, p)
        return F.conv2d(x, filt, bias, padding=p // 2)  # bias [O], but F.conv2d wants O·m values

    feedback = ts.check_lift_conv(lift_conv)
    assert_explained(feedback)
    assert "F.conv2d(x, filt, bias, padding=p // 2)" in feedback and "repeat_interleave(m)" in feedback
    # the cells below still run: the failed exercise answers with the reference, and says so once
    from rediffuse.bconv import LiftConv2d
    layer = LiftConv2d(2, 3, 5, m=4)
    x = torch.randn(1, 2, 9, 9)
    out = lift_conv(x, layer.weight.detach(), layer.basis_t, layer.bias.detach())
    assert torch.allclose(out, layer(x).detach(), atol=1e-5)
    assert "did not pass its check" in capsys.readouterr().out


def test_a_returned_value_the_check_cannot_use_is_explained():
    feedback = ts.check_lift_conv(lambda x, weight, basis_t, bias=None: None)
    assert_explained(feedback)
    assert "could not use what your function returned" in feedback


def test_a_corrected_function_passes_once_rewritten():
    fn = raising("few_step_timesteps")
    assert ts.check_few_step_timesteps(fn).state == "wrong" and fn.state == "wrong"
    fn = ts.exercise("few_step_timesteps")(lambda T, steps: ts.REFERENCE["few_step_timesteps"](T, steps))
    assert ts.check_few_step_timesteps(fn).state == "correct" and fn.state == "correct"


def _notebook_with(tmp_path, cell_marker: str, body: str):
    """A copy of notebook 01 in ``tmp_path`` whose exercise cell (the one holding ``cell_marker``) is
    replaced by ``body``."""
    import json

    from rediffuse.tutorial import NOTEBOOK_DIR
    nb = json.loads((NOTEBOOK_DIR / "01_bconv.ipynb").read_text())
    cells = [c for c in nb["cells"] if c["cell_type"] == "code" and cell_marker in "".join(c["source"])]
    assert len(cells) == 1
    cells[0]["source"] = body.splitlines(keepends=True)
    path = tmp_path / "nb" / "01_bconv.ipynb"
    path.parent.mkdir()
    path.write_text(json.dumps(nb))
    return path


WRONG_LIFT = '''import torch.nn.functional as F

@exercise("lift_conv")
def lift_conv(x, weight, basis_t, bias=None):
    O, C, R = weight.shape
    m, p = basis_t.shape[0], basis_t.shape[1]
    filt = torch.einsum("tyxr,ocr->otcyx", basis_t.to(weight), weight).reshape(O * m, C, p, p)
    return F.conv2d(x, filt, bias, padding=p // 2)  # the bias is not repeated over the orientations
'''


@pytest.mark.slow
def test_run_all_completes_with_a_wrong_answer_and_stops_when_strict(tmp_path, monkeypatch):
    """Notebook 01 with a wrong lifting convolution: run unattended it reaches its end (the check says
    what is wrong, the cells below use the reference); with REDIFFUSE_STRICT_EXERCISES=1 it stops there."""
    import json

    from rediffuse.tutorial import run_notebook
    from tests.test_notebooks import check_01_bconv
    path = _notebook_with(tmp_path, '@exercise("lift_conv")', WRONG_LIFT)
    results = run_notebook(path, tmp_path / "out", smoke=True, device="cpu")
    check_01_bconv(results)  # every claim still holds: the failed exercise answered with the reference
    cells = json.loads((tmp_path / "out" / "01_bconv.ipynb").read_text())["cells"]
    said = "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code"
                   and "check_lift_conv(lift_conv)" in "".join(c["source"]) for o in c["outputs"])
    assert said.startswith("wrong: your lift_conv raised RuntimeError at `return F.conv2d(x, filt, bias"), said
    assert "repeat_interleave(m)" in said and "Traceback" not in said

    import papermill
    monkeypatch.setenv(ts.STRICT_ENV, "1")
    with pytest.raises(papermill.PapermillExecutionError, match="ExerciseError"):
        run_notebook(path, tmp_path / "strict", smoke=True, device="cpu")
