#!/usr/bin/env bash
# One prepared GPU check of the paper's configuration, sized for one H100/H200 in under 8 minutes.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default OUT_DIR: outputs/gpu-check)
#
# Measures, each step under its own time limit so that the whole stays below 8 minutes:
#   1. the paper preset's estimates (parameters, memory, FLOPs) — `rediffuse train --preset paper --dry-run`
#   2. training speed of the paper preset (batch 32 × 256², ε, official layout) for 30 steps each in
#      fp32 (TF32 off), tf32, bf16, fp16 and bf16 with gradient checkpointing: steps/s, the fraction of
#      the time spent waiting for data, peak GPU memory; bf16 once more with no DataLoader workers
#   3. a 300-step bf16 run of the paper preset (8 workers) — the model step 4 checks
#   4. the quarter-turn error of that model's fused image (DDIM 20 steps, 256² pair) with TF32 off
#      (as rediffuse fuses) and on (what PyTorch's default cuDNN setting would give)
#   5. fusion time: a 520² pair and a 4000×3000 pair with the shipped weight-map model (3 steps), and
#      a 520² pair with the 300-step paper model (DDIM 50 and the paper's 2000-step sampler)
# Results: OUT_DIR/gpu_check.md (a summary) and one log/JSON per step. Training data are synthetic pairs
# from the photos scikit-image ships, so nothing outside the repository is needed.
#
# To rehearse the script's mechanics without a GPU (tiny sizes, minutes on a CPU):
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_TRAIN="--batch 2 --crop 32 --steps 2 --workers 0" \
#   GPU_CHECK_FUSE="--steps 1" bash benchmarks/gpu_check.sh outputs/gpu-check-rehearsal
set -u
cd "$(dirname "$0")/.."
OUT="${1:-outputs/gpu-check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
read -r -a TRAIN_EXTRA <<< "${GPU_CHECK_TRAIN:-}"  # appended to every training command (a rehearsal's sizes)
read -r -a FUSE_EXTRA <<< "${GPU_CHECK_FUSE:-}"
MD="$OUT/gpu_check.md"
T0=$(date +%s)
: > "$MD"
DEADLINE=${GPU_CHECK_SECONDS:-470}  # the whole script; each step gets what is left, at most its own limit
note() { echo "$*" | tee -a "$MD"; }
elapsed() { echo $(( $(date +%s) - T0 )); }
limit() {  # the smaller of $1 and the time left; 1 (a step that stops at once) when under 15 s are left
    local left=$(( DEADLINE - $(elapsed) ))
    if (( left < 15 )); then echo 1; elif (( left < $1 )); then echo "$left"; else echo "$1"; fi
}

note "# GPU check of the paper preset ($(date -u +%Y-%m-%dT%H:%MZ))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/GPU: /' | tee -a "$MD"
if ! "$PY" -c "import torch, rediffuse; assert '$DEVICE' == 'cpu' or torch.cuda.is_available(), 'PyTorch sees no GPU'" 2>>"$OUT/setup.log"; then
    note "setup failed: $(tail -1 "$OUT/setup.log") (pip install -e . with a CUDA build of torch first)"
    exit 1
fi
"$PY" -c "import torch; c = torch.cuda.is_available(); print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'bf16', c and torch.cuda.is_bf16_supported())" | tee -a "$MD"

note ""
note "## 1. Estimates (dry run)"
timeout "$(limit 60)" "$PY" -m rediffuse train --preset paper --dry-run 2>&1 | tee -a "$MD"

# ---------------------------------------------------------------- 2. speed and memory per precision
note ""
note "## 2. Paper preset, 30 steps each (batch 32 × 256², synthetic pairs)"
note ""
note "| precision | checkpointing | workers | steps/s | waiting for data | peak memory |"
note "|---|---|---|---|---|---|"
speed() {  # name, timeout, extra flags...
    local name=$1 secs; secs=$(limit "$2"); shift 2
    local dir="$OUT/speed-$name"
    rm -rf "$dir"
    if (( secs <= 1 )); then note "| $* | | | skipped: out of time | | |"; return; fi
    timeout "$secs" "$PY" -m rediffuse train --preset paper --synthetic 256 --steps 30 --ckpt-every 1000 \
        --device "$DEVICE" -o "$dir" "$@" "${TRAIN_EXTRA[@]}" > "$OUT/speed-$name.log" 2>&1
    local rc=$?
    "$PY" - "$dir" "$rc" "$*" >> "$MD" <<'EOF'
import json, sys
from pathlib import Path
d, rc, flags = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else None
if s is None:
    print(f"| {flags} | | | failed (exit {rc}{', time limit' if rc == 124 else ''}) | | |")
else:
    print(f"| {s['precision']} | {'yes' if '--grad-checkpoint' in flags else 'no'} | {s['workers']} | "
          f"{s['steps_per_s']:.2f} | {100 * s['data_wait_fraction']:.0f} % | "
          f"{s.get('peak_memory_bytes', 0) / 2**30:.1f} GiB |")
EOF
    tail -1 "$MD"
}
speed bf16 50 --precision bf16 --workers 8
speed fp32 75 --precision fp32 --workers 8
speed tf32 50 --precision tf32 --workers 8
speed fp16 50 --precision fp16 --workers 8
speed bf16-ckpt 50 --precision bf16 --workers 8 --grad-checkpoint
speed bf16-w0 50 --precision bf16 --workers 0
note "(elapsed $(elapsed) s)"

