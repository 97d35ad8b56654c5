"""Training pairs and stacks synthesised from all-in-focus photos with the layered defocus model.

``PhotoLibrary`` loads a folder tree of photos once (split into training and validation *photos*:
a validation pair is never cut from a training photo). ``LayeredPairs`` draws, for item ``i`` of
epoch ``e``, a random window of a random photo, a random scene of depth layers (random shapes, a
smooth depth map, or image segments so that focus boundaries follow object edges), a thin-lens
blur per layer and frame (disk or Gaussian PSF, largest radius 1–12 px), and the nuisances of real
stacks: exposure differences between frames (±30 %), focus breathing (±1.5 % magnification with a
sub-pixel shift), Poisson–Gaussian noise, JPEG re-encoding and 8-bit quantisation. The target is
the photo itself, in the exposure of the frame that sees each region sharpest
(:func:`rediffuse.defocus.composite_ground_truth`).

Items are dicts like :class:`rediffuse.data.FusionFolder`'s: ``"A"``, ``"B"`` (…), ``"GT"`` float32
in [-1, 1] ``[C, S, S]``, plus ``"band"`` (bool ``[S, S]``, within 15 px of a focus boundary) and
``"stem"``.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from skimage.segmentation import felzenszwalb
from torch.utils.data import Dataset

from .data import shape_field
from .defocus import boundary_band, composite_ground_truth, render_stack, soft_layers
from .evidence import REFERENCES, best_of_rest, sharpness
from .imageio import IMAGE_EXTENSIONS, read_image, write_image
from .paths import dataset_dir

__all__ = ["PhotoLibrary", "LayeredPairs", "LayeredStackItems", "library_for", "default_photo_root", "scene_labels", "write_validation_set",
           "DEFAULT_FOLDER_WEIGHTS", "MAX_RADIUS"]

#: Sampling weight per top-level photo folder (architecture-heavy Urban100 weighted down).
DEFAULT_FOLDER_WEIGHTS = {"Urban100": 0.3}
#: Largest defocus radius (px) drawn for a training scene.
MAX_RADIUS = 12.0
_MARGIN = 16  # rendered around the crop: circular FFT blur and magnification stay inside it


def _is_validation(rel: str, fraction: float) -> bool:
    """A stable split by file name: the same photos are held out on every machine."""
    h = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16)
    return (h % 10_000) < fraction * 10_000


class PhotoLibrary:
    """All-in-focus photos under ``root`` (searched recursively), decoded once into memory.

    ``split``: ``"train"`` or ``"val"`` (a stable ``val_fraction`` of the photos by file name);
    ``y_only`` keeps only the luminance (a third of the memory); photos with a short side above
    ``max_side`` are downscaled to it once at load time.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", val_fraction: float = 0.08,
                 y_only: bool = True, max_side: int = 768,
                 folder_weights: dict[str, float] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"photo folder not found: {self.root}")
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        rels = [p.relative_to(self.root).as_posix() for p in files]
        keep = [(p, r) for p, r in zip(files, rels) if _is_validation(r, val_fraction) == (split == "val")]
        if not keep:
            raise ValueError(f"{self.root}: no photos in the {split!r} split ({len(files)} images found)")
        self.split, self.y_only = split, y_only
        self.names = [r for _, r in keep]
        weights = dict(DEFAULT_FOLDER_WEIGHTS if folder_weights is None else folder_weights)
        w = np.array([weights.get(r.split("/")[0], 1.0) for r in self.names], dtype=np.float64)
        self.probs = w / w.sum()
        self.images: list[np.ndarray] = []
        for p, _ in keep:
            img = read_image(p)
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            short = min(img.shape[:2])
            if short > max_side:
                s = max_side / short
                size = (round(img.shape[1] * s), round(img.shape[0] * s))
                img = np.asarray(Image.fromarray(img).resize(size, Image.LANCZOS))
            if y_only:
                img = np.asarray(Image.fromarray(img).convert("L"))
            self.images.append(np.ascontiguousarray(img))

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"PhotoLibrary({str(self.root)!r}, split={self.split!r}, n={len(self)}, y_only={self.y_only})"


