"""Synthetic multi-focus pairs with ground truth from the photos shipped with scikit-image: focus masks
(blobs, regions, depth), defocus blur, the pair ``A = M I + (1 − M) blur(I)`` and its mirror."""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from ..imageio import write_image
from ..paths import REPO_ROOT
from .colour import image_to_tensor
from .folders import _apply_geometry

__all__ = ["SKIMAGE_PHOTOS", "skimage_photo", "skimage_depth", "focus_mask", "shape_field", "blur", "make_pair",
           "SyntheticPairs", "generate_synthetic_folder", "DEFAULT_SYNTHETIC_DIR"]

#: All-in-focus photos and textures shipped inside the scikit-image wheel (no network needed).
#: ``motorcycle_left`` comes with a real disparity map (Middlebury 2014) used for depth masks.
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "brick", "grass", "gravel")

DEFAULT_SYNTHETIC_DIR = REPO_ROOT / "data" / "generated" / "synthetic"


@lru_cache(maxsize=None)
def _load_skimage(name: str) -> tuple[np.ndarray, np.ndarray | None]:
    import skimage.data as skd  # here, not at import: fusing needs none of scikit-image's data

    if name == "motorcycle_left":
        left, _right, disp = skd.stereo_motorcycle()
        disp = np.asarray(disp, dtype=np.float64)
        bad = ~np.isfinite(disp)
        if bad.any():
            # Occluded pixels have no disparity: take the nearest valid one.
            idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
            disp = disp[tuple(idx)]
        # Larger disparity = nearer; store depth (larger = farther) as the negated disparity.
        return np.asarray(left, dtype=np.uint8), -disp
    if name not in SKIMAGE_PHOTOS:
        raise ValueError(f"unknown scikit-image photo {name!r}; choose from {', '.join(SKIMAGE_PHOTOS)}")
    img = np.asarray(getattr(skd, name)())
    return img.astype(np.uint8), None


def skimage_photo(name: str) -> np.ndarray:
    """One of ``SKIMAGE_PHOTOS`` as uint8 ``[H, W]`` or ``[H, W, 3]`` (read-only, cached)."""
    img = _load_skimage(name)[0]
    img.flags.writeable = False
    return img


def skimage_depth(name: str) -> np.ndarray | None:
    """Depth-like map (larger = farther) of a photo, ``[H, W]`` float64, or None if it has none."""
    return _load_skimage(name)[1]


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _synthetic_depth(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A plausible depth field: a tilted plane (floor/wall) plus smooth bumps (objects)."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    y = y / max(h - 1, 1) - 0.5
    x = x / max(w - 1, 1) - 0.5
    theta = rng.uniform(0, 2 * np.pi)
    plane = x * np.cos(theta) + y * np.sin(theta)
    bumps = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=0.12 * min(shape), mode="wrap")
    bumps /= bumps.std() + 1e-12
    return plane + rng.uniform(0.1, 0.4) * bumps