# ---------------------------------------------------------------- 3. a few hundred steps
note ""
note "## 3. 300 steps, bf16, 8 workers"
RUN="$OUT/paper-300"
rm -rf "$RUN"
timeout "$(limit 120)" "$PY" -m rediffuse train --preset paper --synthetic 512 --steps 300 --ckpt-every 100 --precision bf16 \
    --workers 8 --device "$DEVICE" -o "$RUN" "${TRAIN_EXTRA[@]}" > "$OUT/paper-300.log" 2>&1
note "exit $?: $(tail -1 "$OUT/paper-300.log")"
note "(elapsed $(elapsed) s)"

# ---------------------------------------------------------------- 4. quarter-turn error, TF32 off and on
note ""
note "## 4. Quarter-turn error of the fused image (grey levels, DDIM 20 steps, 256² pair)"
timeout "$(limit 60)" "$PY" - "$RUN/last.pt" "$DEVICE" >> "$MD" 2>> "$OUT/equivariance.log" <<'EOF'
import sys
import torch
from rediffuse.data import SyntheticPairs
from rediffuse.diffusion import get_sampler
from rediffuse.fuse import FusionModel
from rediffuse.groups import rotate_image
from rediffuse.runtime import tf32_precision

dev = sys.argv[2]
fm = FusionModel(sys.argv[1], device=dev)
size = 256 if dev == "cuda" else 48  # a rehearsal on the CPU stays small
pair = SyntheticPairs(1, size=size, seed=7)[0]
cond = torch.cat([pair["A"], pair["B"]])[None].to(dev)
x_T = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(0)).to(dev)

def fuse(c, x):  # the sampler without FusionModel.sample, which would switch TF32 off
    return get_sampler("ddim")(fm.model, c, x.shape, fm.schedule, 20, generator=torch.Generator().manual_seed(0),
                               x_T=x, progress=False, prediction=fm.prediction)

print("| TF32 | 90° | 180° | 270° |\n|---|---|---|---|")
for allow in (False, True):
    with torch.no_grad(), tf32_precision(allow):
        base = fuse(cond, x_T)
        errs = [float(127.5 * (fuse(rotate_image(cond, k), rotate_image(x_T, k)) - rotate_image(base, k)).abs().max())
                for k in (1, 2, 3)]
    print(f"| {'on' if allow else 'off'} | " + " | ".join(f"{e:.2e}" for e in errs) + " |")
EOF
note "(exit $?; elapsed $(elapsed) s)"

# ---------------------------------------------------------------- 5. fusion time
note ""
note "## 5. Fusion time (rediffuse fuse, wall seconds including start-up)"
timeout "$(limit 40)" "$PY" - "$OUT" <<'EOF'
import sys
import numpy as np
from PIL import Image
from rediffuse.data import SyntheticPairs
out = sys.argv[1]
for size, name in ((520, "520"), ((3000, 4000), "4000x3000")):
    s = SyntheticPairs(1, size=520, seed=3, y_only=False).sample(0)
    for key in ("A", "B"):
        img = Image.fromarray(s[key])
        if name != "520":
            img = img.resize((4000, 3000), Image.BICUBIC)
        img.save(f"{out}/pair-{name}-{key}.png")
EOF
fuse_time() {  # label, limit, size, flags...
    local label=$1 secs size=$3; secs=$(limit "$2"); shift 3
    if (( secs <= 1 )); then note "- $label, $size: skipped (out of time)"; return; fi
    local t=$(date +%s%N)
    timeout "$secs" "$PY" -m rediffuse fuse "$OUT/pair-$size-A.png" "$OUT/pair-$size-B.png" \
        -o "$OUT/fused-$size-$label.png" --device "$DEVICE" "$@" "${FUSE_EXTRA[@]}" > "$OUT/fuse-$size-$label.log" 2>&1
    local rc=$? ms=$(( ($(date +%s%N) - t) / 1000000 ))
    note "- $label, $size: $(( ms / 1000 )).$(printf %03d $(( ms % 1000 ))) s (exit $rc)"
}
fuse_time shipped-3steps 40 520
fuse_time shipped-3steps 90 4000x3000
fuse_time paper300-ddim50 40 520 --checkpoint "$RUN/last.pt" --sampler ddim --steps 50
fuse_time paper300-2000steps 100 520 --checkpoint "$RUN/last.pt"
note ""
note "total $(elapsed) s"
