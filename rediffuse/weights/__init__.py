"""The shipped models: their files (``*.pt``, package data, so an installed wheel finds them too), the
registry of names (``SHIPPED_MODELS``) and the one place a name or path becomes a checkpoint file
(:func:`resolve_checkpoint`). The model card is ``README.md`` next to them."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["WEIGHTS_DIR", "DEFAULT_CHECKPOINT", "SHIPPED_MODELS", "resolve_checkpoint", "checkpoint_available",
           "is_shipped_name"]

WEIGHTS_DIR = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "rediffuse-layered-bconv.pt"

#: Shipped checkpoints by name (``--checkpoint paper``; model card: ``rediffuse/weights/README.md``):
#: the default weight-map model (5 levels with bottleneck attention, trained on layered-defocus pairs
#: from real photos), and three small models trained alike on the first training set: the Rot-E
#: weight-map model, its plain twin and the paper's ε-prediction model.
SHIPPED_MODELS = {
    "weights": DEFAULT_CHECKPOINT,
    "weights-small": WEIGHTS_DIR / "rediffuse-weights-bconv.pt",
    "weights-plain": WEIGHTS_DIR / "rediffuse-weights-plain.pt",
    "paper": WEIGHTS_DIR / "rediffuse-eps-bconv.pt",
}


def is_shipped_name(checkpoint: str | os.PathLike | None) -> bool:
    """Whether ``checkpoint`` names a shipped model (and no file of that name is in the way)."""
    return checkpoint is not None and str(checkpoint) in SHIPPED_MODELS and not Path(str(checkpoint)).exists()


def resolve_checkpoint(checkpoint: str | os.PathLike | None) -> Path:
    """A checkpoint path from a path or a ``SHIPPED_MODELS`` name (``None``/"": the default)."""
    if checkpoint is None or str(checkpoint) == "":
        return DEFAULT_CHECKPOINT
    if is_shipped_name(checkpoint):
        return SHIPPED_MODELS[str(checkpoint)]
    return Path(checkpoint)


def checkpoint_available(checkpoint: str | os.PathLike | None) -> bool:
    """Whether a shipped model name or checkpoint path refers to an existing file."""
    return resolve_checkpoint(checkpoint).is_file()
