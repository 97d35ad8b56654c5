"""Folder datasets: multi-focus sources (and ground truth) stored as folders of images paired by file
stem, cropped and augmented reproducibly."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..imageio import IMAGE_EXTENSIONS, read_image
from .colour import image_to_tensor

__all__ = ["FusionFolder", "NYU_TRAIN_STEMS", "NYU_TEST_STEMS"]

#: FusionDiff trains on all 100 NYU-D triplets; this project holds out the last ten for testing.
NYU_TRAIN_STEMS = tuple(f"nyud-{i:03d}" for i in range(1, 91))
NYU_TEST_STEMS = tuple(f"nyud-{i:03d}" for i in range(91, 101))


def _index_folder(folder: Path) -> dict[str, Path]:
    """stem -> file for the images in ``folder`` (hidden files ignored)."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if p.stem in out:
            raise ValueError(f"{folder}: two images with stem {p.stem!r} ({out[p.stem].name}, {p.name})")
        out[p.stem] = p
    return out


def _as_hw(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    h, w = (int(v) for v in size)
    return (h, w)


def _derive_seed(*keys: int) -> int:
    """A 63-bit seed from several integers (no collisions between (seed, epoch, index) triples)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def _augment_params(g: torch.Generator, augment: bool) -> tuple[int, bool]:
    if not augment:
        return 0, False
    k = int(torch.randint(0, 4, (1,), generator=g))
    flip = bool(torch.randint(0, 2, (1,), generator=g))
    return k, flip


def _apply_geometry(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """rot90 by k quarter turns (counter-clockwise, as torch.rot90 on dims (-2, -1)), then a horizontal flip."""
    if k:
        a = np.rot90(a, k, axes=(0, 1))
    if flip:
        a = a[:, ::-1]
    return a


class FusionFolder(Dataset):
    """Multi-focus sources (and optional ground truth) stored as folders of images.

    Layout: ``root/A``, ``root/B`` (optionally ``root/C``, ... - every folder whose name is one
    upper-case letter is a source, in alphabetical order) and optionally ``root/GT``; images are
    paired by file stem (``A/x.jpg`` goes with ``B/x.jpg`` and ``GT/x.png``). This is the layout of
    ``../shared/data/NYU-D-100``, ``Lytro``, ``Lytro-Triple`` and of ``generate_synthetic_folder``.

    Each item is a dict: one tensor per source (``"A"``, ``"B"``, ...) and ``"GT"`` when present,
    float32 in [-1, 1], ``[1, h, w]`` (``y_only``) or ``[3, h, w]``; plus ``"stem"`` (str) and
    ``"top"``, ``"left"``, ``"k"``, ``"flip"`` (int) describing the crop and augmentation.

    - ``crop``: int or (h, w); a window at the same place in every image of the item.
    - ``augment``: a random ``rot90`` by k in {0, 1, 2, 3} quarter turns followed by a random horizontal
      flip, identical for all images of the item (for an odd k the window is cut as (w, h) so the
      output is always (h, w)).
    - ``stems`` / ``exclude``: keep only / drop these stems, e.g. ``stems=NYU_TRAIN_STEMS``.
    - ``seed``: None draws from torch's global RNG (reproducible under ``torch.manual_seed`` and
      DataLoader worker seeding); an int makes item ``i`` a pure function of (seed, epoch, i) -
      call ``set_epoch`` each epoch to get fresh crops.
    - ``cache``: keep decoded images in memory (per worker process).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        crop: int | Sequence[int] | None = None,
        augment: bool = False,
        y_only: bool = True,
        stems: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        require_gt: bool = False,
        seed: int | None = None,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.root}")
        self.sources = sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and len(p.name) == 1 and p.name.isupper()
        )
        for need in ("A", "B"):
            if need not in self.sources:
                raise FileNotFoundError(
                    f"{self.root}: missing source folder {need}/ (found source folders: {self.sources or 'none'})"
                )
        self.has_gt = (self.root / "GT").is_dir()
        if require_gt and not self.has_gt:
            raise FileNotFoundError(f"{self.root}: ground-truth folder GT/ is missing")

        folders = list(self.sources) + (["GT"] if self.has_gt else [])
        self._files = {f: _index_folder(self.root / f) for f in folders}
        if not self._files["A"]:
            raise ValueError(f"{self.root / 'A'}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        all_stems = set().union(*(set(d) for d in self._files.values()))
        problems = [
            f"{s!r} missing in {f}/" for s in sorted(all_stems) for f in folders if s not in self._files[f]
        ]
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ValueError(f"{self.root}: unmatched file stems: {'; '.join(problems[:5])}{more}")

        chosen = sorted(all_stems)
        if stems is not None:
            want = list(dict.fromkeys(stems))
            unknown = [s for s in want if s not in all_stems]
            if unknown:
                raise ValueError(f"{self.root}: unknown stems {unknown[:5]} (have e.g. {chosen[:3]})")
            chosen = want
        if exclude is not None:
            drop = set(exclude)
            chosen = [s for s in chosen if s not in drop]
        if not chosen:
            raise ValueError(f"{self.root}: no items left after stem selection")
        self.stems: list[str] = chosen

        self.crop = _as_hw(crop)
        self.augment = bool(augment)
        self.y_only = bool(y_only)
        self.seed = seed
        self.epoch = 0
        self.cache = cache
        self._cache: dict[str, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.stems)

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops/augmentations drawn when ``seed`` is set."""
        self.epoch = int(epoch)

    @property
    def keys(self) -> list[str]:
        """Image keys of an item: the sources, then ``"GT"`` if present."""
        return list(self.sources) + (["GT"] if self.has_gt else [])

    def load(self, item: int | str) -> dict[str, np.ndarray]:
        """Full-size uint8 images of one item (by index or stem): ``{"A": ..., "B": ..., "GT": ...}``."""
        stem = self.stems[item] if isinstance(item, int) else item
        if stem in self._cache:
            return self._cache[stem]
        imgs = {k: read_image(self._files[k][stem]) for k in self.keys}
        sizes = {k: v.shape[:2] for k, v in imgs.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"{self.root}: images of {stem!r} differ in size: {sizes}")
        if self.cache:
            self._cache[stem] = imgs
        return imgs

    def __getitem__(self, index: int) -> dict[str, Any]:
        stem = self.stems[index]
        imgs = self.load(stem)
        g = torch.Generator()
        if self.seed is None:
            g.manual_seed(int(torch.randint(0, 2**62, (1,))))
        else:
            g.manual_seed(_derive_seed(self.seed, self.epoch, index))
        k, flip = _augment_params(g, self.augment)

        h, w = next(iter(imgs.values())).shape[:2]
        top = left = 0
        if self.crop is not None:
            ch, cw = self.crop
            wh, ww = (cw, ch) if k % 2 else (ch, cw)
            if h < wh or w < ww:
                raise ValueError(f"{self.root}: {stem!r} is {h}x{w}, smaller than the crop {wh}x{ww}")
            top = int(torch.randint(0, h - wh + 1, (1,), generator=g))
            left = int(torch.randint(0, w - ww + 1, (1,), generator=g))
            imgs = {key: v[top : top + wh, left : left + ww] for key, v in imgs.items()}

        out: dict[str, Any] = {
            key: image_to_tensor(_apply_geometry(v, k, flip), self.y_only) for key, v in imgs.items()
        }
        out.update(stem=stem, top=top, left=left, k=k, flip=int(flip))
        return out

    def __repr__(self) -> str:
        return (
            f"FusionFolder({str(self.root)!r}, n={len(self)}, sources={self.sources}, gt={self.has_gt}, "
            f"crop={self.crop}, augment={self.augment}, y_only={self.y_only})"
        )
