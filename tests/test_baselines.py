"""Tests for the classical fusion baselines (rediffuse.baselines)."""
from __future__ import annotations

import numpy as np
import pytest

from rediffuse import baselines as BL
from rediffuse.data import NYU_TEST_STEMS, FusionFolder, focus_mask, luminance, make_pair, skimage_photo
from rediffuse.imageio import read_image
from tests.conftest import require_dataset

NAMES = list(BL.BASELINES)


def psnr(ref: np.ndarray, x: np.ndarray) -> float:
    mse = np.mean((np.asarray(ref, np.float64) - np.asarray(x, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def pair():
    """Astronaut, 128x128, 'regions' mask, Gaussian blur sigma 3: (A, B, GT) uint8 RGB."""
    img = skimage_photo("astronaut")[64:320:2, 128:384:2].copy()
    mask = focus_mask(img.shape[:2], "regions", rng=0)
    return make_pair(img, mask, "gaussian", 3.0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("colour", [True, False])
def test_shape_dtype_and_n_sources(pair, name, colour):
    a, b, gt = pair
    if not colour:
        a, b, gt = (x[..., 1] for x in (a, b, gt))
    fn = BL.get_baseline(name)
    out = fn([a, b])
    assert out.dtype == np.uint8 and out.shape == a.shape
    # Three sources (the third a partly blurred copy) and odd sizes work too.
    c = ((a.astype(int) + b) // 2).astype(np.uint8)
    out3 = fn([a[:-3, :-5], b[:-3, :-5], c[:-3, :-5]])
    assert out3.shape == a[:-3, :-5].shape and out3.dtype == np.uint8


@pytest.mark.parametrize("name", NAMES)
def test_identical_sources_give_the_image(pair, name):
    img = pair[2]
    fn = BL.get_baseline(name)
    for x in (img, img[..., 0]):
        out = fn([x, x])
        assert np.abs(out.astype(int) - x).max() <= 1


def test_synthetic_pair_quality(pair):
    # Measured (2 CPU, numpy 2.4, scipy 1.17): average 25.78 dB, laplacian 39.82,
    # focus-select 39.94, gff 37.76. Margins of ~1.5 dB absorb library changes.
    a, b, gt = pair
    p = {name: psnr(gt, fn([a, b])) for name, fn in BL.BASELINES.items()}
    assert p["average"] < 27.0
    assert p["focus-select"] > 38.5 and p["focus-select"] > p["average"] + 10
    assert p["gff"] > 36.0 and p["gff"] > p["average"] + 8
    assert p["laplacian"] > 38.0


def test_focus_select_copies_source_pixels(pair):
    a, b, _ = pair
    out = BL.focus_select([a, b])
    from_a = (out == a).all(-1)
    from_b = (out == b).all(-1)
    assert (from_a | from_b).all()


def test_laplacian_pyramid_reconstructs():
    x = np.random.default_rng(0).random((37, 50, 3)) * 255
    for levels in (1, 3):
        np.testing.assert_allclose(BL._collapse(BL._pyramid(x, levels)), x, atol=1e-9)


def test_guided_filter_properties():
    rng = np.random.default_rng(0)
    g = rng.random((30, 40))
    const = np.full((30, 40), 0.25)
    np.testing.assert_allclose(BL.guided_filter(g, const, 4, 0.01), 0.25, atol=1e-12)
    # With a tiny eps the filter reproduces the guide when guiding itself.
    np.testing.assert_allclose(BL.guided_filter(g, g, 3, 1e-10), g, atol=1e-6)
    gc = rng.random((30, 40, 3))
    np.testing.assert_allclose(BL.guided_filter(gc, const, 4, 0.01), 0.25, atol=1e-12)
    # Box mean with clipped windows equals a brute-force version.
    x = rng.random((9, 11))
    r = 2
    brute = np.array(
        [[x[max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1].mean() for j in range(11)] for i in range(9)]
    )
    np.testing.assert_allclose(BL._box_mean(x, r), brute, atol=1e-12)


def test_registry_and_validation(pair):
    a, b, _ = pair
    assert set(BL.BASELINES) == {"average", "laplacian", "focus-select", "gff"}
    assert BL.get_baseline("focus_select") is BL.focus_select
    assert BL.get_baseline("GFF") is BL.gff
    with pytest.raises(ValueError, match="average, laplacian, focus-select, gff"):
        BL.get_baseline("dsift")
    with pytest.raises(ValueError, match="at least 2"):
        BL.average([a])
    with pytest.raises(ValueError, match="shape"):
        BL.gff([a, b[:-1]])
    with pytest.raises(TypeError, match="uint8"):
        BL.focus_select([a.astype(np.float32), b.astype(np.float32)])
    with pytest.raises(ValueError, match="guide"):
        BL.gff([a, b], guide="rgb")


@pytest.mark.shared
def test_gff_matches_published_gff(reference):
    """Our GFF against the fused images published with Liu et al.'s benchmark (grey + colour)."""
    g = reference / "sources" / "grayscale"
    ga, gb = read_image(g / "A" / "g_01.png"), read_image(g / "B" / "g_01.png")
    assert psnr(read_image(reference / "fused" / "grayscale" / "g_01_gff.png"), BL.gff([ga, gb])) > 58
    lytro = require_dataset("Lytro")
    a, b = read_image(lytro / "A" / "lytro-02.jpg"), read_image(lytro / "B" / "lytro-02.jpg")
    # Measured 68.3 dB with the luminance guide (52-58 dB with the colour guide).
    assert psnr(read_image(reference / "fused" / "color" / "lytro-02_gff.png"), BL.gff([a, b])) > 62


@pytest.mark.shared
def test_nyu_holdout_psnr():
    """PSNR/SSIM of every baseline on NYU-D-100 pairs 091-100 (Y channel vs GT).

    Measured: average 35.54 dB / 0.9643, laplacian 44.44 / 0.9934, focus-select 52.66 / 0.9985,
    gff 54.39 / 0.9989 (mean over pairs; SSIM from skimage, 7x7 window, data_range 255).
    """
    from skimage.metrics import structural_similarity

    root = require_dataset("NYU-D-100")
    ds = FusionFolder(root, stems=NYU_TEST_STEMS, require_gt=True)
    scores = {name: [] for name in BL.BASELINES}
    for stem in ds.stems:
        imgs = ds.load(stem)
        gy = luminance(imgs["GT"])
        for name, fn in BL.BASELINES.items():
            fy = luminance(fn([imgs["A"], imgs["B"]]))
            scores[name].append((psnr(gy, fy), structural_similarity(gy, fy, data_range=255)))
    mean = {k: np.mean(v, axis=0) for k, v in scores.items()}
    print("\nNYU-D-100 091-100, Y vs GT:")
    for k, (p, s) in mean.items():
        print(f"  {k:13s} PSNR {p:6.2f} dB  SSIM {s:.4f}")
    assert 34.5 < mean["average"][0] < 36.5
    assert mean["laplacian"][0] > 43.0
    assert mean["focus-select"][0] > 51.0 and mean["focus-select"][1] > 0.998
    assert mean["gff"][0] > 53.0 and mean["gff"][1] > 0.998
