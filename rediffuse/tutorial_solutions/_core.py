"""The exercise machinery: the :func:`exercise` decorator, the reference registry, and the grading that
turns a check into feedback with three states.

A notebook exercise is a function the student writes, marked with :func:`exercise`::

    @exercise("group_conv_filter")
    def group_conv_filter(weight, basis_t):
        ...                                  # the student's code
        raise NotImplementedError            # left in place until it is written

    print(check_group_conv_filter(group_conv_filter))

Every ``check_*`` function is wrapped by :func:`grader` and answers with a :class:`Feedback` (a string
that also carries ``.state``):

- **not attempted** — the body still raises ``NotImplementedError``. The feedback says so (never
  "correct") and the notebook goes on with the reference solution;
- **correct** — the check's own report;
- **wrong** — what the check found, or, when the student's code itself raised, one or two lines naming
  the exception and the line of the student's code it came from (no traceback through library code).
  From then on the exercise function answers with the reference, so the cells below still run.

By default a wrong or missing answer does not stop the notebook ("Run All" completes). For grading,
``rediffuse.tutorial_solutions.STRICT = True`` or the environment variable
``REDIFFUSE_STRICT_EXERCISES=1`` makes a check raise :class:`ExerciseError` instead.
``use_reference(False)`` turns the fallback off (then an unwritten exercise raises when it is called).
"""
from __future__ import annotations

import functools
import linecache
import os
import sys
from typing import Callable

__all__ = ["exercise", "use_reference", "ExerciseError", "REFERENCE", "reference", "Feedback", "grader",
           "strict_mode", "STRICT_ENV"]

# exercise name -> reference solution; each notebook's module registers its own with @reference
REFERENCE: dict[str, Callable] = {}

STRICT_ENV = "REDIFFUSE_STRICT_EXERCISES"

_STATE = {"reference": True}

_PACKAGE = __name__.rpartition(".")[0]  # rediffuse.tutorial_solutions, where the STRICT flag lives


class ExerciseError(AssertionError):
    """A check found the student's answer wrong; the message says how."""


def use_reference(on: bool = True) -> None:
    """Whether an unwritten exercise (body raising ``NotImplementedError``) falls back to the reference."""
    _STATE["reference"] = bool(on)


def strict_mode() -> bool:
    """Whether checks raise on a wrong or missing answer: the package's ``STRICT`` flag when it is set
    (True/False), else the environment variable ``REDIFFUSE_STRICT_EXERCISES`` (1, true, yes)."""
    flag = getattr(sys.modules.get(_PACKAGE), "STRICT", None)
    if flag is not None:
        return bool(flag)
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class Feedback(str):
    """What a check says: the message (this string) and ``state``, one of ``"not attempted"``,
    ``"correct"`` and ``"wrong"``. The message starts with the state."""

    state: str

    def __new__(cls, state: str, message: str) -> "Feedback":
        obj = super().__new__(cls, message)
        obj.state = state
        return obj

    @property
    def passed(self) -> bool:
        return self.state == "correct"


class Exercise:
    """A student's function marked with :func:`exercise`: calls it, or the reference solution while it is
    not written yet (``NotImplementedError``) or after its check found it wrong."""

    def __init__(self, name: str, fn: Callable):
        functools.update_wrapper(self, fn)
        self.exercise_name = name
        self.student = fn
        self.state: str | None = None  # set by the check: "not attempted", "correct" or "wrong"
        self.warned = False

    def _reference(self, why: str, *args, **kwargs):
        if not self.warned:
            print(f"exercise {self.exercise_name!r} {why}: this cell uses the reference solution")
            self.warned = True
        return REFERENCE[self.exercise_name](*args, **kwargs)

    def __call__(self, *args, **kwargs):
        if self.state == "wrong" and _STATE["reference"]:
            return self._reference("did not pass its check", *args, **kwargs)
        try:
            return self.student(*args, **kwargs)
        except NotImplementedError:
            if not _STATE["reference"]:
                raise
            return self._reference("is not written yet", *args, **kwargs)

    def __repr__(self) -> str:
        return f"<exercise {self.exercise_name!r}: {self.student!r}>"


