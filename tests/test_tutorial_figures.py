"""Figures and tables of the tutorial that are easy to get subtly wrong: notebook 02's Figure-8 panels
show the turned photo and carry a colour bar; notebook 04's zoomed views crop where asked; small numbers
in tables keep their size instead of printing as 0."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from rediffuse.groups import rotate_image
from rediffuse.viz.common import fmt, markdown_table
from rediffuse.viz.evaluation import focus_boundary_box, fusion_view, truth_error_view, zoom_box
from rediffuse.viz.theorems import plot_error_maps, turned_input


def _photo():
    y, x = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    return (x / 24 + (y / 24) ** 2)[None, None]  # no symmetry: every turn looks different


def test_fig8_rows_show_the_input_turned_by_their_angle_with_a_colour_bar():
    photo = _photo()
    maps = {"net": np.random.default_rng(0).random((24, 24))}
    fig = plot_error_maps(photo, [(90, maps), (45, maps)])
    images = [ax.get_images()[0].get_array() for ax in fig.axes if ax.get_images()]
    turned = rotate_image(photo.double(), 1)[0, 0].numpy()
    assert np.allclose(images[0], turned) and not np.allclose(images[0], photo[0, 0].numpy())
    assert np.allclose(images[2], turned_input(photo, 45))
    titles = [ax.get_title() for ax in fig.axes]
    assert "input turned by 90°" in titles and "input turned by 45°" in titles
    colour_bars = [ax for ax in fig.axes if ax.get_ylabel().startswith("error / output range")]
    assert len(colour_bars) == 2


def test_turned_input_is_exact_for_quarter_turns():
    photo = _photo()
    for k in range(4):
        assert np.array_equal(turned_input(photo, 90 * k), rotate_image(photo.double(), k)[0, 0].numpy())


def test_zoom_box_stays_inside_the_image():
    assert zoom_box((100, 200), (0.5, 0.5), 4) == (38, 88, 25)
    top, left, side = zoom_box((100, 200), (1.0, 0.0), 2)
    assert (top, left, side) == (50, 0, 50)


def test_fusion_view_enlarges_the_requested_box():
    rng = np.random.default_rng(1)
    imgs = {"A": rng.integers(0, 256, (40, 60), dtype=np.uint8), "B": rng.integers(0, 256, (40, 60), dtype=np.uint8)}
    fig = fusion_view(imgs, box=(5, 7, 10), scores={"B": {"QMI": 1.23456, "QG": 0.5, "QE": 0.25}})
    crops = [ax.get_images()[0].get_array() for ax in fig.axes[2:]]
    assert np.array_equal(crops[0], imgs["A"][5:15, 7:17])
    assert "QMI 1.235" in fig.axes[1].get_title()


def test_focus_boundary_box_straddles_the_boundary():
    rng = np.random.default_rng(2)
    sharp = rng.integers(0, 256, (64, 64)).astype(np.uint8)
    flat = np.full_like(sharp, 128)
    a = np.hstack([sharp[:, :40], flat[:, 40:]])  # A sharp on the left, B on the right
    b = np.hstack([flat[:, :40], sharp[:, 40:]])
    top, left = focus_boundary_box(a, b, 16)
    assert left + 8 == pytest.approx(40, abs=2)


def test_truth_error_view_shows_each_error_against_the_truth_and_the_band():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    off = gt.copy()
    off[:, :12] = np.clip(off[:, :12].astype(int) + 9, 0, 255).astype(np.uint8)  # 9 levels off on the left half
    band = np.zeros((20, 24), np.uint8)
    band[:, 10:14] = 255
    fig = truth_error_view({"fused": off, "truth": gt}, gt, band, scores={"fused": {"PSNR": 30.0}})
    error = fig.axes[2].get_images()[0].get_array()
    assert error.shape == (20, 24) and np.allclose(error[:, 12:], 0) and error[:, :12].mean() > 5
    assert np.array_equal(fig.axes[3].get_images()[0].get_array(), band > 0)  # the truth's panel: the band
    assert "PSNR 30.00" in fig.axes[0].get_title() and fig.axes[3].get_title() == "focus-boundary band"


def test_small_numbers_keep_their_size_in_tables():
    assert fmt(3.2e-6) == "3.20e-06" and fmt(0.0) == "0" and fmt(0.7433, 4) == "0.7433"
    text = markdown_table(["x", "value"], [["a", np.float64(3.2e-6)]])
    assert "3.20e-06" in text and "np.float64" not in text
