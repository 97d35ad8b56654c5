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

__all__ = ["REPO_ROOT", "RESULTS_DIR", "parser", "setup", "write_json", "run_meta", "table", "write_record",
           "child_env", "run_fuse_cli"]

RESULTS_DIR = REPO_ROOT / "docs" / "results"  # where the records behind docs/results.md live
# when the run started (the first import of this module) and how busy the machine was then
_STARTED = (time.gmtime(), os.getloadavg()[0] if hasattr(os, "getloadavg") else None)


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
    """Write ``results`` to ``path`` (nothing when it is empty), creating its folder. A dict that is
    not yet a record (:func:`write_record`) is wrapped in one: the run's metadata, no tables, and
    ``results`` as its raw results, so every benchmark's JSON says how and where it was made."""
    if not path:
        return
    if "schema" not in results:
        torch = sys.modules.get("torch")
        meta = run_meta(torch.get_num_threads() if torch is not None else None)
        results = {"schema": 1, **meta, "tables": {}, "values": {}, "results": results}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def run_meta(threads: int | None = None) -> dict:
    """What ``rediffuse.report`` prints under a table: the command as typed, the UTC date and the
    machine's load average when the run started, the machine (CPU, cores, threads) and the git commit
    (``git_dirty`` when the working tree differed from it)."""
    import platform
    import shlex

    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO_ROOT)
    except ValueError:
        pass
    started, load = _STARTED
    machine = f"{_cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"
    if load is not None:
        machine += f", load average {load:.2f} at the start"
    if threads is not None:
        machine += f", {threads} torch thread{'s' if threads != 1 else ''}"
    return {"command": shlex.join(["python", str(script), *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", started),
            "machine": machine,
            "git": _git("rev-parse", "--short=7", "HEAD") or "unknown",
            "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "provenance": "measured"}


def table(columns: list[tuple[str, str, str]], rows: list[dict], row_key: str | None = None) -> dict:
    """A table of the common record schema: ``columns`` are ``(key, label, format)`` with a Python
    format spec (``".4f"``, ``",d"``; ``""`` = the value as text), ``rows`` dicts from key to value
    (None = empty cell). Each row needs an ``id`` (how prose refers to it); ``row_key`` names the
    column to copy it from."""
    if row_key is not None:
        rows = [{"id": str(r[row_key]), **r} for r in rows]
    return {"columns": [list(c) for c in columns], "rows": rows}


def write_record(path: str | os.PathLike | None, tables: dict[str, dict], *, values: dict | None = None,
                 results: dict | None = None, meta: dict | None = None) -> None:
    """Write a record of the common schema (``meta`` from :func:`run_meta` by default): the tables
    ``rediffuse.report`` renders, named scalars prose may quote (``values``) and the raw ``results``.
    NaN becomes null, which the report prints as an empty cell."""
    import math

    def clean(x):
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    record = {"schema": 1, **(meta or run_meta()), "tables": tables, "values": values or {},
              "results": results or {}}
    write_json(path, clean(record))


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
