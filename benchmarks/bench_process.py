"""The whole process of fusing one pair, as a user times it: ``rediffuse fuse a.jpg b.jpg -o f.png``
from the shell prompt back to it, next to enfuse on the same pair, and where the time goes.

    python benchmarks/bench_process.py [--repeats 3] [--threads 2] [--json docs/results/process.json]

The pair is Lytro's lytro-01 (520×520) when ../shared is present, else a synthetic 520×520 pair.
Every command runs as a child process, the rows taking turns ``--repeats`` times (a noisy machine
slows all of them alike); reported: the median wall time. Rows:

- ``rediffuse fuse`` with the defaults (``--threads``), and with ``--speed fast``;
- enfuse with its focus-stacking settings (``rediffuse.peers.ENFUSE_FLAGS``) on the pair as it is;
- what every run of the command pays before it reads a pixel: the interpreter (``python -c pass``),
  ``import torch``, and ``import rediffuse.fuse``;
- one child that times its own phases: imports, loading the default model, the first fusion in the
  process (the library's ``fuse``, no alignment) and a second one (the first pays for setting up
  the convolutions of each image size).

Run it on an idle machine.
"""
from __future__ import annotations

import _common  # noqa: F401  (thread pools and sys.path first)

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_threads import _pair
from rediffuse.peers import ENFUSE_FLAGS

#: A child that times its phases and prints them as one JSON line (argv: A, B, threads).
PHASES = r"""
import json, sys, time
t = [time.perf_counter()]
import torch
t.append(time.perf_counter())
import rediffuse.fuse as F
from rediffuse.imageio import read_image
t.append(time.perf_counter())
torch.set_num_threads(int(sys.argv[3]))
model = F.FusionModel()
t.append(time.perf_counter())
frames = [read_image(p) for p in sys.argv[1:3]]
F.fuse(frames, model)
t.append(time.perf_counter())
F.fuse(frames, model)
t.append(time.perf_counter())
names = ["import torch", "import rediffuse.fuse (after torch)", "load the default model",
         "first fusion (read + fuse)", "second fusion"]
print(json.dumps({n: b - a for n, a, b in zip(names, t, t[1:])}))
"""


def _wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=_common.child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = _common.parser(__doc__, threads=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench_process_") as tmp:
        tmp = Path(tmp)
        pair = [str(x) for x in _pair(tmp)]
        fuse = [py, "-m", "rediffuse", "fuse", *pair, "-o", str(tmp / "f.png"), "-q", "--threads", str(args.threads)]
        commands = {
            "rediffuse fuse (defaults)": fuse,
            "rediffuse fuse --speed fast": fuse + ["--speed", "fast"],
            "python -c pass": [py, "-c", "pass"],
            "python -c 'import torch'": [py, "-c", "import torch"],
            "python -c 'import rediffuse.fuse'": [py, "-c", "import rediffuse.fuse"],
        }
        enfuse = shutil.which("enfuse")
        if enfuse:
            commands["enfuse"] = [enfuse, *ENFUSE_FLAGS, f"--output={tmp / 'e.tif'}", *pair]
        else:
            print("enfuse is not installed (Debian: apt-get install enfuse): its row is left out", file=sys.stderr)
        walls: dict[str, list[float]] = {k: [] for k in commands}
        phases: list[dict[str, float]] = []
        for r in range(args.repeats):
            for name, cmd in commands.items():
                walls[name].append(_wall(cmd))
            out = subprocess.run([py, "-c", PHASES, *pair, str(args.threads)], check=True, env=_common.child_env(),
                                 capture_output=True, text=True).stdout
            phases.append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r + 1} of {args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in walls.items()),
                  flush=True)
    rows = [{"id": k, "command": k, "wall_s": statistics.median(v), "runs": v} for k, v in walls.items()]
    phase_rows = [{"id": k, "phase": k, "wall_s": statistics.median(ph[k] for ph in phases)} for k in phases[0]]
    for row in rows + phase_rows:
        print(f"{row['id']:<40} {row['wall_s']:6.2f} s")
    values = {"fuse_wall_s": statistics.median(walls["rediffuse fuse (defaults)"]),
              "import_torch_s": statistics.median(walls["python -c 'import torch'"])}
    if enfuse:
        values["enfuse_wall_s"] = statistics.median(walls["enfuse"])
    _common.write_record(args.json, {
        "process": _common.table([("command", "command", ""), ("wall_s", "wall s (median)", ".2f")], rows),
        "phases": _common.table([("phase", "phase, in one process", ""), ("wall_s", "wall s (median)", ".2f")],
                                phase_rows),
    }, values=values, meta=_common.run_meta(args.threads))


if __name__ == "__main__":
    main()
