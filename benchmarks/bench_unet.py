"""Training and sampling speed of the Rot-E U-Net against its plain twin, side by side in one run.

    python benchmarks/bench_unet.py                  # small config (CPU), both models
    python benchmarks/bench_unet.py --paper --device cuda --json OUT.json

Prints a markdown table: training steps/s (same data, batch, crop, equal total channels) and seconds
per 520×520 pair for 20-step and 2000-step sampling. The 2000-step time is measured on
``--measure-steps`` steps and scaled (every step costs the same network evaluation) unless
``--full-2000`` is given; the table says which.
"""
from __future__ import annotations

import _common  # first: thread pools and sys.path

import time

import torch

from rediffuse.diffusion import get_schedule, training_loss, ddim_sampler, posterior_mean_sampler
from rediffuse.unet import ReDiffuseUNet, count_parameters


def train_speed(model, crop, batch, steps, device):
    sched = get_schedule("cosine", 2000).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, 1, crop, crop, generator=g).to(device) * 2 - 1
    cond = torch.rand(batch, 2, crop, crop, generator=g).to(device) * 2 - 1
    model.train()

    def step():
        loss = training_loss(model, x0, cond, sched, generator=g, prediction="eps")
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


@torch.no_grad()
def sample_seconds(model, size, steps, device):
    model.eval()
    sched = get_schedule("cosine", 2000).to(device)
    cond = torch.zeros(1, 2, size, size, device=device)
    g = torch.Generator().manual_seed(0)
    sampler = ddim_sampler if steps < 2000 else posterior_mean_sampler
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    sampler(model, cond, (1, 1, size, size), sched, steps, generator=g, prediction="eps")
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = _common.parser(__doc__)
    ap.add_argument("--paper", action="store_true", help="paper configuration (base 64, ×[1,2,4,8], 16 groups)")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=520)
    ap.add_argument("--measure-steps", type=int, default=40, help="steps timed to estimate the 2000-step cost")
    ap.add_argument("--full-2000", action="store_true", help="really run all 2000 sampling steps")
    args = ap.parse_args(argv)
    args.device = _common.setup(args)
    meta = _common.run_meta(args.threads)
    cfg = dict(base=64, mults=(1, 2, 4, 8), groups=16) if args.paper else dict(base=16, mults=(1, 2, 4), groups=4)
    rows = []
    for conv in ("bconv", "plain"):
        torch.manual_seed(0)
        model = ReDiffuseUNet(conv=conv, **cfg).to(args.device)
        sps = train_speed(model, args.crop, args.batch, args.train_steps, args.device)
        s20 = sample_seconds(model, args.size, 20, args.device)
        if args.full_2000:
            s2000, how = sample_seconds(model, args.size, 2000, args.device), "measured"
        else:
            s2000 = sample_seconds(model, args.size, args.measure_steps, args.device) * 2000 / args.measure_steps
            how = f"{args.measure_steps} steps ×{2000 // args.measure_steps}"
        rows.append((conv, count_parameters(model), sps, s20, s2000, how))
    print(f"\nconfig {cfg}, device {args.device}, threads {args.threads}, train crop {args.crop} batch {args.batch}\n")
    print("| model | parameters | train steps/s | s/pair 20 steps | s/pair 2000 steps | 2000-step timing |")
    print("|---|---|---|---|---|---|")
    for conv, n, sps, s20, s2000, how in rows:
        print(f"| {conv} | {n:,d} | {sps:.2f} | {s20:.1f} | {s2000:.0f} | {how} |")
    print(f"\nRot-E / plain training speed ratio: {rows[0][2] / rows[1][2]:.2f}")
    cols = [("model", "model", ""), ("parameters", "parameters", ",d"), ("train_steps_per_s", "train steps/s", ".2f"),
            ("s_per_pair_20", "s/pair 20 steps", ".1f"), ("s_per_pair_2000", "s/pair 2000 steps", ",.0f"),
            ("timing_2000", "2000-step timing", "")]
    rows = [dict(id=conv, model=conv, parameters=n, train_steps_per_s=sps, s_per_pair_20=s20, s_per_pair_2000=s2000,
                 timing_2000=how) for conv, n, sps, s20, s2000, how in rows]
    _common.write_record(args.json, {"unet-speed": _common.table(cols, rows)},
                         values={"train_ratio": rows[0]["train_steps_per_s"] / rows[1]["train_steps_per_s"],
                                 "size": args.size, "crop": args.crop, "batch": args.batch},
                         results={"config": cfg, "device": args.device, "threads": args.threads, "crop": args.crop,
                                  "batch": args.batch, "rows": rows}, meta=meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
