"""Shared preamble of the benchmark scripts: ``import _common`` before numpy or torch.

Importing it pins the BLAS/OpenMP thread pools to one thread (unless the environment already says
otherwise: the pools read these variables once, when numpy/torch load) and puts the repository on
``sys.path``, so the scripts run from a plain checkout as ``python benchmarks/bench_*.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

__all__ = ["REPO_ROOT", "parser", "setup", "write_json", "child_env", "run_fuse_cli"]


def parser(doc: str, *, threads: int = 1) -> argparse.ArgumentParser:
    """An argument parser described by the script's docstring, with ``--threads`` and ``--json``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("common benchmark options")
    g.add_argument("--threads", type=int, default=threads, metavar="N",
                   help="PyTorch CPU threads; 1 is the fastest for small models on 2-core machines "
                        "(default: %(default)s)")
    g.add_argument("--json", default=None, metavar="OUT.json", help="also write the results here")
    return p


def setup(args: argparse.Namespace) -> str:
    """Apply ``args.threads``; returns the device (``args.device`` resolved, else ``"cpu"``)."""
    from rediffuse.runtime import setup as runtime_setup

    return runtime_setup(getattr(args, "device", "cpu"), args.threads)


def write_json(path: str | os.PathLike | None, results: dict) -> None:
    """Write ``results`` to ``path`` (nothing when it is empty), creating its folder."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))


def child_env() -> dict[str, str]:
    """Environment for a child ``python -m rediffuse ...`` that finds this checkout even uninstalled."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_fuse_cli(inputs, output, *, threads: int, checkpoint, steps: int | None = None,
                 extra: tuple[str, ...] = ()) -> tuple[int, float, float, float]:
    """Run ``python -m rediffuse fuse INPUTS -o OUTPUT`` in a child process on the CPU; returns
    ``(exit code, wall seconds, peak resident memory in kB, CPU seconds)`` of that child alone (CPU:
    user + system time, which a busy shared machine inflates far less than the wall time)."""
    cmd = [sys.executable, "-m", "rediffuse", "fuse", *map(str, inputs), "-o", str(output), *extra,
           "--device", "cpu", "--threads", str(threads), "--checkpoint", str(checkpoint), "-q"]
    if steps:
        cmd += ["--steps", str(steps)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=child_env())
    _, status, usage = os.wait4(proc.pid, 0)
    return (os.waitstatus_to_exitcode(status), time.perf_counter() - t0, float(usage.ru_maxrss),  # kB on Linux
            usage.ru_utime + usage.ru_stime)
