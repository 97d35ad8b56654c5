"""Data for multi-focus fusion: colour conversion, folder datasets and synthetic pairs.

Conventions shared by every model and script of the project:

- Images on disk and in numpy are ``uint8``, ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB).
- Model tensors are float32 in ``[-1, 1]``: ``[1, H, W]`` for the luminance Y (ReDiffuse works on Y
  only), ``[3, H, W]`` for RGB (FusionDiff); ``x = v / 127.5 - 1`` for a value ``v`` in 0-255.
- Colour space: ITU-R BT.601 *full range* Y'CbCr as used by JPEG/JFIF, on 0-255 floats:
  ``Y = 0.299 R + 0.587 G + 0.114 B``, ``Cb = 128 + 0.5 (B - Y) / 0.886``,
  ``Cr = 128 + 0.5 (R - Y) / 0.701``. No studio-range (16-235) offsets. Y is the same number as
  Pillow's ``convert("L")`` before rounding.
- Chroma fusion (the rule of the ReDiffuse and FusionDiff code):
  ``C = sum_i C_i |C_i - 128| / sum_i |C_i - 128|``, 128 where every source is exactly 128.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import skimage.data as skd
import torch
from scipy import ndimage
from skimage.transform import resize
from torch.utils.data import Dataset

from .imageio import IMAGE_EXTENSIONS, read_image, write_image
from .paths import REPO_ROOT

__all__ = [
    "rgb_to_ycbcr", "ycbcr_to_rgb", "luminance", "fuse_chroma", "recombine", "recombine_float",
    "image_to_tensor", "tensor_to_image", "center_crop",
    "FusionFolder", "NYU_TRAIN_STEMS", "NYU_TEST_STEMS",
    "SKIMAGE_PHOTOS", "skimage_photo", "skimage_depth",
    "focus_mask", "blur", "make_pair", "SyntheticPairs", "generate_synthetic_folder",
    "DEFAULT_SYNTHETIC_DIR",
]

# --------------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------------

_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
# Rows: Y, Cb - 128, Cr - 128 as linear functions of (R, G, B).
_RGB2YCC = np.array(
    [
        [_KR, _KG, _KB],
        [-0.5 * _KR / (1 - _KB), -0.5 * _KG / (1 - _KB), 0.5],
        [0.5, -0.5 * _KG / (1 - _KR), -0.5 * _KB / (1 - _KR)],
    ]
)
# The exact inverse (not the rounded 1.402 / 0.344136 / ... of the JFIF text), so a round trip
# in float is exact to machine precision.
_YCC2RGB = np.linalg.inv(_RGB2YCC)
_OFFSET = np.array([0.0, 128.0, 128.0])


def _check_rgb(img: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(img)
    if a.shape[-1:] != (3,):
        raise ValueError(f"{name}: expected [..., 3], got shape {a.shape}")
    return a.astype(np.float64, copy=False)


def rgb_to_ycbcr(img: np.ndarray) -> np.ndarray:
    """RGB ``[..., 3]`` (uint8 or float, 0-255 scale) -> Y'CbCr ``[..., 3]`` float64, 0-255 scale."""
    a = _check_rgb(img, "rgb_to_ycbcr")
    return a @ _RGB2YCC.T + _OFFSET


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Y'CbCr ``[..., 3]`` (0-255 scale) -> RGB ``[..., 3]`` float64, unrounded and unclipped."""
    a = _check_rgb(ycc, "ycbcr_to_rgb")
    return (a - _OFFSET) @ _YCC2RGB.T


def luminance(img: np.ndarray) -> np.ndarray:
    """Y (float64, 0-255) of an RGB ``[H, W, 3]`` image; a grey ``[H, W]`` image is returned as float."""
    a = np.asarray(img)
    if a.ndim == 2:
        return a.astype(np.float64)
    return _check_rgb(a, "luminance") @ _RGB2YCC[0]


def fuse_chroma(chroma: Sequence[np.ndarray]) -> np.ndarray:
    """Fuse one chroma channel (Cb or Cr, 0-255) of N >= 2 sources, each ``[H, W]`` -> ``[H, W]`` float64.

    ``sum_i C_i |C_i - 128| / sum_i |C_i - 128|``: the more saturated source dominates; 128 (grey)
    where every source is exactly 128, the only place the denominator is zero.
    """
    if len(chroma) < 2:
        raise ValueError(f"fuse_chroma needs at least 2 sources, got {len(chroma)}")
    c = np.stack([np.asarray(x, dtype=np.float64) for x in chroma])
    w = np.abs(c - 128.0)
    den = w.sum(axis=0)
    num = (c * w).sum(axis=0)
    out = np.full(den.shape, 128.0)
    nz = den > 0
    out[nz] = num[nz] / den[nz]
    return out


