"""How many threads a fusion should use: one pair fused by ``rediffuse fuse`` (a child process, as a
user runs it) with ``--threads 1``, ``2`` and ``0`` (the default: the idle cores), on an idle machine
and while ``--load`` other processes keep cores busy (pure-Python loops, one core each).

    python benchmarks/bench_threads.py [--load 0 1 2] [--repeats 3] [--json docs/results/bench-threads.json]

The pair is Lytro's lytro-01 (520×520) when ../shared is present, else a synthetic 520×520 pair.
Reported: the median wall time of ``--repeats`` runs per setting. Run it with nothing else on the
machine: the ``--load 0`` rows are the idle case only then.
"""
from __future__ import annotations

import _common  # noqa: F401  (thread pools and sys.path first)

import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rediffuse.imageio import write_image
from rediffuse.paths import dataset_dir


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _pair(folder: Path) -> list[Path]:
    lytro = dataset_dir("Lytro")
    if lytro is not None:
        return [next((lytro / k).glob("lytro-01.*")) for k in ("A", "B")]
    from bench_fuse import make_pair

    gt, a, b = make_pair(520, 520, seed=0)
    paths = [folder / "a.png", folder / "b.png"]
    write_image(paths[0], a)
    write_image(paths[1], b)
    return paths


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--load", type=int, nargs="+", default=[0, 1, 2], help="busy processes beside the fusion")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    results: dict = {"rows": []}
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as tmp:
        tmp = Path(tmp)
        pair = _pair(tmp)
        for load in args.load:
            stop = mp.Event()
            spinners = [mp.Process(target=_spin, args=(stop,)) for _ in range(load)]
            for s in spinners:
                s.start()
            time.sleep(2.0)  # let the load settle (and /proc/stat see it)
            try:
                for threads in (1, 2, 0):
                    walls = []
                    for _ in range(args.repeats):
                        cmd = [sys.executable, "-m", "rediffuse", "fuse", *map(str, pair), "-o", str(tmp / "f.png"),
                               "--threads", str(threads), "-q", "--device", "cpu"]
                        t0 = time.perf_counter()
                        subprocess.run(cmd, check=True, env=_common.child_env())
                        walls.append(time.perf_counter() - t0)
                    row = {"load": load, "threads": threads, "wall_s": statistics.median(walls), "runs": walls}
                    results["rows"].append(row)
                    print(f"busy processes {load}, --threads {threads or '0 (idle cores)'}: "
                          f"median {row['wall_s']:.2f} s of {args.repeats}", flush=True)
            finally:
                stop.set()
                for s in spinners:
                    s.join()
    _common.write_json(args.json, results)


if __name__ == "__main__":
    main()
