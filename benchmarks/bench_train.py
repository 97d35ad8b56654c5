"""Does the training pipeline keep the accelerator busy, and what does the paper's model cost?

    python benchmarks/bench_train.py --part data      # pairs/s per worker, data-wait fraction, 0 and 2 workers
    python benchmarks/bench_train.py --part memory    # estimated peak memory vs measured CPU peaks; the table
    python benchmarks/bench_train.py --part flops     # FLOPs per step of the paper preset, GPU time estimate
    python benchmarks/bench_train.py --part all --json OUT.json

``data``: the batches of ``rediffuse.train.StepBatches`` (each a pure function of seed and step) built by
a DataLoader with 0 and with 2 worker processes — first alone (pairs/s, and per worker), then feeding a
short training run of the small model (the fraction of the step time spent waiting for the next batch).
Sources: ``--source layered`` (the layered defocus model on the shared photos; falls back to synthetic
pairs when they are absent) or ``synthetic`` (scikit-image photos, rendered once and cached).

``memory``: ``rediffuse.resources.memory_estimate`` against the allocation peak of a real training step
on the CPU (``measured_cpu_peak``) for the paper preset's network at small sizes, then the estimate for
the paper preset at batch × crop × gradient checkpointing, and which of 24/48/80 GB GPUs it fits.

``flops``: ``FlopCounterMode`` on the CPU at batch 1 and 2 of 64² crops, scaled linearly to batch 32 of
256² (checked against a count on the meta device at full size), and the time of the paper preset's
training at an assumed sustained throughput (``--tflops``).
"""
from __future__ import annotations

import _common  # first: thread pools and sys.path

import tempfile
import time

import torch
from torch.utils.data import DataLoader

from rediffuse.paths import dataset_dir
from rediffuse.resources import format_bytes, measured_cpu_peak, memory_estimate, training_flops
from rediffuse.train import PRESETS, StepBatches, TrainConfig, build_dataset, model_kwargs, preset_config, train
from rediffuse.unet import ReDiffuseUNet, set_grad_checkpoint

GiB = 2**30
GPUS_GB = (24, 48, 80)  # GPU memory is sold in decimal gigabytes: 24 GB = 22.4 GiB


def data_config(source: str, crop: int, batch: int) -> TrainConfig:
    if source == "layered" and dataset_dir("photos") is None:
        print("shared photos not found: using synthetic pairs")
        source = "synthetic"
    data = {"layered": 20_000} if source == "layered" else {"synthetic": 2000}
    return preset_config("small", crop=crop, batch=batch, **data)


def loader_rate(cfg: TrainConfig, workers: int, steps: int) -> float:
    """Pairs per second a DataLoader with ``workers`` processes delivers (no training)."""
    dataset = build_dataset(cfg)
    if workers:
        for part in dataset.datasets:
            if hasattr(part, "warm"):
                part.warm()
    kw = dict(persistent_workers=True, prefetch_factor=2) if workers else {}
    loader = DataLoader(StepBatches(dataset, cfg.batch, cfg.seed, cfg.T), batch_size=None,
                        sampler=range(steps + 2), num_workers=workers, **kw)
    it = iter(loader)
    next(it), next(it)  # start-up (worker processes, first renders) is not the rate
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * cfg.batch / (time.perf_counter() - t0)


def part_data(args) -> dict:
    out = {}
    cfg = data_config(args.source, args.crop, args.batch)
    print(f"\n### Data pipeline ({'layered' if cfg.layered else 'synthetic'} pairs, batch {cfg.batch} × {cfg.crop}², "
          f"small model, {args.threads} torch thread(s))\n")
    print("| workers | pairs/s (loader alone) | pairs/s per worker | training steps/s | waiting for data |")
    print("|---|---|---|---|---|")
    for workers in (0, 2):
        rate = loader_rate(cfg, workers, args.data_steps)
        with tempfile.TemporaryDirectory() as tmp:
            s = train(TrainConfig(**{**cfg.__dict__, "steps": args.train_steps, "workers": workers,
                                     "ckpt_every": 10**6}), tmp, progress=False)
        per = rate / max(workers, 1)
        out[workers] = {"pairs_per_s": rate, "pairs_per_s_per_worker": per, "steps_per_s": s["steps_per_s"],
                        "data_wait_fraction": s["data_wait_fraction"]}
        print(f"| {workers} | {rate:.1f} | {per:.1f} | {s['steps_per_s']:.2f} "
              f"| {100 * s['data_wait_fraction']:.0f} % |")
    return out