def recombine(y_fused: np.ndarray, sources_rgb: Sequence[np.ndarray]) -> np.ndarray:
    """Join a fused luminance with the fused chroma of the sources -> uint8.

    ``y_fused``: ``[H, W]`` in 0-255 (float or uint8; convert model output with
    ``(x + 1) * 127.5`` first). ``sources_rgb``: N >= 2 sources ``[H, W, 3]`` (or grey ``[H, W]``, in
    which case the rounded Y is returned as ``[H, W]``). Returns ``[H, W, 3]`` uint8.
    """
    return np.clip(np.rint(recombine_float(y_fused, sources_rgb)), 0, 255).astype(np.uint8)


def recombine_float(y_fused: np.ndarray, sources_rgb: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`recombine` before rounding: float64 in the 0-255 scale, unclipped (so a 16-bit
    result can be made from it without the 8-bit rounding)."""
    y = np.asarray(y_fused, dtype=np.float64)
    srcs = [np.asarray(s) for s in sources_rgb]
    if len(srcs) < 2:
        raise ValueError(f"recombine needs at least 2 sources, got {len(srcs)}")
    if y.ndim != 2:
        raise ValueError(f"recombine: y_fused must be [H, W], got {y.shape}")
    if any(s.shape[:2] != y.shape for s in srcs):
        raise ValueError(f"recombine: source sizes {[s.shape for s in srcs]} differ from Y {y.shape}")
    if all(s.ndim == 2 for s in srcs):
        return y
    ycc = [rgb_to_ycbcr(s if s.ndim == 3 else np.repeat(s[..., None], 3, -1)) for s in srcs]
    cb = fuse_chroma([c[..., 1] for c in ycc])
    cr = fuse_chroma([c[..., 2] for c in ycc])
    return ycbcr_to_rgb(np.stack([y, cb, cr], axis=-1))


def image_to_tensor(img: np.ndarray, y_only: bool = True) -> torch.Tensor:
    """uint8 (or float 0–255) ``[H, W]`` / ``[H, W, 3]`` -> float32 in [-1, 1]: ``[1, H, W]`` (Y) or
    ``[3, H, W]`` (RGB).

    Y is not rounded to integers; a grey image gives Y = grey, and is repeated for RGB. Converted in
    row strips, so a 24-MP photo never exists as a full float64 copy.
    """
    a = np.asarray(img)
    if a.ndim == 2 and not y_only:
        a = a[..., None]
    h, w = a.shape[:2]
    out = np.empty((1 if y_only else 3, h, w), np.float32)
    for r in range(0, h, _STRIP_ROWS):
        s = slice(r, min(r + _STRIP_ROWS, h))
        v = luminance(a[s])[None] if y_only else np.moveaxis(a[s].astype(np.float64), -1, 0)
        out[:, s] = v / 127.5 - 1.0
    return torch.from_numpy(out)


_STRIP_ROWS = 256


def center_crop(img: np.ndarray, size: int | None) -> np.ndarray:
    """The central ``size``×``size`` window of ``[H, W(, C)]`` (the whole image when ``size`` is
    None or not smaller than it)."""
    if not size:
        return img
    h, w = img.shape[:2]
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the image ({h}×{w}); use a smaller crop or none")
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size]


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """float tensor in [-1, 1], ``[1, H, W]`` / ``[3, H, W]`` (or ``[H, W]``) -> uint8 ``[H, W]`` / ``[H, W, 3]``."""
    a = t.detach().cpu().double().numpy()
    a = np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)
    return a


# --------------------------------------------------------------------------------------------
# Folder datasets
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Synthetic pairs with ground truth
# --------------------------------------------------------------------------------------------

#: All-in-focus photos and textures shipped inside the scikit-image wheel (no network needed).
#: ``motorcycle_left`` comes with a real disparity map (Middlebury 2014) used for depth masks.
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "brick", "grass", "gravel")

DEFAULT_SYNTHETIC_DIR = REPO_ROOT / "data" / "generated" / "synthetic"


@lru_cache(maxsize=None)
def _load_skimage(name: str) -> tuple[np.ndarray, np.ndarray | None]:
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


def _shape_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Signed field whose upper level sets are a random half-plane, ellipse or rotated rectangle."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    s = max(h, w)
    y, x = (2 * y - (h - 1)) / s, (2 * x - (w - 1)) / s
    kind = rng.choice(["halfplane", "ellipse", "rectangle"])
    th = rng.uniform(0, np.pi)
    u = x * np.cos(th) + y * np.sin(th)
    v = -x * np.sin(th) + y * np.cos(th)
    if kind == "halfplane":
        return u
    cu, cv = rng.uniform(-0.5, 0.5, size=2)
    a, b = rng.uniform(0.3, 1.0, size=2)
    if kind == "ellipse":
        return -np.hypot((u - cu) / a, (v - cv) / b)
    return -np.maximum(np.abs(u - cu) / a, np.abs(v - cv) / b)


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
        field = np.max([_shape_field((h, w), rng) for _ in range(int(rng.integers(1, 4)))], axis=0)
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
