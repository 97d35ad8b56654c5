"""The exercise machinery: the :func:`exercise` decorator, the reference registry and :class:`ExerciseError`.

A notebook exercise is a function the student writes, marked with :func:`exercise`::

    @exercise("group_conv_filter")
    def group_conv_filter(weight, basis_t):
        ...                                  # the student's code
        raise NotImplementedError            # left in place until it is written

    check_group_conv_filter(group_conv_filter)

While the body still raises ``NotImplementedError`` the decorated function says so and answers with
the reference solution here, so the notebook runs end to end (papermill, CI) before the exercise is
done. Once the student writes it, their code runs and the ``check_*`` function compares it with the
library, failing with a message that says what is wrong. ``use_reference(False)`` turns the fallback
off (then an unwritten exercise raises).
"""
from __future__ import annotations

import functools
from typing import Callable

__all__ = ["exercise", "use_reference", "ExerciseError", "REFERENCE", "reference"]

# exercise name -> reference solution; each notebook's module registers its own with @reference
REFERENCE: dict[str, Callable] = {}

_STATE = {"reference": True}


class ExerciseError(AssertionError):
    """A check found the student's answer wrong; the message says how."""


def use_reference(on: bool = True) -> None:
    """Whether an unwritten exercise (body raising ``NotImplementedError``) falls back to the reference."""
    _STATE["reference"] = bool(on)


def exercise(name: str) -> Callable[[Callable], Callable]:
    """Decorator for a student's function: runs it, or the reference ``REFERENCE[name]`` while it is
    not written yet (and the fallback is on)."""
    if name not in REFERENCE:
        raise ValueError(f"unknown exercise {name!r}; known: {', '.join(REFERENCE)}")

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except NotImplementedError:
                if not _STATE["reference"]:
                    raise
                if not run.warned:
                    print(f"exercise {name!r} is not written yet: using the reference solution "
                          "(write the function body, then run the check again)")
                    run.warned = True
                return REFERENCE[name](*args, **kwargs)

        run.warned = False
        return run

    return wrap




def reference(fn: Callable) -> Callable:
    """Register ``fn`` as the reference solution of the exercise of the same name."""
    if fn.__name__ in REFERENCE:
        raise ValueError(f"exercise {fn.__name__!r} is registered twice")
    REFERENCE[fn.__name__] = fn
    return fn
