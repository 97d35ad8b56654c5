"""Exercises of the tutorial notebooks: reference solutions and the checks that grade them.

One module per notebook (``nb01`` … ``nb06``); each registers its reference solutions with
:func:`reference` and defines ``check_*`` functions that raise :class:`ExerciseError` with a message
saying what is wrong. Everything they export is importable from here::

    from rediffuse.tutorial_solutions import exercise, check_lift_conv

See :mod:`rediffuse.tutorial_solutions._core` for how an unwritten exercise falls back to the reference.
"""
from __future__ import annotations

import importlib
import pkgutil

from ._core import REFERENCE, ExerciseError, exercise, reference, use_reference

__all__ = ["exercise", "use_reference", "ExerciseError", "REFERENCE", "reference"]

# every notebook module nbNN is loaded (so its references are registered) and re-exported; a new
# notebook's exercises need only their module
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if _info.name.startswith("nb"):
        _mod = importlib.import_module(f"{__name__}.{_info.name}")
        globals().update({k: getattr(_mod, k) for k in _mod.__all__})
        __all__ += list(_mod.__all__)