def step_seconds(kw: dict, batch: int, crop: int, grad_checkpoint: bool, repeat: int = 3) -> float:
    """Median seconds of a forward + backward + AdamW step of ``ReDiffuseUNet(**kw)`` on the CPU."""
    torch.manual_seed(0)
    net = ReDiffuseUNet(**kw).train()
    set_grad_checkpoint(net, grad_checkpoint)
    opt = torch.optim.AdamW(net.parameters())
    x, t = torch.randn(batch, 3, crop, crop), torch.zeros(batch, dtype=torch.long)
    times = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        net(x, t).square().mean().backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[repeat // 2]


def part_memory(args) -> dict:
    paper = preset_config("paper")
    kw = model_kwargs(paper)
    out = {"checks": [], "table": []}
    print("\n### Memory: estimate against the measured CPU allocation peak (paper preset's network)\n")
    print("| batch × crop | checkpointing | estimated | measured | ratio |")
    print("|---|---|---|---|---|")
    for batch, crop in ((1, 32), (2, 64), (2, 96)):
        for ckpt in (False, True):
            est = memory_estimate(kw, batch, crop, grad_checkpoint=ckpt).peak
            got = measured_cpu_peak(kw, batch, crop, grad_checkpoint=ckpt)
            out["checks"].append({"batch": batch, "crop": crop, "grad_checkpoint": ckpt, "estimate": est,
                                  "measured": got})
            print(f"| {batch} × {crop}² | {'yes' if ckpt else 'no'} | {format_bytes(est)} | {format_bytes(got)} "
                  f"| {est / got:.2f} |")
    out["step_seconds"] = {}
    for ckpt in (False, True):  # what checkpointing costs: the recomputed forward
        out["step_seconds"][ckpt] = step_seconds(kw, 2, 96, ckpt)
    plain, ckpt = out["step_seconds"][False], out["step_seconds"][True]
    print(f"\nOne training step at 2 × 96² on the CPU: {plain:.2f} s, with gradient checkpointing {ckpt:.2f} s "
          f"(×{ckpt / plain:.2f})")
    print("\n### Estimated peak memory of the paper preset (fp32, per GPU; fits: estimate × 1.1 + 1.5 GiB for "
          "the CUDA context, workspaces and fragmentation)\n")
    print("| batch × crop | no checkpointing | gradient checkpointing |")
    print("|---|---|---|")
    for batch in (16, 32, 64):
        for crop in (128, 256, 384):
            cells = []
            for ckpt in (False, True):
                est = memory_estimate(kw, batch, crop, grad_checkpoint=ckpt).peak
                fits = [f"{g}" for g in GPUS_GB if est * 1.1 + 1.5 * GiB <= g * 1e9]
                cells.append(f"{est / GiB:.1f} GiB ({'fits ' + '/'.join(fits) + ' GB' if fits else 'fits none'})")
                out["table"].append({"batch": batch, "crop": crop, "grad_checkpoint": ckpt, "estimate": est})
            print(f"| {batch} × {crop}² | {cells[0]} | {cells[1]} |")
    return out


def part_flops(args) -> dict:
    kw = model_kwargs(preset_config("paper"))
    t0 = time.perf_counter()
    one, two = training_flops(kw, 1, 64, device="cpu"), training_flops(kw, 2, 64, device="cpu")
    per_image = two - one  # per 64² crop; the rest (filter expansion) is paid once per step
    fixed = one - per_image
    paper = PRESETS["paper"]
    batch, crop, steps = paper["batch"], paper["crop"], paper["steps"]
    scaled = fixed + per_image * batch * (crop / 64) ** 2
    cpu_s = time.perf_counter() - t0
    meta = training_flops(kw, batch, crop)
    hours = steps * scaled / (args.tflops * 1e12) / 3600
    print(f"\n### Arithmetic of the paper preset (FlopCounterMode on the CPU, {cpu_s:.0f} s)\n")
    print(f"- per 64² crop, forward + backward: {per_image / 1e9:.1f} GFLOP; per step, independent of the batch: "
          f"{fixed / 1e9:.2f} GFLOP")
    print(f"- per step at batch {batch} × {crop}²: {scaled / 1e12:.2f} TFLOP scaled "
          f"(meta-device count at full size: {meta / 1e12:.2f} TFLOP)")
    print(f"- {steps:,} steps at a sustained {args.tflops:.0f} TFLOP/s: {hours:.1f} h")
    return {"flops_per_64_crop": per_image, "flops_fixed_per_step": fixed, "flops_per_step": scaled,
            "flops_per_step_meta": meta, "assumed_tflops": args.tflops, "steps": steps, "hours": hours}


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--part", choices=["data", "memory", "flops", "all"], default="all")
    p.add_argument("--source", choices=["layered", "synthetic"], default="layered")
    p.add_argument("--crop", type=int, default=128, help="data part: crop side (default: %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="data part: batch (default: %(default)s)")
    p.add_argument("--data-steps", type=int, default=20, help="data part: batches timed per setting")
    p.add_argument("--train-steps", type=int, default=20, help="data part: training steps per setting")
    p.add_argument("--tflops", type=float, default=200.0,
                   help="assumed sustained training throughput of the GPU in TFLOP/s (default: %(default)s, "
                        "about a quarter of an H100's dense bf16 peak)")
    args = p.parse_args()
    _common.setup(args)
    torch.manual_seed(0)
    results = {}
    for part, fn in (("data", part_data), ("memory", part_memory), ("flops", part_flops)):
        if args.part in (part, "all"):
            results[part] = fn(args)
    _common.write_json(args.json, results)


if __name__ == "__main__":
    main()