def exercise(name: str) -> Callable[[Callable], Exercise]:
    """Decorator for a student's function: runs it, or the reference ``REFERENCE[name]`` while it is
    not written yet (and the fallback is on)."""
    if name not in REFERENCE:
        raise ValueError(f"unknown exercise {name!r}; known: {', '.join(REFERENCE)}")

    def wrap(fn: Callable) -> Exercise:
        return Exercise(name, fn)

    return wrap


def reference(fn: Callable) -> Callable:
    """Register ``fn`` as the reference solution of the exercise of the same name."""
    if fn.__name__ in REFERENCE:
        raise ValueError(f"exercise {fn.__name__!r} is registered twice")
    REFERENCE[fn.__name__] = fn
    return fn


# ------------------------------------------------------------------------------------------ grading

class _NotAttempted(Exception):
    """The student's function still raises NotImplementedError."""


class _StudentRaised(Exception):
    """The student's own code raised; ``where`` is the line of their code it came from."""

    def __init__(self, error: BaseException, where: str | None):
        super().__init__(str(error))
        self.error, self.where = error, where


def _line_in(fn: Callable, tb) -> str | None:
    """The last line of ``fn``'s own code in traceback ``tb`` (its source text, or its number)."""
    code = getattr(fn, "__code__", None)
    found = None
    while tb is not None:
        if code is not None and tb.tb_frame.f_code is code:
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    if found is None:
        return None
    text = linecache.getline(*found).strip()
    return f"`{text}`" if text else f"line {found[1]}"


def _guard(fn: Callable) -> Callable:
    """``fn`` with its failures sorted: NotImplementedError → not attempted; any other exception from
    the student's code → :class:`_StudentRaised` (the checks' own ExerciseError passes through)."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            raise _NotAttempted from None
        except ExerciseError:
            raise
        except Exception as e:  # noqa: BLE001  whatever the student's code raised
            raise _StudentRaised(e, _line_in(fn, e.__traceback__)) from None

    return call


def _first_line(error: BaseException, limit: int = 220) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _display_name(fn: Callable) -> str:
    name = getattr(fn, "exercise_name", None) or getattr(fn, "__name__", "")
    return "your function" if not name or name.startswith("<") else f"your {name}"


def grader(hint: Callable[[BaseException], str | None] | None = None) -> Callable[[Callable], Callable]:
    """Turn ``check(fn, *args, **kwargs) -> str`` (raising :class:`ExerciseError` when ``fn`` is wrong)
    into a check that answers with :class:`Feedback` in three states. ``hint(error)`` may name the
    mistake behind an exception the student's code raised (``None``: no hint for that one)."""
    def wrap(check: Callable[..., str]) -> Callable[..., Feedback]:
        @functools.wraps(check)
        def run(fn: Callable, *args, **kwargs) -> Feedback:
            name = _display_name(fn)
            student = fn.student if isinstance(fn, Exercise) else fn
            try:
                message = check(_guard(student), *args, **kwargs)
            except _NotAttempted:
                ref = REFERENCE.get(getattr(fn, "exercise_name", ""))
                where = f" ({ref.__module__.replace('.', '/')}.py)" if ref is not None else ""
                feedback = Feedback("not attempted", f"not attempted: {name} still raises NotImplementedError, so the "
                                                     f"cells below use the reference solution{where}. Write the "
                                                     "function body, run its cell, then this check again.")
            except ExerciseError as e:
                feedback = Feedback("wrong", f"wrong: {e}")
            except _StudentRaised as e:
                at = f" at {e.where}" if e.where else ""
                said = _first_line(e.error)
                extra = hint(e.error) if hint is not None else None
                feedback = Feedback("wrong", f"wrong: {name} raised {type(e.error).__name__}{at}"
                                             + (f": {said}" if said else "") + (f"\n  → {extra}" if extra else ""))
            except Exception as e:  # noqa: BLE001  the check could not use what the function returned
                feedback = Feedback("wrong", f"wrong: the check could not use what {name} returned "
                                             f"({type(e).__name__}: {_first_line(e)}); look at the type and shape "
                                             "the exercise asks for")
            else:
                feedback = Feedback("correct", message)
            if isinstance(fn, Exercise):
                fn.state = feedback.state
                fn.warned = False
            if feedback.state != "correct":
                if strict_mode():
                    raise ExerciseError(str(feedback)) from None
                if feedback.state == "wrong":
                    feedback = Feedback("wrong", f"{feedback}\n  (the cells below use the reference solution until "
                                                 "this check passes)")
            return feedback

        return run

    return wrap
