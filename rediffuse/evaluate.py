"""Score fusion methods on a dataset folder and build the Lytro leaderboard.

A *method* is a classical baseline name (``"gff"``, ``"average"``, …) or a checkpoint path (``*.pt``)
with a sampler and step count. ``evaluate_folder`` fuses every pair, scores it with
``rediffuse.metrics`` and writes::

    OUT/<method>/fused/<stem>.png   the fused images
    OUT/per_image.csv               one row per (image, method), appended as each is scored
    OUT/summary.md                  the mean table (markdown), and the pairs skipped as unreadable

Nothing scored is lost to a fault: every row reaches ``per_image.csv`` (flushed) the moment it is
computed, a pair that cannot be read is skipped with a warning (and named in the summary) instead
of ending the run, and ``resume=True`` continues an interrupted run, keeping the rows already in
``per_image.csv`` and computing only the missing ones.

For Lytro, ``leaderboard`` puts our means next to the 18 published methods of Liu et al. (2020),
scored by the reference MATLAB toolbox on the same source images; our metric code reproduces that
toolbox (``tests/test_metrics.py``), so the rows are comparable.
"""
from __future__ import annotations

import csv
import io
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .baselines import BASELINES, get_baseline
from .data import FusionFolder
from .fuse import SHIPPED_MODELS, FusionModel, fuse
from .groups import rotate_image
from .imageio import read_image, write_image
from .metrics import band_scores
from .metrics import evaluate as score_triple
from .peers import PEERS, get_peer
from .paths import reference_dir

__all__ = ["Method", "ScoreRows", "make_method", "evaluate_folder", "fused_path", "read_rows", "mean_table",
           "leaderboard", "markdown_table", "render_table", "LEADERBOARD_METRICS"]

LEADERBOARD_METRICS = ("QMI", "QG", "QP", "QE")  # the columns the reference CSV shares with ours


@dataclass
class Method:
    name: str
    fuse: Callable[[list[np.ndarray]], np.ndarray]


def make_method(spec: str, *, sampler: str | None = None, steps: int | None = None, device: str = "cpu",
                seed: int = 0, name: str | None = None) -> Method:
    """A baseline by name, or a checkpoint (a path ending in ``.pt`` or a ``fuse.SHIPPED_MODELS`` name)
    with its sampler settings. For comparison, a checkpoint spec may end in ``:raw`` (``weights:raw``:
    the network's weights kept in flat regions too, ``fuse(evidence_fill=False)``) and/or ``:plain``
    (the frames blended as they are, without the common local exposure, ``fuse(exposure=False)``)."""
    flags = set()
    while spec.endswith((":raw", ":plain")):
        spec, flag = spec.rsplit(":", 1)
        flags.add(flag)
    raw, plain = "raw" in flags, "plain" in flags
    if spec in BASELINES and not flags:
        return Method(name or spec, get_baseline(spec))
    if spec in PEERS and not flags:
        return Method(name or spec, get_peer(spec))
    # an existing folder goes to the loader too, which says it wants the checkpoint file inside
    if spec.endswith(".pt") or Path(spec).exists() or spec in SHIPPED_MODELS:
        fm = FusionModel(spec, device=device)
        st = fm.settings(sampler, steps, seed=seed)  # validated once, before any image is fused
        # a run's checkpoint is <run>/last.pt: its folder says which run it is
        stem = fm.path.parent.name if fm.path.stem == "last" else fm.path.stem
        label = name or f"{stem} ({st.sampler}, {st.steps} steps{', raw weights' if raw else ''}" \
            f"{', plain blend' if plain else ''})"
        return Method(label, lambda imgs: fuse(imgs, fm, sampler=st.sampler, steps=st.steps, seed=st.seed,
                                                evidence_fill=not raw, exposure=not plain))
    raise ValueError(f"unknown method {spec!r}: use a baseline ({', '.join(sorted(BASELINES))}), "
                     f"a peer program ({', '.join(PEERS)}), a shipped model ({', '.join(SHIPPED_MODELS)}) or a checkpoint file (*.pt)")