# ------------------------------------------------------------------------------------ scenes

def _smooth_depth(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    y, x = y / max(h - 1, 1) - 0.5, x / max(w - 1, 1) - 0.5
    th = rng.uniform(0, 2 * np.pi)
    plane = x * np.cos(th) + y * np.sin(th)
    bumps = ndimage.gaussian_filter(rng.standard_normal((h, w)), rng.uniform(0.08, 0.2) * min(h, w), mode="wrap")
    return plane * rng.uniform(0, 1.5) + bumps / (bumps.std() + 1e-12) * 0.3


def _quantise(field: np.ndarray, n_layers: int, rng: np.random.Generator) -> np.ndarray:
    """Layer labels (0 = nearest = highest field) from quantiles at random cut points."""
    cuts = np.sort(rng.uniform(0.2, 0.8, size=n_layers - 1))[::-1]
    thr = np.quantile(field, cuts)
    labels = np.zeros(field.shape, np.int64)
    for t in thr:
        labels += field < t
    return labels


def scene_labels(patch: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int, str]:
    """Random depth layers for a ``[H, W]`` grey patch: (labels ``[H, W]``, L, kind)."""
    h, w = patch.shape[:2]
    kind = str(rng.choice(["shapes", "depth", "segments"], p=[0.4, 0.25, 0.35]))
    n_layers = int(rng.choice([2, 3, 4], p=[0.55, 0.3, 0.15]))
    if kind == "shapes":
        labels = np.full((h, w), n_layers - 1, np.int64)
        for layer in range(n_layers - 2, -1, -1):  # nearer shapes drawn last, on top
            labels[shape_field(h, w, rng) > 0] = layer
    elif kind == "depth":
        labels = _quantise(-_smooth_depth(h, w, rng), n_layers, rng)
    else:
        seg = felzenszwalb(patch, scale=float(rng.uniform(80, 400)), sigma=0.8, min_size=int(h * w / 200))
        field = -_smooth_depth(h, w, rng)
        n_seg = int(seg.max()) + 1
        mean = np.bincount(seg.ravel(), field.ravel(), n_seg) / np.maximum(np.bincount(seg.ravel(), None, n_seg), 1)
        labels = _quantise(mean[seg] + rng.normal(0, 0.3, n_seg)[seg], n_layers, rng)
    present = np.unique(labels)
    if len(present) < 2:  # degenerate draw: split by a half-plane instead
        labels = (shape_field(h, w, rng) <= 0).astype(np.int64)
        present = np.array([0, 1])
    remap = np.zeros(n_layers, np.int64)
    remap[present] = np.arange(len(present))
    return remap[labels], len(present), kind


def _lens(n_layers: int, n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Blur radii ``[N, L]`` from inverse depths and focus positions; True when the PSF is a disk."""
    u = np.sort(rng.uniform(0, 1, n_layers - 2))[::-1] if n_layers > 2 else np.zeros(0)
    u = np.concatenate([[1.0], u, [0.0]])  # inverse depth, layer 0 nearest
    focus = np.linspace(1.0, 0.0, n_frames)
    if rng.uniform() < 0.2:  # focus a little off every layer: nothing perfectly sharp
        focus = np.clip(focus + rng.uniform(-0.12, 0.12, n_frames), 0, 1)
    focus = focus[rng.permutation(n_frames)]  # which source is near-focused is random
    r_max = math.exp(rng.uniform(math.log(1.0), math.log(MAX_RADIUS)))
    return r_max * np.abs(u[None, :] - focus[:, None]), bool(rng.uniform() < 0.6)


def _breathing(frame: torch.Tensor, scale: float, shift: tuple[float, float]) -> torch.Tensor:
    """Magnify ``[C, H, W]`` about its centre and shift it (bicubic), as focus breathing does."""
    C, H, W = frame.shape
    theta = torch.tensor([[1 / scale, 0, 2 * shift[1] / W], [0, 1 / scale, 2 * shift[0] / H]], dtype=torch.float32)
    grid = F.affine_grid(theta[None], [1, C, H, W], align_corners=False)
    return F.grid_sample(frame[None], grid, mode="bicubic", padding_mode="reflection", align_corners=False)[0]


def _jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


class LayeredPairs(Dataset):
    """Random multi-focus pairs (or stacks of ``frames`` ≥ 2) from a :class:`PhotoLibrary`.

    Item ``i`` is a pure function of (``seed``, epoch, ``i``); call ``set_epoch`` for fresh draws.
    ``n`` is the nominal length (how many items an epoch indexes). ``nuisances=False`` gives clean
    renders (no exposure difference, breathing, noise or JPEG), as used for ground-truth validation
    of the defocus model itself.
    """

    def __init__(self, library: PhotoLibrary, n: int = 10_000, size: int = 128, frames: int = 2,
                 seed: int = 0, nuisances: bool = True, max_zoom: float = 2.5) -> None:
        if size < 16 or frames < 2 or n < 1:
            raise ValueError(f"need size >= 16, frames >= 2, n >= 1 (got {size}, {frames}, {n})")
        self.library, self.n, self.size, self.frames = library, int(n), int(size), int(frames)
        self.seed, self.epoch, self.nuisances, self.max_zoom = int(seed), 0, bool(nuisances), float(max_zoom)
        self.y_only = library.y_only
        self.keys = [chr(ord("A") + k) for k in range(frames)]

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _window(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        j = int(rng.choice(len(self.library), p=self.library.probs))
        img = self.library.images[j]
        full = self.size + 2 * _MARGIN
        h, w = img.shape[:2]
        zoom_max = max(1.0, min(self.max_zoom, min(h, w) / full))
        zoom = math.exp(rng.uniform(0, math.log(zoom_max)))
        win = min(int(round(full * zoom)), h, w)
        top, left = int(rng.integers(0, h - win + 1)), int(rng.integers(0, w - win + 1))
        patch = img[top:top + win, left:left + win]
        if win != full:
            patch = np.asarray(Image.fromarray(patch).resize((full, full), Image.LANCZOS if win > full else Image.BICUBIC))
        k = int(rng.integers(4))
        patch = np.rot90(patch, k, axes=(0, 1))
        if rng.uniform() < 0.5:
            patch = patch[:, ::-1]
        return np.ascontiguousarray(patch), self.library.names[j]

    def sample(self, index: int) -> dict[str, Any]:
        """Item ``index`` as numpy: frames ``"A"``, ``"B"``, … and ``"GT"`` uint8 ``[S, S(, 3)]``,
        ``"band"`` bool, ``"sharpest"`` (index of the sharpest frame per pixel), ``"reference"`` (the
        frame whose framing the truth has; the others breathe about it) and what was drawn."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} items")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        patch, name = self._window(rng)
        grey = patch if patch.ndim == 2 else np.asarray(Image.fromarray(patch).convert("L"))
        labels, n_layers, kind = scene_labels(grey, rng)
        radii, disk = _lens(n_layers, self.frames, rng)
        img = torch.from_numpy(patch.astype(np.float32) / 255.0)
        img = img[None] if img.ndim == 2 else img.permute(2, 0, 1)
        softness = torch.tensor([rng.uniform(0.3, 1.2)], dtype=torch.float32)
        mattes = soft_layers(torch.from_numpy(labels)[None], n_layers, softness)
        r = torch.from_numpy(radii).to(torch.float32)[None]
        stack = render_stack(img[None], mattes, r, disk=disk)[0]  # [N, C, H, W]
        gains = np.ones(self.frames)
        if self.nuisances and rng.uniform() < 0.7:
            gains[int(rng.integers(self.frames))] = math.exp(rng.uniform(-math.log(1.3), math.log(1.3)))
        gt = composite_ground_truth(img[None], mattes, r, torch.from_numpy(gains).to(torch.float32)[None])[0]
        frames = [(stack[n] * float(gains[n])).clamp(0, 1) for n in range(self.frames)]
        ref = 0  # the frame whose framing the truth has (the others breathe about it)
        if self.nuisances:
            ref = int(rng.integers(self.frames))
            for n in range(self.frames):
                if n != ref and rng.uniform() < 0.4:
                    frames[n] = _breathing(frames[n], 1 + rng.uniform(-0.015, 0.015),
                                           (rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5))).clamp(0, 1)
        m, s = _MARGIN, self.size
        crop = lambda t: t[..., m:m + s, m:m + s]  # noqa: E731
        frames, gt = [crop(f) for f in frames], crop(gt)
        band = boundary_band(crop(mattes))[0].numpy()
        sharpest = torch.from_numpy(radii.argmin(0))[crop(mattes)[0].argmax(0)].numpy()
        out: dict[str, Any] = {}
        for key, f in zip(self.keys, frames):
            x = f.permute(1, 2, 0).numpy()
            if self.nuisances and rng.uniform() < 0.5:  # Poisson–Gaussian sensor noise
                var = rng.uniform(0, 2e-4) * x + rng.uniform(0, 4e-3) ** 2
                x = x + rng.standard_normal(x.shape).astype(np.float32) * np.sqrt(var)
            x8 = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
            x8 = x8[..., 0] if x8.shape[-1] == 1 else x8
            if self.nuisances and rng.uniform() < 0.3:
                x8 = _jpeg(x8, int(rng.integers(75, 96)))
            out[key] = x8
        g8 = np.clip(np.rint(gt.permute(1, 2, 0).numpy() * 255), 0, 255).astype(np.uint8)
        out["GT"] = g8[..., 0] if g8.shape[-1] == 1 else g8
        out.update(band=band, sharpest=sharpest, stem=f"layered-{self.epoch}-{index:06d}", photo=name,
                   scene=kind, layers=n_layers, radii=radii, disk=disk, gains=gains, reference=ref)
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        d = self.sample(index)
        out: dict[str, Any] = {key: _to_unit(d[key]) for key in self.keys + ["GT"]}
        out["band"] = torch.from_numpy(d["band"])
        out["stem"] = d["stem"]
        return out


