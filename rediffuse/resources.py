"""What a training configuration costs before it runs: parameters, memory and arithmetic per step.

Everything here runs the network on PyTorch's ``meta`` device, where tensors have shapes but no
storage: a forward and backward pass of the paper's model at batch 32 × 256² takes a fraction of a
second and no memory, so ``rediffuse train --dry-run`` can answer "does it fit?" on a laptop.

- :func:`parameter_counts`: the model, its plain twin of equal width and, for Rot-E models, the
  count with the official code's per-channel time bias (the paper's published number).
- :func:`memory_estimate`: peak memory of one training step per process, from the tensors autograd
  actually keeps for the backward pass (collected with ``saved_tensors_hooks``, one entry per
  storage), plus weights, gradients, AdamW moments and the EMA copy, plus a transient allowance for
  the gradients of the largest activation. ``benchmarks/bench_train.py --part memory`` compares it
  with allocation peaks measured on the CPU.
- :func:`training_flops`: floating-point operations of one forward + backward pass, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (multiply–adds count as 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from .unet import ReDiffuseUNet, ResBlock, count_parameters, set_grad_checkpoint

__all__ = ["parameter_counts", "MemoryEstimate", "memory_estimate", "measured_cpu_peak", "training_flops",
           "format_bytes"]

GiB = 2**30


def _build(model_kwargs: dict, device: str = "meta") -> ReDiffuseUNet:
    # built on the CPU and then moved: the filter bases are computed with many small tensor ops,
    # which the meta device runs an order of magnitude slower than the CPU does
    return ReDiffuseUNet(**model_kwargs).to(device)


def parameter_counts(model_kwargs: dict) -> dict[str, int]:
    """Trainable parameters of ``ReDiffuseUNet(**model_kwargs)``: ``"model"``, its ``"plain"`` twin and,
    when the model is Rot-E with the (equivariant) per-field time bias, ``"per_channel_time_bias"``
    (the official code's variant, which the paper counts)."""
    out = {"model": count_parameters(_build(model_kwargs))}
    out["plain"] = count_parameters(_build({**model_kwargs, "conv": "plain"}))
    if model_kwargs.get("conv", "bconv") != "plain" and model_kwargs.get("time_bias", "field") == "field":
        out["per_channel_time_bias"] = count_parameters(_build({**model_kwargs, "time_bias": "channel"}))
    return out


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step on one process (fp32 tensors; see :func:`memory_estimate`)."""

    state: int  # weights, gradients, AdamW's two moments, the EMA copy, buffers of model and EMA
    ema: int  # the EMA part of ``state`` (a plain optimiser loop without EMA has ``state - ema``)
    activations: int  # tensors saved for the backward pass (one count per storage)
    transient: int  # allowance for the gradient buffers of the largest activation during backward
    batch: int
    crop: int
    grad_checkpoint: bool

    @property
    def peak(self) -> int:
        return self.state + self.activations + self.transient


def _saved_storages(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> tuple[dict, dict, dict]:
    """One forward in training mode; returns ``{storage: bytes}`` saved outside any ResBlock, the
    same per ResBlock (``{block_index: {...}}``), and the storages of every ResBlock's inputs."""
    outside: dict[int, int] = {}
    inside: dict[int, dict[int, int]] = {}
    inputs: dict[int, int] = {}
    active: list[int] = []
    blocks = [m for m in net.modules() if isinstance(m, ResBlock)]
    index = {id(b): i for i, b in enumerate(blocks)}

    def key(tensor: torch.Tensor) -> tuple[int, int]:
        st = tensor.untyped_storage()
        return st._cdata, st.nbytes()  # the storage object's address identifies it, even on meta

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        k, n = key(tensor)
        (inside.setdefault(active[-1], {}) if active else outside)[k] = n
        return tensor

    def pre(module, args):
        active.append(index[id(module)])
        for a in args:
            if isinstance(a, torch.Tensor):
                k, n = key(a)
                inputs[k] = n

    def post(module, args, output):
        active.pop()

    handles = [h for b in blocks for h in (b.register_forward_pre_hook(pre), b.register_forward_hook(post))]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            net.train()(x, t)
    finally:
        for h in handles:
            h.remove()
    return outside, inside, inputs


def memory_estimate(model_kwargs: dict, batch: int, crop: int, *, grad_checkpoint: bool = False,
                    ema: bool = True) -> MemoryEstimate:
    """Estimated peak memory of one training step of ``ReDiffuseUNet(**model_kwargs)`` on ``batch``
    crops of ``crop``² pixels (per process), in fp32.

    Without checkpointing the activations are every storage autograd saves. With
    ``grad_checkpoint`` each ResBlock keeps only its inputs, and during the backward pass one block
    at a time is recomputed: what is saved outside the blocks, plus the blocks' inputs, plus the
    largest single block's inside. Mixed precision (bf16/fp16 autocast) keeps most convolution
    activations in 16 bits, roughly halving the activation part.
    """
    if batch < 1 or crop < 1:
        raise ValueError(f"batch and crop must be at least 1, got batch {batch}, crop {crop}")
    net = _build(model_kwargs)
    if crop < net.min_size:
        raise ValueError(f"crop {crop} is below this U-Net's minimum input of {net.min_size} px")
    x = torch.empty(batch, model_kwargs.get("in_channels", 3), crop, crop, device="meta")
    t = torch.zeros(batch, dtype=torch.long, device="meta")
    outside, inside, inputs = _saved_storages(net, x, t)
    if grad_checkpoint:
        kept = {**outside, **inputs}
        largest_block = max((sum(v.values()) for v in inside.values()), default=0)
        activations = sum(kept.values()) + largest_block
        largest = max([*kept.values(), *(n for v in inside.values() for n in v.values()), 0])
    else:
        everything = dict(outside)
        for v in inside.values():
            everything.update(v)
        activations = sum(everything.values())
        largest = max(everything.values(), default=0)
    p_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    b_bytes = sum(b.numel() * b.element_size() for b in net.buffers())
    ema_bytes = (p_bytes + b_bytes) if ema else 0
    state = 4 * p_bytes + b_bytes + ema_bytes  # weights, grads, AdamW exp_avg and exp_avg_sq
    return MemoryEstimate(state=state, ema=ema_bytes, activations=activations, transient=2 * largest,
                          batch=batch, crop=crop, grad_checkpoint=grad_checkpoint)


def measured_cpu_peak(model_kwargs: dict, batch: int, crop: int, *, grad_checkpoint: bool = False,
                      seed: int = 0) -> int:
    """Peak bytes allocated by a real training step on the CPU, to check :func:`memory_estimate`.

    Runs the trainer's step (forward, backward, AdamW, EMA copy present) twice and records the
    second with ``torch.profiler``'s memory events: the peak of the running sum of allocations,
    plus what stays allocated between steps (weights, EMA, AdamW moments, buffers).
    """
    torch.manual_seed(seed)
    net = ReDiffuseUNet(**model_kwargs).train()
    set_grad_checkpoint(net, grad_checkpoint)
    ema = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.AdamW(net.parameters())
    x = torch.randn(batch, model_kwargs.get("in_channels", 3), crop, crop)
    t = torch.zeros(batch, dtype=torch.long)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        net(x, t).square().mean().backward()
        opt.step()

    step()  # creates AdamW's moments
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    running = peak = 0
    for _, n in events:
        running += n
        peak = max(peak, running)
    p_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    b_bytes = sum(b.numel() * b.element_size() for b in net.buffers())
    resting = 3 * p_bytes + b_bytes + sum(e.numel() * e.element_size() for e in ema) + b_bytes
    return resting + peak


def training_flops(model_kwargs: dict, batch: int, crop: int, device: str = "meta") -> int:
    """Floating-point operations of one forward + backward pass at ``batch`` × ``crop``² (the
    optimiser step and the loss are negligible next to the convolutions)."""
    net = _build(model_kwargs, device)
    x = torch.randn(batch, model_kwargs.get("in_channels", 3), crop, crop, device=device)
    t = torch.zeros(batch, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter:
        net.train()(x, t).square().mean().backward()
    return int(counter.get_total_flops())


def format_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``; binary units, three significant figures."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} TiB"
