"""rediffuse: rotation-equivariant diffusion for multi-focus image fusion.

The public API, importable from the package itself::

    from rediffuse import FusionModel, ReDiffuseUNet, equivariance_error

    model = FusionModel.from_pretrained()                 # the shipped default; or "weights-plain", a path
    fused = model.fuse(["near.jpg", "far.jpg"])           # uint8 [H, W, 3]

(``fuse`` and ``train`` are also the names of modules, so their functions are imported from them:
``from rediffuse.fuse import fuse``, ``from rediffuse.train import train``.)

Names are loaded on first use, so ``import rediffuse.fuse`` (or this package) never pulls in the
trainer. The layers of the package are drawn in ``docs/architecture.md``; every module is small and
importable on its own (``rediffuse.groups``, ``rediffuse.bconv``, ``rediffuse.unet``, …).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    # equivariant building blocks
    "FieldType": "groups", "rotate_image": "groups", "rotate_fields": "groups",
    "LiftConv2d": "bconv", "GroupConv2d": "bconv", "ProjectConv2d": "bconv", "GroupConv1x1": "bconv",
    "RotE": "layers", "Plain": "layers", "conv_family": "layers",
    "equivariance_error": "equivariance", "equivariance_errors": "equivariance",
    # the model and the diffusion process
    "ReDiffuseUNet": "unet", "count_parameters": "unet",
    "get_schedule": "diffusion", "get_sampler": "diffusion", "training_loss": "diffusion",
    # data
    "FusionFolder": "data", "SyntheticPairs": "data", "PhotoLibrary": "synthesis", "LayeredPairs": "synthesis",
    "render_stack": "defocus",
    # fusing, training, scoring
    "FusionModel": "fuse", "SamplingSettings": "fuse", "SHIPPED_MODELS": "fuse",
    "load_model": "checkpoint", "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "TrainConfig": "train", "train_model": "train", "build_model": "train",
    "evaluate_folder": "evaluate", "make_method": "evaluate",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'rediffuse' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_API[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
