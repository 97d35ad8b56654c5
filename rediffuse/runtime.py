"""Runtime settings shared by the commands, notebooks and benchmarks: device, threads, precision.

The lowest layer of the package next to ``paths``: it imports nothing else from ``rediffuse``.
"""
from __future__ import annotations

import os
import time

import torch

__all__ = ["resolve_device", "set_threads", "idle_cores", "cpu_has_bf16", "tf32_precision", "exact_precision", "setup"]


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` → ``"cuda"`` when available, else ``"cpu"``; a CUDA request without CUDA is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but this PyTorch build sees no GPU; use device=cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def _busy_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def idle_cores(sample_s: float = 0.05) -> int:
    """The CPU cores this process may use (its affinity mask) that other programs leave idle now,
    measured over ``sample_s`` seconds from /proc/stat (the 1-minute load average where that is
    missing); at least 1. PyTorch's own default, every core, is the slowest choice on a shared CPU:
    its threads wait for each other whenever one of them is descheduled
    (``benchmarks/bench_threads.py`` measures it)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    first = _busy_ticks()
    if first is not None:
        time.sleep(sample_s)
        second = _busy_ticks()
        if second is not None and second[1] > first[1]:
            machine = os.cpu_count() or cores
            busy = machine * (second[0] - first[0]) / (second[1] - first[1])
            return max(1, min(cores, int(cores - busy + 0.5)))
    try:
        return max(1, min(cores, int(cores - os.getloadavg()[0] + 0.5)))
    except OSError:
        return cores


def set_threads(threads: int = 0) -> None:
    """Use ``threads`` PyTorch CPU threads; 0: as many as there are idle cores now (``idle_cores``:
    every core on an idle machine, fewer while other programs keep cores busy)."""
    if threads < 0:
        raise ValueError(f"threads must be 0 (the idle cores) or a positive number, got {threads}")
    torch.set_num_threads(threads or idle_cores())


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX-512 BF16 or AMX) that oneDNN uses; without it
    PyTorch emulates bfloat16 convolutions, many times slower than float32 (21× on this project's
    AMD EPYC, AVX2 only). True where PyTorch cannot say, so that nothing is refused on a guess."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


class tf32_precision:
    """Allow (``True``) or forbid TF32 for CUDA matmuls and cuDNN convolutions.

    Calling it sets the flags for the rest of the process; ``with tf32_precision(...):`` restores
    the previous flags on exit. The flags exist on CPU-only builds too, so the same code runs
    everywhere. PyTorch's own defaults differ between the two (cuDNN convolutions allow TF32, matmuls
    do not), which is why every caller states what it wants.
    """

    def __init__(self, allow: bool) -> None:
        self._saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = bool(allow)
        torch.backends.cudnn.allow_tf32 = bool(allow)

    def __enter__(self) -> "tf32_precision":
        return self

    def __exit__(self, *exc: object) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved


class exact_precision(tf32_precision):
    """Turn TF32 off for CUDA matmuls and cuDNN convolutions (full float32 arithmetic).

    Equivariance checks compare outputs to ~1e-5, which TF32's 10-bit mantissa cannot meet on
    Ampere and later GPUs (a quarter-turned fused image then differs by hundredths of a grey level
    instead of ~1e-5). Fusion, evaluation and every equivariance check run inside it. Calling
    ``exact_precision()`` switches TF32 off for the rest of the process; ``with exact_precision():``
    restores the previous flags on exit.
    """

    def __init__(self) -> None:
        super().__init__(False)


def setup(device: str = "auto", threads: int = 0) -> str:
    """Apply ``threads`` and resolve ``device``; returns the torch device string to use."""
    set_threads(threads)
    return resolve_device(device)
