"""Exercises of the tutorial notebooks: reference solutions and the checks that grade them.

One module per notebook (``nb01`` … ``nb06``); each registers its reference solutions with
:func:`reference` and defines ``check_*`` functions (wrapped by :func:`grader`) that compare the
student's function with the library and say what is wrong. Everything they export is importable from here::

    from rediffuse.tutorial_solutions import exercise, check_lift_conv

Each check answers in one of three states — *not attempted*, *correct*, *wrong* — and by default
never stops a notebook; ``STRICT = True`` here (or ``REDIFFUSE_STRICT_EXERCISES=1``) makes it raise.
See :mod:`rediffuse.tutorial_solutions._core` for how an unwritten or failed exercise falls back to the
reference.

The reference solutions in this folder answer every exercise: a student who wants to work them out
should not read ``nb01.py`` … ``nb06.py`` first.
"""
from __future__ import annotations

import importlib
import pkgutil

from ._core import (REFERENCE, STRICT_ENV, ExerciseError, Feedback, exercise, grader, reference, strict_mode,
                    use_reference)

__all__ = ["exercise", "use_reference", "ExerciseError", "REFERENCE", "reference", "Feedback", "grader",
           "strict_mode", "STRICT", "STRICT_ENV"]

# True: a check raises ExerciseError on a wrong or missing answer (for graders); False: it reports and the
# notebook goes on; None: the environment variable REDIFFUSE_STRICT_EXERCISES decides (default: go on)
STRICT: bool | None = None

# every notebook module nbNN is loaded (so its references are registered) and re-exported; a new
# notebook's exercises need only their module
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if _info.name.startswith("nb"):
        _mod = importlib.import_module(f"{__name__}.{_info.name}")
        globals().update({k: getattr(_mod, k) for k in _mod.__all__})
        __all__ += list(_mod.__all__)
