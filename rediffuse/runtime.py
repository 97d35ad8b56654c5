"""Runtime settings shared by the commands, notebooks and benchmarks: device, threads, precision.

The lowest layer of the package next to ``paths``: it imports nothing else from ``rediffuse``.
"""
from __future__ import annotations

import torch

__all__ = ["resolve_device", "set_threads", "exact_precision", "setup"]


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` → ``"cuda"`` when available, else ``"cpu"``; a CUDA request without CUDA is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but this PyTorch build sees no GPU; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def set_threads(threads: int = 0) -> None:
    """Use ``threads`` PyTorch CPU threads; 0 leaves PyTorch's default alone."""
    if threads < 0:
        raise ValueError(f"threads must be 0 (PyTorch's default) or a positive number, got {threads}")
    if threads:
        torch.set_num_threads(threads)


class exact_precision:
    """Turn TF32 off for CUDA matmuls and cuDNN convolutions (full float32 arithmetic).

    Equivariance checks compare outputs to ~1e-5, which TF32's 10-bit mantissa cannot meet on
    Ampere and later GPUs. Calling ``exact_precision()`` switches TF32 off for the rest of the
    process; ``with exact_precision():`` restores the previous flags on exit. The flags exist on
    CPU-only builds too, so the same code runs everywhere.
    """

    def __init__(self) -> None:
        self._saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def __enter__(self) -> "exact_precision":
        return self

    def __exit__(self, *exc: object) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved


def setup(device: str = "auto", threads: int = 0) -> str:
    """Apply ``threads`` and resolve ``device``; returns the torch device string to use."""
    set_threads(threads)
    return resolve_device(device)
