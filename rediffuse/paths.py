"""Where real data lives.

The benchmark data (Lytro, NYU-D-100, the reference metric tables) is never shipped with the project.
It is looked up at ``$REDIFFUSE_SHARED`` when that is set, else at ``../shared`` next to the repository.
Everything that needs it must cope with ``shared_root() is None``.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path | None:
    """The folder holding ``data/`` and ``reference/``, or None when it is not present."""
    env = os.environ.get("REDIFFUSE_SHARED")
    # an explicit setting wins, even when it holds nothing (``REDIFFUSE_SHARED=/nonexistent`` runs
    # everything as a fresh clone without the data would)
    candidates = [Path(env)] if env is not None else [REPO_ROOT.parent / "shared"]
    for c in candidates:
        if (c / "data").is_dir() or (c / "reference").is_dir():
            return c
    return None


def dataset_dir(name: str) -> Path | None:
    """``<shared>/data/<name>`` if it exists (e.g. ``"Lytro"``, ``"NYU-D-100"``), else None."""
    root = shared_root()
    if root is None:
        return None
    p = root / "data" / name
    return p if p.is_dir() else None


def reference_dir() -> Path | None:
    """``<shared>/reference/liu2020-benchmark`` if present, else None."""
    root = shared_root()
    if root is None:
        return None
    p = root / "reference" / "liu2020-benchmark"
    return p if p.is_dir() else None
