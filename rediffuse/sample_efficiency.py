"""Why equivariance helps: the Rot-E U-Net and its plain twin trained alike on few pairs, then tested
upright and turned.

The two networks differ only in their convolutions (``conv="bconv"`` or ``"plain"``, equal channel
widths). At each training-set size both see the same pairs, crops, steps, batch and seed, and no
rotation augmentation (``TrainConfig.augment=False``): every training crop is upright. On held-out
pairs we then measure

- fusion quality — PSNR of the fused luminance against the ground truth — against the number of
  training pairs, with the test pairs upright and turned by 90° and 45°;
- at any angle θ, for the models trained on the most pairs: that PSNR, and the *consistency error*
  ``mean |Φ(R_θ A, R_θ B) − R_θ Φ(A, B)|`` in grey levels (0–255): how far fusing the turned pair is
  from turning the fused upright pair.

A test view (:class:`Views`; squares centred on the image centre): a ``source`` window turned by θ
(an exact ``rot90`` at multiples of 90°, bicubic otherwise), its central ``window`` fused (with the
sampler's starting noise turned the same way, so that any difference comes from the network; between
quarter turns the interpolated noise is a little smoother, for both models alike), and
the scores taken on the central ``compare`` square, far enough inside that turning never brings in
pixels from outside the source window, and the network's zero padding at the window's edge barely
reaches it.

Runs live in ``<root>/n<pairs>-<model>`` (trained by :func:`rediffuse.ablation.train_variants`:
finished runs are kept, unfinished ones resumed, other settings refused) and every model's scores in
``<root>/scores-n<pairs>-<model>.json``, reused while the run's step and the test settings match, so
an interrupted study picks up where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from skimage.transform import resize

from .ablation import train_variants
from .data import SKIMAGE_PHOTOS, FusionFolder, focus_mask, make_pair, skimage_photo
from .fuse import FusionModel
from .groups import rotate_image, rotate_image_angle
from .imageio import write_image
from .paths import REPO_ROOT
from .train import TrainConfig, preset_config, read_run_config
from .unet import count_parameters

__all__ = ["MODELS", "CONTROLS", "Views", "study_config", "nested_subsets", "train_study", "load_views", "turn",
           "fuse_turned", "score_model", "run_study", "study_rows", "render_upright_pairs", "ANGLES_TABLE",
           "study_summary", "load_recorded_study", "RECORDED_STUDY"]

# variant key -> (label, TrainConfig overrides), in the form rediffuse.ablation.train_variants takes
MODELS: dict[str, tuple[str, dict]] = {
    "bconv": ("Rot-E (B-Conv)", {"model": {"conv": "bconv"}}),
    "plain": ("plain twin", {"model": {"conv": "plain"}}),
}
# A control for the capacity question the twins leave open: at equal channel widths the plain twin has
# three times the Rot-E model's parameters; at base 8 (GroupNorm groups 2, the same channels per group)
# it has about as many (274,705 against 242,825 for the small preset).
CONTROLS: dict[str, tuple[str, dict]] = {
    "plain-b8": ("plain, base 8 (Rot-E's parameters)", {"model": {"conv": "plain", "base": 8, "groups": 2}}),
}
ANGLES_TABLE = (0.0, 90.0, 45.0)  # the table's columns: upright, a quarter turn, an angle outside C4
# the full study's table (8, 32, 90 NYU-D pairs, 1,000 steps, with the control), as its run recorded it
RECORDED_STUDY = REPO_ROOT / "benchmarks" / "results" / "why_equivariance_full.json"


@dataclass(frozen=True)
class Views:
    """Sizes of a test view: fuse a ``window``² square, score its central ``compare``² square.
    ``source`` (the square that is turned) is the smallest that still fills the window at 45°."""

    window: int = 224
    compare: int = 96

    def __post_init__(self):
        if not 8 <= self.compare <= self.window / math.sqrt(2):
            raise ValueError(f"compare ({self.compare}) must be 8 to window/√2 ({self.window / math.sqrt(2):.0f}) "
                             "pixels, so that it stays inside the fused window at every angle")
        if (self.window - self.compare) % 2:
            raise ValueError(f"window ({self.window}) and compare ({self.compare}) must both be even or both odd: "
                             "only then is the central square of a quarter-turned window the turned central square")

    @property
    def source(self) -> int:
        """Side of the turned square: ≥ window·√2 + 2, of the window's parity (see ``compare``)."""
        return self.window + 2 * (math.ceil(self.window * (math.sqrt(2) - 1) / 2) + 1)