def shape_field(h: int, w: int, rng: np.random.Generator, *,
                kinds: tuple[str, ...] = ("halfplane", "ellipse", "rectangle", "blob"), centre: float = 0.6,
                axes: tuple[float, float] = (0.2, 0.9), shift: float = 0.6, level: float = 1.0) -> np.ndarray:
    """Signed ``[H, W]`` field whose positive set is a random shape of ``kinds``: a half-plane (moved
    off the centre by up to ``shift``), an ellipse or a rotated rectangle (centre within ±``centre``,
    half-axes in ``axes``, the field ``level`` minus the shape's norm), or a blob (a smooth random field).
    Coordinates run over [-1, 1] along the longer side. The defaults draw the shapes of the layered
    scenes (``rediffuse.synthesis``); :func:`focus_mask` draws its regions with its own."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    s = max(h, w)
    y, x = (2 * y - (h - 1)) / s, (2 * x - (w - 1)) / s
    kind = rng.choice(list(kinds))
    if kind == "blob":
        f = ndimage.gaussian_filter(rng.standard_normal((h, w)), rng.uniform(0.06, 0.2) * s, mode="wrap")
        return f / (f.std() + 1e-12) - rng.uniform(-0.5, 0.8)
    th = rng.uniform(0, np.pi)
    u = x * np.cos(th) + y * np.sin(th)
    v = -x * np.sin(th) + y * np.cos(th)
    if kind == "halfplane":
        return u - rng.uniform(-shift, shift) if shift else u
    cu, cv = rng.uniform(-centre, centre, size=2)
    a, b = rng.uniform(*axes, size=2)
    if kind == "ellipse":
        norm = np.hypot((u - cu) / a, (v - cv) / b)
    else:
        norm = np.maximum(np.abs(u - cu) / a, np.abs(v - cv) / b)
    return level - norm if level else -norm


# the shapes of focus_mask's "regions": centred half-planes, ellipses and rectangles, the field 0 on their border
_REGION_SHAPES = dict(kinds=("halfplane", "ellipse", "rectangle"), centre=0.5, axes=(0.3, 1.0), shift=0.0, level=0.0)


def focus_mask(
    shape: tuple[int, int],
    kind: str = "blobs",
    rng: np.random.Generator | int | None = None,
    depth: np.ndarray | None = None,
    coverage: float | None = None,
    soften: float = 0.0,
) -> np.ndarray:
    """Random focus mask ``[H, W]`` float32: 1 where source A is in focus, 0 where B is.

    - ``"blobs"``: thresholded smooth random field (organic shapes).
    - ``"regions"``: union of 1-3 random half-planes / ellipses / rotated rectangles.
    - ``"depth"``: the near part of ``depth`` (``[H, W]``, larger = farther), as in NYU-D; without
      ``depth`` a random tilted-plane-plus-bumps depth is used.

    ``coverage`` (fraction of ones; default drawn from U(0.3, 0.7)) is met by a quantile threshold.
    The mask is binary unless ``soften`` > 0, which feathers the border with a Gaussian of that sigma.
    """
    rng = _as_rng(rng)
    h, w = int(shape[0]), int(shape[1])
    if coverage is None:
        coverage = float(rng.uniform(0.3, 0.7))
    if not 0.0 <= coverage <= 1.0:
        raise ValueError(f"coverage must be in [0, 1], got {coverage}")
    if kind == "blobs":
        sigma = rng.uniform(0.06, 0.15) * min(h, w)
        field = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=sigma, mode="wrap")
    elif kind == "regions":
        field = np.max([shape_field(h, w, rng, **_REGION_SHAPES) for _ in range(int(rng.integers(1, 4)))], axis=0)
    elif kind == "depth":
        if depth is None:
            depth = _synthetic_depth((h, w), rng)
        depth = np.asarray(depth, dtype=np.float64)
        if depth.shape != (h, w):
            raise ValueError(f"depth has shape {depth.shape}, mask shape is {(h, w)}")
        field = -depth  # near = high
    else:
        raise ValueError(f"unknown mask kind {kind!r}; choose 'blobs', 'regions' or 'depth'")
    thr = np.quantile(field, 1.0 - coverage)
    mask = (field > thr).astype(np.float32) if coverage < 1 else np.ones((h, w), np.float32)
    if soften > 0:
        mask = np.clip(ndimage.gaussian_filter(mask, soften, mode="nearest"), 0, 1).astype(np.float32)
    return mask


def _disk_kernel(radius: float) -> np.ndarray:
    """Normalised disk (pillbox) of a possibly fractional radius, edges anti-aliased."""
    r_int = int(math.ceil(radius))
    y, x = np.mgrid[-r_int : r_int + 1, -r_int : r_int + 1]
    k = np.clip(radius + 0.5 - np.hypot(x, y), 0.0, 1.0)
    return k / k.sum()


def blur(img: np.ndarray, kind: str = "gaussian", sigma_or_radius: float = 3.0) -> np.ndarray:
    """Defocus blur of ``img`` ``[H, W]`` or ``[H, W, C]`` -> float64 of the same shape (not rounded).

    ``"gaussian"``: Gaussian of standard deviation ``sigma_or_radius``; ``"disk"``: uniform disk
    (the geometric-optics defocus PSF) of radius ``sigma_or_radius`` pixels. Borders are reflected.
    """
    a = np.asarray(img, dtype=np.float64)
    s = float(sigma_or_radius)
    if s < 0:
        raise ValueError(f"blur strength must be >= 0, got {s}")
    if kind not in ("gaussian", "disk"):
        raise ValueError(f"unknown blur kind {kind!r}; choose 'gaussian' or 'disk'")
    if s == 0:
        return a.copy()
    spatial = (s, s) + (0,) * (a.ndim - 2)
    if kind == "gaussian":
        return ndimage.gaussian_filter(a, sigma=spatial, mode="reflect")
    k = _disk_kernel(s)
    r = k.shape[0] // 2
    pad = ((r, r), (r, r)) + ((0, 0),) * (a.ndim - 2)
    # scipy.signal costs a second to import: only synthesis needs it, not every `rediffuse fuse`
    from scipy.signal import fftconvolve

    # 'symmetric' padding is scipy.ndimage's 'reflect'; FFT keeps large radii cheap.
    p = np.pad(a, pad, mode="symmetric")
    kk = k.reshape(k.shape + (1,) * (a.ndim - 2))
    return fftconvolve(p, kk, mode="valid", axes=(0, 1))


def make_pair(
    img: np.ndarray, mask: np.ndarray, blur_kind: str = "gaussian", strength: float = 3.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic multi-focus pair from an all-in-focus ``img`` (uint8 ``[H, W]`` / ``[H, W, 3]``).

    ``A = M I + (1 - M) blur(I)``, ``B = (1 - M) I + M blur(I)``, ``GT = I``, rounded to uint8; where
    ``M`` (``[H, W]`` in [0, 1]) is 1, A equals GT exactly, and where it is 0, B does.
    """
    gt = np.asarray(img)
    if gt.dtype != np.uint8:
        raise TypeError(f"make_pair expects a uint8 image, got {gt.dtype}")
    m = np.asarray(mask, dtype=np.float64)
    if m.shape != gt.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match image {gt.shape[:2]}")
    if gt.ndim == 3:
        m = m[..., None]
    fg = gt.astype(np.float64)
    bl = blur(gt, blur_kind, strength)
    a = m * fg + (1 - m) * bl
    b = (1 - m) * fg + m * bl
    to8 = lambda x: np.clip(np.rint(x), 0, 255).astype(np.uint8)  # noqa: E731
    return to8(a), to8(b), gt.copy()


