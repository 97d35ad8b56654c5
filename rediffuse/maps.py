"""What a fused stack writes besides the image: the depth map, every frame's weight map, and the
scratch folder the weight maps' logits wait in (``rediffuse.stack`` keeps them on disk, not in memory)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from .atomic import LOGIT_PREFIX, remove_stale_temps
from .imageio import write_image
from .orientation import turn

if TYPE_CHECKING:
    from .stack import OnlineSoftmax

__all__ = ["write_depth_map", "write_weight_maps", "logit_store"]


def write_depth_map(path: str | os.PathLike, index: np.ndarray, n: int, as_index: bool = False) -> Path:
    """The frame of the largest weight per pixel (``index`` ``[H, W]``) as an image: 8 bits with frame i
    (0-based) at grey ``round(i · 255 / (N − 1))`` for up to 256 frames, else the index itself at 16
    bits (PNG/TIFF). ``as_index``: always the index itself, 16-bit (0 = the first frame), e.g. as a
    height map to measure with; the path must then be a PNG or TIFF (an 8-bit format would lose it)."""
    if as_index:
        if Path(path).suffix.lower() not in (".png", ".tif", ".tiff"):
            raise ValueError(f"a depth map of frame indices needs 16 bits: name a .png or .tif file, not {path}")
        return write_image(path, index.astype(np.uint16))
    if n <= 256:
        img = np.rint(index.astype(np.float32) * (255.0 / max(n - 1, 1))).astype(np.uint8)
    else:
        img = index.astype(np.uint16)
    return write_image(path, img)


def write_weight_maps(folder: str | os.PathLike, acc: "OnlineSoftmax", names: Sequence[str], turns: int = 0
                      ) -> list[Path]:
    """One 16-bit grey PNG per frame, ``weight-<k>.png`` (k from 1, in input order): its weight × 65535,
    turned by ``turns`` counter-clockwise quarter turns (back to the inputs' orientation)."""
    folder = Path(folder)
    width = max(2, len(str(len(names))))
    paths = []
    for i in range(acc.n):
        w = turn(acc.weight(i), turns)
        paths.append(write_image(folder / f"weight-{i + 1:0{width}d}.png",
                                 np.clip(np.rint(w * 65535.0), 0, 65535).astype(np.uint16)))
    return paths


@contextlib.contextmanager
def logit_store(folder: str | os.PathLike | None) -> Iterator[Path | None]:
    """A scratch folder for the kept logits inside ``folder`` (the weight maps' own folder, so a
    large stack fills the disk the user chose, not /tmp), removed afterwards; ``None`` when
    ``folder`` is None."""
    if folder is None:
        yield None
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)  # what a killed run left there (its pid is in the name)
    with tempfile.TemporaryDirectory(prefix=f"{LOGIT_PREFIX}{os.getpid()}-", dir=folder) as tmp:
        yield Path(tmp)