def study_config(steps: int, *, batch: int = 8, crop: int = 64, seed: int = 0, **overrides: Any) -> TrainConfig:
    """The small preset's weight-map U-Net (base 16, ×[1, 2, 4]), trained ``steps`` steps on upright
    crops (``augment=False``); ``overrides`` go to :func:`rediffuse.train.preset_config`."""
    over = dict(ckpt_every=max(1, steps // 4), log_every=10)
    over.update(overrides)
    return preset_config("small", steps=steps, batch=batch, crop=crop, seed=seed, augment=False, **over)


def nested_subsets(stems: Sequence[str], sizes: Iterable[int], seed: int = 0) -> dict[int, list[str]]:
    """``{n: the first n stems of one seeded shuffle}``: every smaller training set is part of every
    larger one, so a size adds pairs and changes nothing else. ``n`` above ``len(stems)`` is an error."""
    stems = list(stems)
    order = [stems[i] for i in np.random.default_rng(seed).permutation(len(stems))]
    out = {}
    for n in sorted(set(int(n) for n in sizes)):
        if not 1 <= n <= len(stems):
            raise ValueError(f"a training set of {n} pairs: the folder has {len(stems)} training pairs")
        out[n] = sorted(order[:n])
    return out


def train_study(folder: str | Path, subsets: dict[int, list[str]], base: TrainConfig, root: str | Path, *,
                device: str = "cpu", progress: bool = False, replace_other: bool = False,
                models: dict[str, tuple[str, dict]] = MODELS) -> dict[int, dict[str, Path]]:
    """Train every model of ``models`` (default: the two twins) on each subset of ``folder`` (``base``
    with that folder as its only data and every other stem excluded); returns ``{n: {model key:
    checkpoint}}``. ``replace_other``: see :func:`rediffuse.ablation.train_variants`."""
    folder = Path(folder).resolve()
    every = FusionFolder(folder).stems
    out = {}
    for n, keep in subsets.items():
        wanted = set(keep)
        cfg = dataclasses.replace(base, data=[str(folder)], exclude=[s for s in every if s not in wanted],
                                  synthetic=0, layered=0)
        out[n] = train_variants(cfg, models, root, prefix=f"n{n}-", device=device, progress=progress,
                                replace_other=replace_other)
    return out


def _centre(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size``² square of ``[..., H, W]`` (the same one ``rot90`` maps onto itself)."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"a {w}×{h} image is smaller than the {size}² square a test view needs")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def turn(x: torch.Tensor, degrees: float, size: int) -> torch.Tensor:
    """``[B, C, S, S]`` turned by ``degrees`` (counter-clockwise, as ``torch.rot90``) about its centre,
    then its central ``size``² square. Multiples of 90° are exact index permutations."""
    k = degrees / 90.0
    if abs(k - round(k)) < 1e-9:
        out = rotate_image(x, int(round(k)))
    else:  # float64 so that the interpolation adds no float32 round-off of its own
        out = rotate_image_angle(x.double(), math.radians(degrees), mode="bicubic").to(x.dtype)
    return _centre(out, size)


def load_views(folder: str | Path, stems: Sequence[str], views: Views, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """The central ``views.source``² square of each held-out pair: ``"A"``, ``"B"``, ``"GT"`` luminance
    ``[1, 1, S, S]`` in [-1, 1], and ``"noise"`` (the sampler's start, seeded by ``(seed, index)``)."""
    ds = FusionFolder(folder, stems=list(stems), require_gt=True)
    out = []
    for i in range(len(ds)):
        item = ds[i]
        pair = {k: _centre(item[k][None], views.source).contiguous() for k in ("A", "B", "GT")}
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        pair["noise"] = torch.randn(pair["GT"].shape, generator=g)
        out.append(pair)
    return out


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (x.double() + 1) * 127.5


def _psnr(x: torch.Tensor, gt: torch.Tensor) -> float:
    mse = float(((_grey(x) - _grey(gt)) ** 2).mean())
    return 10 * math.log10(255.0 ** 2 / mse) if mse > 0 else math.inf


@torch.no_grad()
def fuse_turned(fm: FusionModel, pair: dict[str, torch.Tensor], degrees: float, views: Views,
                upright: torch.Tensor | None = None) -> dict[str, Any]:
    """Fuse ``pair`` turned by ``degrees``; returns ``{"fused": [1, 1, c, c], "gt": [1, 1, c, c],
    "psnr": dB, "consistency": mean grey-level |Φ(turned) − turn(Φ(upright))|, "upright": the fused
    upright window [1, 1, w, w]}`` (``c`` = ``views.compare``, ``w`` = ``views.window``). Pass the
    upright window back as ``upright`` to skip fusing it again."""
    w, c = views.window, views.compare

    def fuse_at(deg: float) -> torch.Tensor:
        a, b, noise = (turn(pair[k], deg, w) for k in ("A", "B", "noise"))
        return fm.sample(torch.cat([a, b], 1), fm.settings(), x_T=noise).cpu()

    if upright is None:
        upright = fuse_at(0.0)
    fused = upright if degrees % 360 == 0 else fuse_at(degrees)
    gt = _centre(turn(pair["GT"], degrees, w), c)
    fused_c = _centre(fused, c)
    expected = turn(upright, degrees, c)  # the upright result turned: what an equivariant model gives
    return {"fused": fused_c, "gt": gt, "psnr": _psnr(fused_c, gt),
            "consistency": float((_grey(fused_c) - _grey(expected)).abs().mean()), "upright": upright}


def score_model(checkpoint: str | Path, pairs: Sequence[dict[str, torch.Tensor]], angles: Sequence[float],
                views: Views, device: str = "cpu") -> dict[str, Any]:
    """Mean PSNR and consistency error over ``pairs`` at every angle, with the model's default sampler:
    ``{"angles": [...], "psnr": [...], "consistency": [...], "parameters": int}``."""
    fm = FusionModel(str(checkpoint), device=device)
    psnr, cons = np.zeros((len(pairs), len(angles))), np.zeros((len(pairs), len(angles)))
    for i, pair in enumerate(pairs):
        upright = None
        for j, deg in enumerate(angles):
            r = fuse_turned(fm, pair, deg, views, upright)
            upright = r["upright"]
            psnr[i, j], cons[i, j] = r["psnr"], r["consistency"]
    return {"angles": [float(a) for a in angles], "psnr": psnr.mean(0).tolist(),
            "consistency": cons.mean(0).tolist(), "parameters": count_parameters(fm.model)}


def _cached(path: Path, key: dict, compute: Callable[[], dict]) -> dict:
    """``compute()``, stored in ``path`` with ``key``; a stored value with the same key is reused."""
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                return stored["value"]
        except (ValueError, KeyError):
            pass  # a file cut short or from another version: computed again
    value = compute()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"key": key, "value": value}, indent=1))
    os.replace(tmp, path)
    return value


def run_study(train_folder: str | Path, train_stems: Sequence[str], test_folder: str | Path,
              test_stems: Sequence[str], sizes: Sequence[int], base: TrainConfig, root: str | Path, *,
              views: Views = Views(), curve_step: float = 15.0, device: str = "cpu", progress: bool = False,
              replace_other: bool = False, log: Callable[[str], None] | None = None,
              models: dict[str, tuple[str, dict]] = MODELS) -> dict[str, Any]:
    """Train (or reuse) every model of ``models`` (default: the two twins; add :data:`CONTROLS` for the
    parameter-matched plain network) at every size, score them at ``ANGLES_TABLE`` and, for the largest
    size, at every ``curve_step`` degrees from 0 to 360. Returns ``{"sizes", "labels", "table":
    {n: {model: score_model output}}, "curve": {model: score_model output}, "checkpoints": {n: {model:
    path}}, "config": ...}``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _: None)
    subsets = nested_subsets(train_stems, sizes, seed=base.seed)
    pairs = load_views(test_folder, test_stems, views, seed=base.seed)
    # the curve's grid, plus the table's angles when the grid misses them
    curve_angles = sorted({*(round(float(a), 6) for a in np.arange(0.0, 360.0 + 1e-9, curve_step)), *ANGLES_TABLE})
    largest = max(subsets)
    table: dict[int, dict[str, Any]] = {}
    curve: dict[str, Any] = {}
    paths: dict[int, dict[str, str]] = {}
    for n in subsets:  # one size at a time, so that an interrupted study has whole sizes done
        checkpoints = train_study(train_folder, {n: subsets[n]}, base, root, device=device, progress=progress,
                                  replace_other=replace_other, models=models)[n]
        table[n] = {}
        paths[n] = {key: str(ck) for key, ck in checkpoints.items()}
        for key, ck in checkpoints.items():
            angles = curve_angles if n == largest else list(ANGLES_TABLE)
            # the run (every setting and its step) and the test: scores are reused only when both match
            cfg, step = read_run_config(Path(ck).parent)
            score_key = {"run": json.loads(json.dumps(dataclasses.asdict(cfg), default=list)), "step": step,
                         "angles": angles, "views": dataclasses.asdict(views),
                         "test": [str(Path(test_folder).resolve()), list(test_stems)], "seed": base.seed}
            scores = _cached(root / f"scores-n{n}-{key}.json", score_key,
                             lambda: score_model(ck, pairs, angles, views, device))
            table[n][key] = _at(scores, ANGLES_TABLE)
            if n == largest:
                curve[key] = scores
            say(f"{n} pairs, {models[key][0]}: PSNR " + ", ".join(
                f"{a:g}° {p:.2f} dB" for a, p in zip(table[n][key]["angles"], table[n][key]["psnr"])))
    return {"sizes": sorted(subsets), "labels": {k: v[0] for k, v in models.items()}, "table": table,
            "curve": curve, "checkpoints": paths, "views": dataclasses.asdict(views), "test_pairs": len(pairs),
            "config": {"steps": base.steps, "batch": base.batch, "crop": base.crop, "seed": base.seed,
                       "augment": base.augment, "model": dict(base.model)}}


def _at(scores: dict, angles: Sequence[float]) -> dict:
    """``score_model`` output restricted to ``angles`` (in that order)."""
    idx = [scores["angles"].index(float(a)) for a in angles]
    return {"angles": [float(a) for a in angles], "psnr": [scores["psnr"][i] for i in idx],
            "consistency": [scores["consistency"][i] for i in idx], "parameters": scores["parameters"]}


def study_rows(study: dict[str, Any], total_pairs: int | None = None) -> list[dict[str, Any]]:
    """One row per (size, model) for a table: pairs, model, parameters, PSNR and consistency error at
    each of ``ANGLES_TABLE`` (keys ``"PSNR 0°"``, ``"error 90°"``, …). ``total_pairs`` marks the size
    that uses the whole training set."""
    rows = []
    for n in study["sizes"]:
        for key, s in study["table"][n].items():
            label = f"{n} (all)" if total_pairs is not None and n == total_pairs else str(n)
            row = {"pairs": label, "model": study["labels"][key], "parameters": s["parameters"]}
            row.update({f"PSNR {a:g}°": p for a, p in zip(s["angles"], s["psnr"])})
            row.update({f"error {a:g}°": e for a, e in zip(s["angles"], s["consistency"]) if a % 360})
            rows.append(row)
    return rows


def render_upright_pairs(out_dir: str | Path, n: int, size: int, seed: int = 0,
                         photos: Sequence[str] = SKIMAGE_PHOTOS) -> Path:
    """Write ``n`` multi-focus pairs with ground truth (``A/``, ``B/``, ``GT/`` PNG, ``size``²) cut
    upright from scikit-image photos — the stand-in when NYU-D-100 is absent. Unlike
    ``data.SyntheticPairs`` nothing is turned or flipped: the study needs upright training data.
    Pair ``i`` depends only on ``(seed, i)``; a pair already on disk is kept."""
    out = Path(out_dir)
    for i in range(n):
        stem = f"upright-{i:04d}"
        if all((out / k / f"{stem}.png").is_file() for k in ("A", "B", "GT")):
            continue
        rng = np.random.default_rng([seed, i])
        img = skimage_photo(str(photos[int(rng.integers(len(photos)))]))
        h, w = img.shape[:2]
        win = min(h, w, int(rng.integers(size, max(size, min(h, w)) + 1)))
        top, left = int(rng.integers(0, h - win + 1)), int(rng.integers(0, w - win + 1))
        patch = img[top:top + win, left:left + win]
        if win != size:
            patch = np.clip(np.rint(resize(patch, (size, size), order=1, anti_aliasing=win > size,
                                           preserve_range=True)), 0, 255).astype(np.uint8)
        mask = focus_mask((size, size), str(rng.choice(["blobs", "regions"])), rng)
        kind = str(rng.choice(["gaussian", "disk"]))
        strength = float(rng.uniform(2.0, 5.0))
        a, b, gt = make_pair(patch, mask, kind, strength)
        for key, img_ in (("A", a), ("B", b), ("GT", gt)):
            write_image(out / key / f"{stem}.png", img_)
    return out


def load_recorded_study(path: str | Path = RECORDED_STUDY) -> dict[str, Any]:
    """The recorded full study (``benchmarks/results/why_equivariance_full.json``): ``{"source", "config",
    "sizes", "labels", "table"}``, ``table`` as :func:`run_study` returns it (sizes as ints)."""
    data = json.loads(Path(path).read_text())
    data["table"] = {int(n): t for n, t in data["table"].items()}
    data["sizes"] = [int(n) for n in data["sizes"]]
    return data


def study_summary(table: dict) -> dict[str, Any]:
    """What a study's table (:func:`run_study`'s ``"table"``, PSNR at :data:`ANGLES_TABLE`) says, in dB:

    - ``plain_lead``: per size, the plain twin's PSNR minus Rot-E's at each angle (upright, 90°, 45°);
    - ``turn90_loss``: per model and size, upright PSNR minus PSNR turned by 90° (Rot-E: 0 to round-off);
    - ``rote_minus_control``: per size, Rot-E minus the parameter-matched plain network at each angle
      (only when the table has the control ``plain-b8``).
    Sizes are the table's keys as given."""
    out: dict[str, Any] = {"sizes": list(table), "angles": list(ANGLES_TABLE), "plain_lead": {}, "turn90_loss": {},
                           "rote_minus_control": {}}
    up, q = ANGLES_TABLE.index(0.0), ANGLES_TABLE.index(90.0)
    for n, models in table.items():
        rote = models["bconv"]["psnr"]
        out["plain_lead"][n] = [p - r for p, r in zip(models["plain"]["psnr"], rote)]
        for key, scores in models.items():
            out["turn90_loss"].setdefault(key, {})[n] = scores["psnr"][up] - scores["psnr"][q]
        if "plain-b8" in models:
            out["rote_minus_control"][n] = [r - c for r, c in zip(rote, models["plain-b8"]["psnr"])]
    if not out["rote_minus_control"]:
        del out["rote_minus_control"]
    return out
