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


# ------------------------------------------------------------------ explorers: one output, live or static


class _FakeWidget:
    def _repr_mimebundle_(self, **_):
        return {"text/plain": "VBox(...)", "application/vnd.jupyter.widget-view+json": {"model_id": "abc"}}


def test_an_explorer_is_one_output_live_with_widgets_and_static_without():
    import matplotlib.pyplot as plt

    from rediffuse.viz.common import explorer

    fig = plt.figure()
    made = []
    static = explorer(fig, lambda: made.append(1) or _FakeWidget(), show_widgets=False)._repr_mimebundle_()
    assert not made and "image/png" in static and "application/vnd.jupyter.widget-view+json" not in static
    assert not plt.fignum_exists(fig.number)  # closed: the inline backend does not draw it a second time
    fig = plt.figure()
    live = explorer(fig, _FakeWidget, show_widgets=True)._repr_mimebundle_()
    # the widget for a live front end, the same figure as PNG for a viewer without widgets
    assert live["application/vnd.jupyter.widget-view+json"] == {"model_id": "abc"} and "image/png" in live
    assert not plt.fignum_exists(fig.number)


def test_notebook_01_explorers_need_no_ipywidgets_without_widgets(monkeypatch, tmp_path):
    import sys

    from rediffuse.bconv import LiftConv2d
    from rediffuse.viz.layers import angle_output, rotation_output

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets raises ImportError
    lift = LiftConv2d(1, 2, kernel_size=3, m=4).eval()
    image = _photo().float()
    for out in (rotation_output(lift, image, 1, show_widgets=False, output_dir=tmp_path),
                angle_output(lift, image, 30, show_widgets=False, output_dir=tmp_path)):
        assert out.widget is None and out.png.startswith(b"\x89PNG")
    assert {p.name for p in tmp_path.iterdir()} == {"rotation_explorer_step1.png", "angle_explorer_30deg.png"}
    with pytest.raises(ImportError):
        rotation_output(lift, image, 1, show_widgets=True)


@pytest.fixture(scope="module")
def theorem_setup():
    from rediffuse import theory as th

    field = th.GaborField.random(12, seed=0, rectify=True)
    nets = {4: th.rote_stack(4, seed=0), 8: th.rote_stack(8, seed=0), "plain": th.plain_stack(seed=0)}
    return field, nets


def test_theorem_explorer_greys_out_m_where_it_does_nothing_and_shows_whole_labels(theorem_setup):
    pytest.importorskip("ipywidgets")
    from rediffuse.viz.theorems import OPERATOR_LABELS, theorem_explorer

    field, nets = theorem_setup
    box = theorem_explorer(field, nets, radius=0.7, operator="maxpool", angle_deg=30, delta=1 / 16, m=8)
    operator, m = box.children[0].children
    assert m.value == 8 and box.children[1].children[1].value == 1 / 16
    for op, enabled in (("maxpool", False), ("bilinear", False), ("plain", False), ("rote", True), ("bilinear", False)):
        operator.value = op
        assert m.disabled is (not enabled), op
    # the dropdown is as wide as its longest label (in characters) and its description is not squeezed
    width = operator.layout.width
    assert width.endswith("ch") and int(width[:-2]) >= max(len(v) for v in OPERATOR_LABELS.values())
    assert operator.style.description_width == "initial"


def test_theorem_explorer_map_colour_scale_fits_the_map_not_the_bound(theorem_setup):
    from rediffuse.theory import BOUND_CONSTANTS
    from rediffuse.viz.theorems import draw_explorer

    field, nets = theorem_setup
    fig, value = draw_explorer(field, "bilinear", angle_deg=31, delta=1 / 16, radius=0.7, n_points=500)
    image = fig.axes[0].get_images()[0]
    vmin, vmax = image.get_clim()
    assert vmin == 0 and vmax == pytest.approx(value) and value > 0
    G = field.gradient_bound(0.7 + 2 / 8)
    assert vmax < 0.2 * BOUND_CONSTANTS["bilinear"] * G / 16  # far below the bound: a scale to the bound would be black


def test_theorem_explorer_plain_cnn_panel_is_not_empty(theorem_setup):
    from rediffuse import theory as th
    from rediffuse.viz.theorems import draw_explorer

    field, nets = theorem_setup
    measured = th.network_errors({"plain": nets["plain"]}, field, [1 / 16, 1 / 32], n_points=50, seed=0)
    fig, value = draw_explorer(field, "plain", angle_deg=30, delta=1 / 16, nets=nets, measured=measured, radius=0.7)
    curve = fig.axes[1]
    labels = [line.get_label() for line in curve.lines]
    assert "measured, random θ" in labels and any(label.startswith("this map") for label in labels), labels
    assert any("no theorem bounds a plain CNN" in t.get_text() for t in curve.texts)
    # without measured curves the panel still says why there is no bound
    fig, _ = draw_explorer(field, "plain", angle_deg=30, delta=1 / 16, nets=nets, radius=0.7)
    assert fig.axes[1].lines and any("no theorem bounds" in t.get_text() for t in fig.axes[1].texts)
