"""The tools focus stackers pick instead of rediffuse, run fairly on the same images.

- ``enfuse`` (Hugin; Debian package ``enfuse``) with its focus-stacking settings: contrast weight 1,
  exposure and saturation weights 0, hard mask (each pixel from the sharpest frame).
- ``stackmff``: the learned StackMFF-v3 model of the ``openfocus`` program (PyPI package
  ``openfocus``, which ships its weights), on the CPU, without exposure matching and without
  registration (the pairs this project scores are aligned; exposure matching changes brightness by
  up to ±30 % on real pairs and would be scored as fusion).

Both run as separate programs on lossless temporary files, so their own dependencies (openfocus has
its own torch) never mix with this library's. A missing program is a one-line ``RuntimeError``
naming the package to install.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

__all__ = ["PEERS", "get_peer", "peer_available", "enfuse", "stackmff", "ENFUSE_FLAGS"]

ENFUSE_FLAGS = ("--exposure-weight=0", "--saturation-weight=0", "--contrast-weight=1", "--hard-mask")


def _program(name: str, env_var: str) -> str | None:
    """The program's path: ``$<env_var>`` when set, else the first ``name`` on PATH."""
    return os.environ.get(env_var) or shutil.which(name)


def _run(cmd: list[str], what: str) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3600)
    except subprocess.CalledProcessError as e:
        last = (e.stderr or e.stdout or "").strip().splitlines()
        raise RuntimeError(f"{what} failed (exit {e.returncode}): {last[-1] if last else 'no message'}") from None


def _as_rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def _read_back(path: Path, grey: bool) -> np.ndarray:
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))  # enfuse writes RGBA (alpha all opaque)
    if grey:  # all sources grey: a grey result (the channels are equal up to rounding)
        return np.asarray(Image.fromarray(rgb).convert("L"))
    return rgb


def _with_files(images: Sequence[np.ndarray], run: Callable[[list[Path], Path], None], suffix: str) -> np.ndarray:
    grey = all(np.asarray(im).ndim == 2 for im in images)
    with tempfile.TemporaryDirectory(prefix="rediffuse-peer-") as tmp:
        paths = []
        for i, im in enumerate(images):
            p = Path(tmp) / f"src{i}.png"
            Image.fromarray(_as_rgb(np.asarray(im, dtype=np.uint8))).save(p)
            paths.append(p)
        out = Path(tmp) / f"out{suffix}"
        run(paths, out)
        if not out.is_file():
            raise RuntimeError(f"the peer program wrote no output ({out.name})")
        return _read_back(out, grey)


_MISSING = {
    "enfuse": "enfuse is not installed: install the Debian/Ubuntu package 'enfuse' (Hugin's fuser) or set "
              "REDIFFUSE_ENFUSE to the program",
    "openfocus": "openfocus is not installed: `pip install openfocus` (PyPI; best in its own virtual "
                 "environment) or set REDIFFUSE_OPENFOCUS to its program",
}


def _require(name: str, env_var: str) -> str:
    exe = _program(name, env_var)
    if exe is None:
        raise RuntimeError(_MISSING[name])
    return exe


def enfuse(images: Sequence[np.ndarray]) -> np.ndarray:
    """Fuse a stack with enfuse's focus-stacking settings (``ENFUSE_FLAGS``); uint8 in, uint8 out."""
    exe = _require("enfuse", "REDIFFUSE_ENFUSE")
    return _with_files(images, lambda srcs, out: _run([exe, *ENFUSE_FLAGS, f"--output={out}", *map(str, srcs)],
                                                      "enfuse"), ".tif")


def stackmff(images: Sequence[np.ndarray]) -> np.ndarray:
    """Fuse a stack with openfocus's learned StackMFF-v3 model (CPU, no exposure matching, no
    registration); uint8 in, uint8 out."""
    exe = _require("openfocus", "REDIFFUSE_OPENFOCUS")
    return _with_files(images, lambda srcs, out: _run(
        [exe, "-i", *map(str, srcs), "-o", str(out), "-m", "stackmffv3", "--cpu", "--no-exposure-match",
         "--align", "none"], "openfocus"), ".png")


#: Peer name -> (fusion function, program name, environment variable naming it).
PEERS: dict[str, tuple[Callable[[Sequence[np.ndarray]], np.ndarray], str, str]] = {
    "enfuse": (enfuse, "enfuse", "REDIFFUSE_ENFUSE"),
    "stackmff": (stackmff, "openfocus", "REDIFFUSE_OPENFOCUS"),
}


def peer_available(name: str) -> bool:
    """Whether the program behind peer ``name`` can be found."""
    _, program, env = PEERS[name]
    return _program(program, env) is not None


def get_peer(name: str) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """The fusion function of a peer; a one-line ``RuntimeError`` when its program is missing."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; valid names: {', '.join(PEERS)}")
    fn, program, env = PEERS[name]
    _require(program, env)
    return fn
