"""Checkpoints: atomic save, safe load, slim export, integrity check, and rebuilding the model.

A checkpoint is a ``torch.save`` dict: ``model`` (and ``ema``) state dicts, ``model_config`` (the
keyword arguments of :class:`~rediffuse.unet.ReDiffuseUNet`), ``config`` (the training
configuration), ``step``, optional ``optimizer``/``rng`` (training runs) and ``meta`` (exports).
Every save also stores ``sha256``: a digest of the model tensors (names, dtypes, shapes and bytes),
which loading verifies, so a flipped bit inside a weight tensor is refused instead of silently
fusing with a damaged network. Loading uses ``weights_only=True``: no code in a file ever runs.
"""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .unet import ReDiffuseUNet

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "export_checkpoint", "tensor_digest",
           "verify_checkpoint", "model_from_config"]

_DIGESTED = ("model", "ema")


def tensor_digest(state: dict) -> str:
    """SHA-256 over the ``model``/``ema`` state dicts of a checkpoint (order-independent names)."""
    h = hashlib.sha256()
    for part in _DIGESTED:
        sd = state.get(part)
        if not isinstance(sd, dict):
            continue
        for name in sorted(sd):
            t = sd[name]
            if not isinstance(t, torch.Tensor):
                continue
            t = t.detach().cpu().contiguous()
            h.update(f"{part}/{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` (plus its tensor digest) to a temporary file, flush it to disk, then rename:
    a crash or a full disk never leaves a half-written checkpoint in place of a good one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    state = dict(state, sha256=tensor_digest(state))
    f = None
    try:
        with open(tmp, "wb") as raw:
            f = _ErrorRecorder(raw)
            torch.save(state, f)
            raw.flush()
            os.fsync(raw.fileno())
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        # torch's zip writer swallows the OSError of a failed write and reports "unexpected pos";
        # the recorder kept the real cause
        cause = f.error if f is not None and f.error is not None else e
        if getattr(cause, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            reason = "the disk is full"
        else:
            reason = getattr(cause, "strerror", None) or (str(cause).splitlines() or [type(cause).__name__])[0]
        raise OSError(f"could not write checkpoint {path}: {reason}; the previous checkpoint is unchanged") from None
    os.replace(tmp, path)


class _ErrorRecorder:
    """A binary file for ``torch.save`` that remembers the first ``OSError`` of a write."""

    def __init__(self, f):
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as e:
            self.error = self.error or e
            raise


def verify_checkpoint(state: dict, path: str | Path = "checkpoint") -> None:
    """Raise ``ValueError`` when ``state`` carries a digest that its tensors no longer match."""
    want = state.get("sha256")
    if want is not None and want != tensor_digest(state):
        raise ValueError(f"{path} is damaged: its weights do not match the checksum stored with them; "
                         "re-download or re-export it")


def load_checkpoint(path: str | Path, map_location: Any = "cpu", verify: bool = True) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs),
    verifying its tensor digest when it has one."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"expected a checkpoint file, got a folder: {path} (a run's checkpoint is {path}/last.pt)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to a user
        raise ValueError(f"{path} is not a readable rediffuse checkpoint ({type(e).__name__}); re-download or retrain it") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a rediffuse checkpoint (it holds a {type(state).__name__}, not a dict)")
    if verify:
        verify_checkpoint(state, path)
    return state


def model_from_config(model_config: dict) -> nn.Module:
    """The network a checkpoint's ``model_config`` describes."""
    return ReDiffuseUNet(**model_config)


def load_model(path: str | Path, ema: bool = True, map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the U-Net stored in a checkpoint; returns ``(model.eval(), training config dict)``."""
    ck = load_checkpoint(path, map_location)
    if "model_config" not in ck or "model" not in ck:
        raise ValueError(f"{path} is not a rediffuse model checkpoint (no model_config/model entries)")
    model = model_from_config(ck["model_config"])
    try:
        model.load_state_dict(ck["ema" if ema and ck.get("ema") else "model"])
    except RuntimeError as e:
        raise ValueError(f"{path} does not match the model it describes: {str(e).splitlines()[0]}") from None
    return model.eval(), ck.get("config", {})


def export_checkpoint(src: str | Path, dst: str | Path, *, ema_only: bool = False,
                      dtype: torch.dtype | None = None, **meta: Any) -> Path:
    """Write a slim, shippable copy of a training checkpoint: weights, EMA weights, configs, step and
    ``meta`` (e.g. wall time, hardware) — no optimizer state.

    ``ema_only``: keep only the EMA weights (what inference uses), stored as ``model``; ``dtype`` (e.g.
    ``torch.float16``): store the floating-point weights in it, halving the file. They are read back
    into the network's float32 parameters, so the model is the same up to that rounding."""
    ck = load_checkpoint(src)
    slim = {k: ck[k] for k in ("model", "ema", "config", "model_config", "step") if k in ck}
    if ema_only:
        if not ck.get("ema"):
            raise ValueError(f"{src} has no EMA weights to export; export it without ema_only")
        slim["model"] = slim.pop("ema")
    if dtype is not None:
        for part in _DIGESTED:
            if isinstance(slim.get(part), dict):
                slim[part] = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                              for k, v in slim[part].items()}
    if ema_only or dtype is not None:  # say what the file holds when it is not the plain export
        stored = "EMA only" if ema_only else "model and EMA"
        meta = dict(meta, stored=stored + (f", {str(dtype).removeprefix('torch.')}" if dtype else ""))
    slim["meta"] = meta
    save_checkpoint(dst, slim)
    return Path(dst)