class SyntheticPairs(Dataset):
    """Reproducible synthetic multi-focus pairs with ground truth from scikit-image photos.

    Item ``i`` depends only on (``seed``, ``i``): a photo, a random window (scale in ``scale_range``,
    resized to ``size`` x ``size``), a random rot90/flip, a focus mask (kind from ``mask_kinds``;
    ``"depth"`` uses the real disparity of ``motorcycle_left`` when that photo is drawn), and a blur
    (Gaussian sigma in ``sigma_range`` or disk radius in ``radius_range``).

    Items are dicts like ``FusionFolder``'s: ``"A"``, ``"B"``, ``"GT"`` float32 in [-1, 1]
    (``[1, S, S]`` or ``[3, S, S]``), ``"mask"`` ``[1, S, S]`` float32, ``"stem"``.
    ``sample(i)`` gives the uint8 arrays instead.

    ``cache=True`` keeps every rendered item (uint8 images and the mask, about 7 bytes per pixel
    for Y) in this process: an item never changes, and a trainer draws each one many times. Call
    :meth:`warm` before DataLoader workers fork, so that they share one copy instead of each
    rendering and holding its own.
    """

    def __init__(
        self,
        n: int = 1000,
        size: int = 128,
        seed: int = 0,
        photos: Sequence[str | np.ndarray] | None = None,
        mask_kinds: Sequence[str] = ("blobs", "regions", "depth"),
        blur_kinds: Sequence[str] = ("gaussian", "disk"),
        sigma_range: tuple[float, float] = (1.0, 7.0),
        radius_range: tuple[float, float] = (2.0, 8.0),
        scale_range: tuple[float, float] = (0.5, 1.0),
        soften: float = 0.0,
        y_only: bool = True,
        cache: bool = False,
    ) -> None:
        if n < 1 or size < 8:
            raise ValueError(f"need n >= 1 and size >= 8, got n={n}, size={size}")
        self.n, self.size, self.seed = int(n), int(size), int(seed)
        self.photos = list(photos) if photos is not None else list(SKIMAGE_PHOTOS)
        if not self.photos:
            raise ValueError("no photos given")
        for p in self.photos:
            if isinstance(p, str):
                _load_skimage(p)  # fail early on a bad name
        self.mask_kinds = tuple(mask_kinds)
        self.blur_kinds = tuple(blur_kinds)
        self.sigma_range, self.radius_range = sigma_range, radius_range
        self.scale_range = scale_range
        self.soften = soften
        self.y_only = y_only
        self.cache = bool(cache)
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return self.n

    def warm(self) -> None:
        """Render every item into the cache now (no-op without ``cache``)."""
        if self.cache:
            for i in range(self.n):
                self.sample(i)

    def _photo(self, j: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        p = self.photos[j]
        if isinstance(p, str):
            img, depth = _load_skimage(p)
            return img, depth, p
        return np.asarray(p, dtype=np.uint8), None, f"photo{j}"

    def sample(self, index: int) -> dict[str, Any]:
        """Item ``index`` as numpy: A, B, GT uint8 ``[S, S(, 3)]``, mask float32, and what was drawn."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} items")
        if index in self._cache:
            return self._cache[index]
        rng = np.random.default_rng([self.seed, index])
        img, depth, name = self._photo(int(rng.integers(len(self.photos))))
        h, w = img.shape[:2]
        s = self.size
        scale = max(float(rng.uniform(*self.scale_range)), s / min(h, w))  # never a window past the photo
        win = min(int(round(s / scale)), h, w)
        top = int(rng.integers(0, h - win + 1))
        left = int(rng.integers(0, w - win + 1))
        patch = img[top : top + win, left : left + win]
        if win != s:
            from skimage.transform import resize  # here, not at import (as skimage.data above)

            patch = resize(patch, (s, s), order=1, anti_aliasing=win > s, preserve_range=True)
            patch = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
        dpatch = None
        if depth is not None:
            dpatch = depth[top : top + win, left : left + win]
            if win != s:
                dpatch = resize(dpatch, (s, s), order=1, anti_aliasing=False, preserve_range=True)
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        gt = np.ascontiguousarray(_apply_geometry(patch, k, flip))
        if dpatch is not None:
            dpatch = np.ascontiguousarray(_apply_geometry(dpatch, k, flip))

        mkind = str(rng.choice(self.mask_kinds))
        mask = focus_mask((s, s), mkind, rng, depth=dpatch if mkind == "depth" else None, soften=self.soften)
        bkind = str(rng.choice(self.blur_kinds))
        strength = float(rng.uniform(*(self.sigma_range if bkind == "gaussian" else self.radius_range)))
        a, b, gt = make_pair(gt, mask, bkind, strength)
        item = dict(
            A=a, B=b, GT=gt, mask=mask, stem=f"syn-{index:05d}", photo=name,
            mask_kind=mkind, blur_kind=bkind, strength=strength,
        )
        if self.cache:
            for key in ("A", "B", "GT", "mask"):
                item[key].setflags(write=False)  # shared by every later caller: nobody may change it
            self._cache[index] = item
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        d = self.sample(index)
        out: dict[str, Any] = {key: image_to_tensor(d[key], self.y_only) for key in ("A", "B", "GT")}
        out["mask"] = torch.from_numpy(d["mask"][None].copy())
        out["stem"] = d["stem"]
        return out


def generate_synthetic_folder(
    out_dir: str | os.PathLike | None = None,
    n: int = 100,
    seed: int = 0,
    size: int = 256,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
    **kwargs: Any,
) -> Path:
    """Write ``n`` synthetic triplets as PNG to ``out_dir/{A,B,GT,mask}/syn-XXXXX.png``.

    Default ``out_dir``: ``data/generated/synthetic`` in the repository (git-ignored). Extra keyword
    arguments go to ``SyntheticPairs``. The result loads with ``FusionFolder(out_dir)`` (``mask/`` is
    not a source folder). A ``SOURCE.txt`` records the parameters. Returns the folder.
    """
    out = Path(out_dir) if out_dir is not None else DEFAULT_SYNTHETIC_DIR
    ds = SyntheticPairs(n=n, size=size, seed=seed, **kwargs)
    rng_iter: Iterable[int] = range(n)
    if progress is not None:
        rng_iter = progress(rng_iter)
    lines = []
    for i in rng_iter:
        d = ds.sample(i)
        for key in ("A", "B", "GT"):
            write_image(out / key / f"{d['stem']}.png", d[key])
        write_image(out / "mask" / f"{d['stem']}.png", np.rint(d["mask"] * 255).astype(np.uint8))
        lines.append(f"{d['stem']} photo={d['photo']} mask={d['mask_kind']} blur={d['blur_kind']} strength={d['strength']:.3f}")
    params = dict(n=n, seed=seed, size=size, **{k: v for k, v in kwargs.items() if not isinstance(v, np.ndarray)})
    (out / "SOURCE.txt").write_text(
        "Synthetic multi-focus triplets generated by rediffuse.data.generate_synthetic_folder from\n"
        "all-in-focus photos shipped with scikit-image (skimage.data).\n"
        "A = M*I + (1-M)*blur(I), B = (1-M)*I + M*blur(I), GT = I; mask/ holds M (255 = A in focus).\n"
        f"parameters: {params}\n\n" + "\n".join(lines) + "\n"
    )
    return out