def _to_unit(a: np.ndarray) -> torch.Tensor:
    """A uint8 image ``[S, S]`` or ``[S, S, 3]`` as a ``[C, S, S]`` tensor in [-1, 1]."""
    a = a.astype(np.float32) / 127.5 - 1
    return torch.from_numpy(a[None] if a.ndim == 2 else a.transpose(2, 0, 1).copy())


class LayeredStackItems(Dataset):
    """Training items for stacks, drawn as ``rediffuse.fuse`` uses the pair network on them: from a
    layered stack of N frames (N drawn from 2 … ``max_frames`` per item), frame i against the mean of
    the others.

    Item ``index`` (a pure function of ``seed``, epoch and ``index``, like :class:`LayeredPairs`):
    ``"A"`` frame i ``[C, S, S]`` in [-1, 1]; ``"B"`` the mean of the other N − 1 frames (each in
    [-1, 1], as ``stack.fuse_softmax`` forms it); ``"GT"`` the truth where frame i is the sharpest
    frame of the stack and ``B`` elsewhere, so the weight map that reproduces it is 1 exactly where
    frame i should win the softmax over frames and 0 where another frame should (against the mean
    of the rest, a frame of the second-best blur looks sharp too: the target says it is not);
    ``"band"`` bool ``[S, S]``. For N = 2 this is a pair whose target is the truth where A is the
    sharper frame and B where B is. ``reference="best"``: ``"B"`` is the best of the other frames
    instead of their mean (``evidence.best_of_rest``, as ``fuse`` forms it for such a model).
    """

    def __init__(self, library: PhotoLibrary, n: int = 10_000, size: int = 128, max_frames: int = 8,
                 seed: int = 0, nuisances: bool = True, reference: str = "mean") -> None:
        if max_frames < 2:
            raise ValueError(f"max_frames must be at least 2, got {max_frames}")
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
        self.reference = reference
        self.max_frames, self.n, self.seed, self.epoch = int(max_frames), int(n), int(seed), 0
        # one renderer per stack length; each draws its scene from (seed, epoch, index) as LayeredPairs does
        self.stacks = {k: LayeredPairs(library, n=n, size=size, frames=k, seed=seed, nuisances=nuisances)
                       for k in range(2, self.max_frames + 1)}

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for ds in self.stacks.values():
            ds.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])  # the choice of N and i only
        frames = int(rng.integers(2, self.max_frames + 1))
        i = int(rng.integers(frames))
        ds = self.stacks[frames]
        d = ds.sample(index)
        ys = [_to_unit(d[k]) for k in ds.keys]
        a = ys[i]
        if self.reference == "mean":
            b = (sum(ys) - a) / (frames - 1)
        else:
            y = [t.numpy() for t in ys]
            z = np.stack([sharpness(t) for t in y])[:, None]  # [N, 1, S, S]
            w = np.exp(z - z.max(0))
            b = torch.from_numpy(best_of_rest((w * np.stack(y)).sum(0), w.sum(0), w[i], y[i], sum(y), frames))
        wins = torch.from_numpy(d["sharpest"] == i)[None]
        return {"A": a, "B": b, "GT": torch.where(wins, _to_unit(d["GT"]), b), "band": torch.from_numpy(d["band"]),
                "stem": f"{d['stem']}-{frames}f{i}"}