def fused_path(out_dir: str | Path, method: str, stem: str) -> Path:
    """Where ``evaluate_folder`` writes the fused image of ``stem`` by ``method``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in method).strip("_")
    return Path(out_dir) / safe / "fused" / f"{stem}.png"


class ScoreRows(list):
    """The rows :func:`evaluate_folder` returns (a list of dicts), with ``skipped``: the
    ``(stem, reason)`` of every pair that could not be read."""

    def __init__(self, rows=(), skipped: Sequence[tuple[str, str]] = ()):
        super().__init__(rows)
        self.skipped: list[tuple[str, str]] = list(skipped)


def _parse_row(raw: dict[str, str]) -> dict:
    """A row of ``per_image.csv`` with its numbers as floats (empty cells left out)."""
    row: dict = {"image": raw["image"], "method": raw["method"]}
    for k, v in raw.items():
        if k not in ("image", "method") and v not in ("", None):
            row[k] = float(v)
    return row


def read_rows(path: str | Path) -> tuple[list[str], list[dict]]:
    """``(columns, rows)`` of a ``per_image.csv``, numbers as floats. A last line cut short (a run
    killed while writing it) and rows that do not parse are left out."""
    text = Path(path).read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.reader(io.StringIO(text))
    columns = next(reader, [])
    rows = []
    for cells in reader:
        if len(cells) != len(columns):
            continue
        try:
            rows.append(_parse_row(dict(zip(columns, cells))))
        except (KeyError, ValueError):
            continue
    return columns, rows


class _RowLog:
    """``per_image.csv`` written as rows arrive: appended and flushed, so a killed run keeps every
    row it scored. A row with a column the header lacks rewrites the file with a wider header."""

    def __init__(self, path: Path, columns: list[str], rows: Sequence[dict] = ()):
        self.path = path
        self.columns = list(columns)
        self._rewrite(rows)

    def _rewrite(self, rows: Sequence[dict]) -> None:
        write_rows(self.path, rows, columns=self.columns)
        self._file = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, restval="")

    def write(self, row: dict, kept: Sequence[dict]) -> None:
        new = [k for k in row if k not in self.columns]
        if new:  # rare: a metric the first rows did not have; ``kept`` is everything written so far
            self.close()
            at = self.columns.index("seconds") if "seconds" in self.columns else len(self.columns)
            self.columns[at:at] = new
            self._rewrite(kept)
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def evaluate_folder(folder: str | Path, methods: Sequence[Method], out_dir: str | Path | None = None, *,
                    stems: Sequence[str] | None = None, limit: int | None = None, save_images: bool = True,
                    progress: bool = True, resume: bool = False) -> ScoreRows:
    """Fuse and score every item of ``folder`` (``A/``, ``B/``, optional ``GT/``) with each method.

    Returns rows ``{"image", "method", "QMI", "QG", "Qabf", "QP", "QE", "MS-SSIM", "SGF", ["PSNR", "SSIM"],
    ["PSNR-band", "SSIM-band"], "seconds"}`` (the band scores where ``folder/band/<stem>.png`` marks
    the pixels near focus boundaries, as synthetic validation sets do), one per item and method, as
    a :class:`ScoreRows` list whose ``skipped`` names the pairs that could not be read (each also a
    ``UserWarning``; the run goes on without them). With ``out_dir`` also writes fused images,
    ``per_image.csv`` (each row as soon as it is scored) and ``summary.md``; ``resume=True`` keeps
    the rows already in ``out_dir/per_image.csv`` and scores only the missing (image, method)
    pairs, while ``resume=False`` starts that file afresh. Only the first two sources of a stack are
    scored (the metrics are defined for pairs).
    """
    _check_methods(methods, limit)
    ds = FusionFolder(folder, stems=stems)
    items = ds.stems[:limit] if limit else ds.stems
    out = Path(out_dir) if out_dir else None
    log: _RowLog | None = None
    done: dict[tuple[str, str], dict] = {}
    written: list[dict] = []  # every row in per_image.csv, in file order
    if out is not None:
        log, written = _open_row_log(out / "per_image.csv", folder, ds.has_gt, resume)
        done = {(r["image"], r["method"]): r for r in written}
    rows = ScoreRows()
    bar = tqdm(total=len(items) * len(methods), desc="evaluate", unit="img", disable=not progress)
    try:
        for stem in items:
            todo = [m for m in methods if (stem, m.name) not in done]
            if not todo:
                rows.extend(done[(stem, m.name)] for m in methods)
                bar.update(len(methods))
                continue
            try:
                imgs = ds.load(stem)
                band_file = Path(folder) / "band" / f"{stem}.png"
                band = read_image(band_file) if band_file.is_file() else None
            except (ValueError, OSError) as e:  # one bad pair costs its own scores, not the run's
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                rows.skipped.append((stem, reason))
                warnings.warn(f"skipped {stem}: {reason}", stacklevel=2)
                rows.extend(done[(stem, m.name)] for m in methods if (stem, m.name) in done)
                bar.update(len(methods))
                continue
            sources = [imgs[k] for k in ds.sources]
            for method in methods:
                if (stem, method.name) in done:
                    rows.append(done[(stem, method.name)])
                    bar.update(1)
                    continue
                row, fused = _fuse_and_score(method, stem, sources, imgs.get("GT"), band)
                if out is not None and save_images:
                    # the image before its row: a row in per_image.csv means its image is on disk
                    write_image(fused_path(out, method.name, stem), fused)
                if log is not None:
                    log.write(row, written)
                    written.append(row)
                rows.append(row)
                bar.update(1)
    finally:
        bar.close()
        if log is not None:
            log.close()
    if out is not None:
        _write_text(out / "summary.md", summary_markdown(rows, folder))
    return rows


def _check_methods(methods: Sequence[Method], limit: int | None) -> None:
    """Refuse two methods of one name (their rows and images would mix) and a ``limit`` below 1."""
    names = [m.name for m in methods]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two methods share the name {dup[0]!r}; give them different names (e.g. rename "
                         "the checkpoint files or their run folders)")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be a whole number ≥ 1 (or None for every image), got {limit!r}")


def _open_row_log(csv_path: Path, folder: str | Path, has_gt: bool, resume: bool) -> tuple[_RowLog, list[dict]]:
    """``per_image.csv`` opened for the rows to come, and the rows it already holds (``resume``; else
    none: the file starts afresh). Its columns: the metrics the folder allows, and any it had."""
    columns = ["image", "method", "QMI", "QG", "Qabf", "QP", "QE", "MS-SSIM", "SGF"]
    if has_gt:
        columns += ["PSNR", "SSIM"] + (["PSNR-band", "SSIM-band"] if (Path(folder) / "band").is_dir() else [])
    columns.append("seconds")
    written: list[dict] = []
    if resume and csv_path.is_file():
        old_columns, written = read_rows(csv_path)
        columns = old_columns + [c for c in columns if c not in old_columns] if old_columns else columns
    return _RowLog(csv_path, columns, written), written


def _fuse_and_score(method: Method, stem: str, sources: list[np.ndarray], gt: np.ndarray | None,
                    band: np.ndarray | None) -> tuple[dict, np.ndarray]:
    """``(row, fused)``: the scores of ``method``'s fusion of ``sources`` (its first two are scored,
    against ``gt`` and inside ``band`` when given) and the seconds it took."""
    t0 = time.perf_counter()
    fused = method.fuse(sources)
    seconds = time.perf_counter() - t0
    row = {"image": stem, "method": method.name}
    row.update(score_triple(sources[0], sources[1], fused, gt=gt))
    if band is not None and gt is not None:
        row.update(band_scores(fused, gt, band))
    row["seconds"] = seconds
    return row, fused


def summary_markdown(rows: ScoreRows, folder: str | Path) -> str:
    """``summary.md``: the mean table over the scored images, and the pairs skipped as unreadable."""
    n = len({r["image"] for r in rows})
    text = markdown_table(mean_table(rows), title=f"Means over {n} images of {Path(folder).name}")
    if rows.skipped:
        text += f"\n{len(rows.skipped)} pair(s) skipped (unreadable; fix them and run again with --resume):\n\n"
        text += "".join(f"- {stem}: {reason}\n" for stem, reason in rows.skipped)
    return text


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text`` (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_rows(path: str | Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    """Replace ``path`` atomically with a CSV of ``rows`` (``columns``: default, every key in order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, restval="")
        w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def mean_table(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """``{method: {metric: mean over images}}`` (NaNs ignored), methods in first-seen order."""
    table: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        d = table.setdefault(r["method"], {})
        for k, v in r.items():
            if k in ("image", "method") or not isinstance(v, (int, float)):
                continue
            d.setdefault(k, []).append(float(v))
    return {m: {k: (float(np.nanmean(v)) if not all(math.isnan(x) for x in v) else math.nan) for k, v in d.items()}
            for m, d in table.items()}


def leaderboard(ours: dict[str, dict[str, float]], reference_csv: str | Path | None = None,
                images: Sequence[str] | None = None) -> list[dict]:
    """Published methods (means over the same images) and ours, sorted by QMI, best first.

    Each row: ``{"method", "source" ("published" or "ours"), QMI, QG, QP, QE}``.
    """
    if reference_csv is None:
        ref = reference_dir()
        if ref is None:
            raise FileNotFoundError("the reference tables (../shared/reference/liu2020-benchmark) are not present")
        reference_csv = ref / "reference_lytro.csv"
    with open(reference_csv) as f:
        ref_rows = list(csv.DictReader(f))
    if images is not None:
        keep = set(images)
        ref_rows = [r for r in ref_rows if r["image"] in keep]
    published: dict[str, dict[str, list[float]]] = {}
    for r in ref_rows:
        d = published.setdefault(r["method"], {})
        for k in LEADERBOARD_METRICS:
            d.setdefault(k, []).append(float(r[k]))
    board = [{"method": m, "source": "published", **{k: float(np.mean(v)) for k, v in d.items()}}
             for m, d in published.items()]
    board += [{"method": m, "source": "ours", **{k: d.get(k, math.nan) for k in LEADERBOARD_METRICS}}
              for m, d in ours.items()]
    return sorted(board, key=lambda r: -r["QMI"])


def render_table(headers: Sequence[str], cells: Sequence[Sequence[str]], align: str | None = None) -> str:
    """The one Markdown table renderer: the header row, the alignment row (``align``: one of ``l``, ``r``,
    ``c`` per column; ``None``: plain ``---``) and a line per row of ``cells`` (text already)."""
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    rule = "|" + "|".join(marks[a] for a in align) + "|" if align else "|" + "---|" * len(headers)
    lines = ["| " + " | ".join(headers) + " |", rule]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _metric_cell(column: str, v, digits: int) -> str:
    """A value of a metric table: ``digits`` decimals (2 for PSNR and seconds), ``–`` for NaN."""
    if not isinstance(v, float):
        return str(v)
    places = 2 if column in ("PSNR", "seconds") else digits
    if math.isnan(v):
        return "–"
    if v != 0 and abs(v) < 0.5 * 10.0 ** -places:  # would print as 0.00…: keep its size visible
        return f"{v:.2e}"
    return f"{v:.{places}f}"


def markdown_table(table: dict[str, dict[str, float]] | list[dict], title: str = "", digits: int = 4) -> str:
    """A markdown table from ``mean_table`` output or from ``leaderboard`` rows."""
    if isinstance(table, dict):
        rows = [{"method": m, **v} for m, v in table.items()]
    else:
        rows = list(table)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_metric_cell(c, r.get(c, ""), digits) for c in cols] for r in rows]
    head = [f"### {title}", ""] if title else []
    return "\n".join(head + [render_table(cols, cells)]) + "\n"


def fusion_equivariance_maps(fm, y_a, y_b, ks: Sequence[int] = (1, 2, 3), steps: int | None = None,
                             seed: int = 0) -> dict[int, np.ndarray]:
    """``|Φ(rot I) − rot Φ(I)|`` of a trained fusion model, per quarter turn ``k``.

    ``fm`` is a ``fuse.FusionModel``; ``y_a``, ``y_b`` are ``[1, 1, H, W]`` in [-1, 1]. The sampler's
    starting noise is rotated together with the sources, so any error comes from the network itself.
    Maps are ``[H, W]`` in grey levels (0–255 scale).
    """
    st = fm.settings(steps=steps, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(y_a.shape, generator=g)

    def run(a, b, noise):
        return fm.sample(torch.cat([a, b], 1), st, x_T=noise).cpu()

    base = run(y_a, y_b, x_T)
    maps = {}
    for k in ks:
        out = run(rotate_image(y_a, k), rotate_image(y_b, k), rotate_image(x_T, k))
        maps[k] = (127.5 * (out - rotate_image(base, k)).abs())[0, 0].double().numpy()
    return maps
