"""Refactors keep behaviour: the bytes `fuse` returns with default settings, recorded once and compared.

`python tests/test_behaviour_hash.py --record` writes `tests/behaviour_hashes.json` (do it only when a change
of output is intended, and say so in the commit). Floating-point kernels differ between CPU instruction sets,
so the exact hash is compared on the instruction set it was recorded on; elsewhere the test compares a
block-mean thumbnail of the output to within half a grey level, which still catches any change of method.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

RECORD = Path(__file__).with_name("behaviour_hashes.json")
BLOCK = 16  # thumbnail block side in pixels


def _synthetic_frames(n: int) -> list[np.ndarray]:
    """`n` colour frames of a photo shipped with scikit-image, each sharp in one horizontal band."""
    from skimage import data as skdata

    from rediffuse.data import blur

    img = skdata.coffee()[:192, :256]
    soft = blur(img, "gaussian", 3.0)
    rows = np.arange(img.shape[0])[:, None, None]
    frames = []
    for i in range(n):
        lo, hi = i * img.shape[0] // n, (i + 1) * img.shape[0] // n
        m = ((rows >= lo) & (rows < hi)).astype(np.float64)
        frames.append(np.clip(np.rint(m * img + (1 - m) * soft), 0, 255).astype(np.uint8))
    return frames


def _cases() -> dict[str, object]:
    """Case name → a thunk returning the stack, or None where its data is absent."""
    from rediffuse.paths import dataset_dir

    cases: dict[str, object] = {"synthetic-pair": lambda: _synthetic_frames(2),
                                "synthetic-3-frames": lambda: _synthetic_frames(3)}
    lytro = dataset_dir("Lytro")
    cases["lytro-03"] = None if lytro is None else (
        lambda: [str(lytro / "A" / "lytro-03.jpg"), str(lytro / "B" / "lytro-03.jpg")])
    return cases


def _fused(frames) -> np.ndarray:
    from rediffuse.fuse import fuse

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the kernels' summation order is fixed
    try:
        return fuse(frames)
    finally:
        torch.set_num_threads(threads)


def _fingerprint(out: np.ndarray) -> dict:
    h, w = out.shape[0] // BLOCK * BLOCK, out.shape[1] // BLOCK * BLOCK
    grey = out.astype(np.float64) if out.ndim == 2 else out.astype(np.float64).mean(-1)
    thumb = grey[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).mean((1, 3))
    return {"sha256": hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest(),
            "shape": list(out.shape), "dtype": str(out.dtype),
            "thumbnail": np.round(thumb, 3).tolist()}


def _recorded() -> dict:
    return json.loads(RECORD.read_text())


@pytest.mark.parametrize("case", ["synthetic-pair", "synthetic-3-frames", "lytro-03"])
def test_fuse_returns_the_recorded_bytes(case):
    thunk = _cases()[case]
    if thunk is None:
        pytest.skip(f"{case}: ../shared/data/Lytro is not present")
    rec = _recorded()
    want = rec["cases"][case]
    got = _fingerprint(_fused(thunk()))
    assert got["shape"] == want["shape"] and got["dtype"] == want["dtype"]
    if torch.backends.cpu.get_cpu_capability() == rec["cpu_capability"]:
        assert got["sha256"] == want["sha256"], f"{case}: fuse's output changed (same instruction set)"
    else:  # other kernels, other rounding: the picture must still be the recorded one
        diff = np.abs(np.asarray(got["thumbnail"]) - np.asarray(want["thumbnail"]))
        assert float(diff.max()) <= 0.5, f"{case}: fuse's output changed by {diff.max():.2f} grey levels"


def record() -> None:
    cases = {}
    for name, thunk in _cases().items():
        if thunk is None:
            raise SystemExit(f"{name}: its data is absent; record where ../shared is present")
        cases[name] = _fingerprint(_fused(thunk()))
        print(name, cases[name]["sha256"][:16])
    RECORD.write_text(json.dumps({"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                  "torch": torch.__version__, "cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--record"]:
        record()
    else:
        raise SystemExit("usage: python tests/test_behaviour_hash.py --record")