def default_photo_root() -> Path | None:
    """``<shared>/data/photos`` when present."""
    return dataset_dir("photos")


def library_for(root: str | os.PathLike | None, split: str, y_only: bool) -> PhotoLibrary:
    """A :class:`PhotoLibrary` for ``root`` (default: the shared photos), cached per process."""
    key = (str(root or default_photo_root()), split, y_only)
    if key not in _LIBRARIES:
        if key[0] == "None":
            raise FileNotFoundError("no photo folder: give photos=DIR (a tree of all-in-focus photos) "
                                    "or set REDIFFUSE_SHARED to a folder holding data/photos")
        _LIBRARIES[key] = PhotoLibrary(key[0], split=split, y_only=y_only)
    return _LIBRARIES[key]


_LIBRARIES: dict[tuple[str, str, bool], PhotoLibrary] = {}


def write_validation_set(out_dir: str | os.PathLike, n: int = 60, size: int = 256, seed: int = 2026,
                         photos: str | os.PathLike | None = None, nuisances: bool = True) -> Path:
    """Write ``n`` colour pairs with ground truth made from the *validation* photos to
    ``out_dir/{A,B,GT,band}/val-XXXX.png`` (``band``: 255 within 15 px of a focus boundary), a folder
    that ``rediffuse evaluate`` scores with PSNR/SSIM over the image and inside the band.
    A ``SOURCE.txt`` records how it was made. Returns the folder."""
    out = Path(out_dir)
    library = PhotoLibrary(photos or default_photo_root() or "", split="val", y_only=False)
    ds = LayeredPairs(library, n=n, size=size, seed=seed, nuisances=nuisances)
    lines = []
    for i in range(n):
        d = ds.sample(i)
        stem = f"val-{i:04d}"
        for key in ("A", "B", "GT"):
            write_image(out / key / f"{stem}.png", d[key])
        write_image(out / "band" / f"{stem}.png", d["band"].astype(np.uint8) * 255)
        lines.append(f"{stem} photo={d['photo']} scene={d['scene']} layers={d['layers']} "
                     f"radii={np.round(d['radii'], 2).tolist()} disk={d['disk']} gains={np.round(d['gains'], 3).tolist()}")
    (out / "SOURCE.txt").write_text(
        "Synthetic multi-focus pairs made by rediffuse.synthesis.write_validation_set with the layered\n"
        "(alpha-matte) defocus model from the validation split of the photo library (never used for training).\n"
        f"n={n} size={size} seed={seed} nuisances={nuisances}\n"
        "band/ marks (255) the pixels within 15 px of a focus boundary.\n\n" + "\n".join(lines) + "\n")
    return out
