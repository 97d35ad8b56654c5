import numpy as np
import pytest

from rediffuse.data import generate_synthetic_folder
from rediffuse.fewstep import best_few_step, center_crop, curve_settings, curve_table, quality_cost_curve
from rediffuse.fuse import FusionModel


def test_curve_settings_reference_first_without_repeat():
    s = curve_settings([2000, 20, 5], "ddim", ("posterior_mean", 2000))
    assert s == [("posterior_mean", 2000), ("ddim", 2000), ("ddim", 20), ("ddim", 5)]
    assert curve_settings([50, 20], "ddim", ("ddim", 50)) == [("ddim", 50), ("ddim", 20)]


def test_center_crop():
    img = np.arange(7 * 9).reshape(7, 9)
    c = center_crop(img, 3)
    assert c.shape == (3, 3) and c[0, 0] == img[2, 3]
    assert center_crop(img, None) is img
    with pytest.raises(ValueError, match="larger than the image"):
        center_crop(img, 8)


def _rows(values):
    rows = []
    for img in ("a", "b"):
        for (sampler, k), v in values.items():
            rows.append({"image": img, "sampler": sampler, "steps": k, "evaluations": k, "QMI": v, "QG": 0.5,
                         "seconds": k / 100})
    return rows


def test_curve_table_and_best_setting():
    rows = _rows({("posterior_mean", 2000): 1.0, ("ddim", 50): 1.001, ("ddim", 20): 1.009, ("ddim", 5): 0.95})
    table = curve_table(rows, metrics=("QMI", "QG"))
    assert [(r["sampler"], r["steps"]) for r in table] == [("posterior_mean", 2000), ("ddim", 50), ("ddim", 20),
                                                           ("ddim", 5)]
    dev = {r["steps"]: r["max_rel_dev"] for r in table}
    assert dev[2000] == 0 and dev[50] == pytest.approx(0.001) and dev[5] == pytest.approx(0.05)
    assert table[0]["pairs"] == 2 and table[1]["seconds"] == pytest.approx(0.5)
    best = best_few_step(table)
    assert (best["sampler"], best["steps"]) == ("ddim", 20)  # cheapest within 1 %; 5 steps is 5 % off
    assert best_few_step(table, tolerance=0.001) is None  # 50 steps is within 0.1 % but above 20 evaluations
    with pytest.raises(ValueError, match="reference"):
        curve_table(rows, reference=("ddim", 7))


def test_quality_cost_curve_runs_and_is_reproducible(tiny_checkpoint, tmp_path):
    folder = generate_synthetic_folder(tmp_path / "syn", n=2, size=176, seed=3)
    fm = FusionModel(tiny_checkpoint)
    settings = [("posterior_mean", 6), ("ddim", 3), ("ddim", 1)]
    rows = quality_cost_curve(fm, folder, settings, crop=170, progress=False)
    assert len(rows) == 6 and {r["evaluations"] for r in rows} == {6, 3, 1}
    assert all(np.isfinite(r[m]) for r in rows for m in ("QMI", "QG", "Qabf", "QP", "QE", "MS-SSIM", "PSNR"))
    again = quality_cost_curve(fm, folder, settings[1:2], crop=170, progress=False)
    same = [r for r in rows if r["steps"] == 3]
    assert [r["QMI"] for r in again] == [r["QMI"] for r in same]
