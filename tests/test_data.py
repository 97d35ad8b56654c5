"""Tests for rediffuse.imageio and rediffuse.data (colour, folders, synthetic pairs)."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from rediffuse import data as D
from rediffuse.imageio import _ORIENT_NP, read_image, read_image_float, write_image
from tests.conftest import require_dataset

RNG = np.random.default_rng(1234)


# ----------------------------------------------------------------------------------------- colour


def test_ycbcr_round_trip_and_reference_values():
    img = RNG.integers(0, 256, size=(64, 48, 3), dtype=np.uint8)
    ycc = D.rgb_to_ycbcr(img)
    back = D.ycbcr_to_rgb(ycc)
    assert np.abs(back - img).max() < 1e-9
    # Quantising Y'CbCr to 8 bits still round-trips within a grey level or two; unrounded, < 1.
    assert np.abs(np.clip(np.rint(D.ycbcr_to_rgb(np.rint(ycc))), 0, 255) - img).max() <= 2
    # Full-range JPEG convention: white/black/grey have neutral chroma, Y spans 0..255.
    np.testing.assert_allclose(D.rgb_to_ycbcr(np.array([255, 255, 255])), [255, 128, 128], atol=1e-9)
    np.testing.assert_allclose(D.rgb_to_ycbcr(np.array([0, 0, 0])), [0, 128, 128], atol=1e-9)
    np.testing.assert_allclose(D.rgb_to_ycbcr(np.array([255, 0, 0]))[0], 0.299 * 255)
    # Y is Pillow's "L" before rounding.
    pil_l = np.asarray(Image.fromarray(img).convert("L"), dtype=np.float64)
    assert np.abs(D.luminance(img) - pil_l).max() <= 0.5 + 1e-6


def test_fuse_chroma_rule():
    a = np.array([[100.0, 128.0, 128.0, 60.0]])
    b = np.array([[200.0, 128.0, 90.0, 60.0]])
    out = D.fuse_chroma([a, b])
    # (100*28 + 200*72) / 100 = 172; all-128 -> 128; a source at 128 has no say; equal -> same value.
    np.testing.assert_allclose(out, [[172.0, 128.0, 90.0, 60.0]])
    np.testing.assert_allclose(D.fuse_chroma([b, a]), out)  # symmetric in the sources
    c = np.array([[128.0, 128.0, 160.0, 200.0]])
    three = D.fuse_chroma([a, b, c])
    np.testing.assert_allclose(three[0, 1], 128.0)
    np.testing.assert_allclose(three[0, 2], (90 * 38 + 160 * 32) / 70)
    np.testing.assert_allclose(D.fuse_chroma([c, a, b]), three)
    with pytest.raises(ValueError):
        D.fuse_chroma([a])


def test_recombine_identity_and_grey():
    img = RNG.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    y = D.luminance(img)
    out = D.recombine(y, [img, img])
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.abs(out.astype(int) - img).max() <= 1
    grey = img[..., 0]
    np.testing.assert_array_equal(D.recombine(grey, [grey, grey]), grey)


def test_tensor_conversions():
    img = RNG.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    t = D.image_to_tensor(img, y_only=False)
    assert t.shape == (3, 10, 12) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    np.testing.assert_array_equal(D.tensor_to_image(t), img)
    ty = D.image_to_tensor(img)
    assert ty.shape == (1, 10, 12)
    grey = img[..., 1]
    assert D.image_to_tensor(grey, y_only=False).shape == (3, 10, 12)
    np.testing.assert_array_equal(D.tensor_to_image(D.image_to_tensor(grey)), grey)


# ----------------------------------------------------------------------------------------- folders


def _coded(h: int, w: int, salt: int) -> np.ndarray:
    """RGB image whose pixels encode their own position: R = row, G = column, B = salt."""
    r, c = np.mgrid[0:h, 0:w]
    return np.stack([r, c, np.full_like(r, salt)], axis=-1).astype(np.uint8)


def _make_folder(root, stems=("x1", "x2"), h=40, w=50, gt=True, extra=None):
    for i, s in enumerate(stems):
        gt_img = _coded(h, w, 10 * i)
        write_image(root / "A" / f"{s}.png", gt_img)
        write_image(root / "B" / f"{s}.png", 255 - gt_img)
        if gt:
            write_image(root / "GT" / f"{s}.png", gt_img)
    for folder, s in extra or []:
        write_image(root / folder / f"{s}.png", _coded(h, w, 0))
    return root


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return np.rint((t.numpy() + 1) * 127.5).astype(int)


def test_fusion_folder_pairing(tmp_path):
    _make_folder(tmp_path)
    ds = D.FusionFolder(tmp_path, y_only=False)
    assert len(ds) == 2 and ds.sources == ["A", "B"] and ds.has_gt
    for i, stem in enumerate(["x1", "x2"]):
        item = ds[i]
        assert item["stem"] == stem
        a, b, g = (_to_uint8(item[k]) for k in ("A", "B", "GT"))
        assert a.shape == (3, 40, 50)
        assert (a[2] == 10 * i).all()  # the right file for this stem
        np.testing.assert_array_equal(a, 255 - b)
        np.testing.assert_array_equal(a, g)
    y = D.FusionFolder(tmp_path)[0]["A"]
    assert y.shape == (1, 40, 50) and y.dtype == torch.float32 and -1 <= y.min() and y.max() <= 1


def test_fusion_folder_crop_is_shared(tmp_path):
    _make_folder(tmp_path)
    ds = D.FusionFolder(tmp_path, crop=(16, 24), y_only=False, seed=0)
    seen = set()
    for epoch in range(5):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            it = ds[i]
            a, b, g = (_to_uint8(it[k]) for k in ("A", "B", "GT"))
            assert a.shape == (3, 16, 24)
            # R and G channels encode the source position: the window starts at (top, left) in all.
            for img in (a, 255 - b, g):
                assert img[0, 0, 0] == it["top"] and img[1, 0, 0] == it["left"]
            seen.add((it["top"], it["left"]))
    assert len(seen) > 3  # crops move with the epoch


def test_fusion_folder_augmentation_identical(tmp_path):
    _make_folder(tmp_path)
    ds = D.FusionFolder(tmp_path, crop=(16, 24), augment=True, y_only=False, seed=7)
    ks, flips = set(), set()
    for epoch in range(40):
        ds.set_epoch(epoch)
        it = ds[epoch % 2]
        a, b, g = (_to_uint8(it[k]) for k in ("A", "B", "GT"))
        assert a.shape == (3, 16, 24)  # odd k: the window is cut transposed, output keeps (h, w)
        np.testing.assert_array_equal(a, 255 - b)
        np.testing.assert_array_equal(a, g)
        # Rebuild the expected content from the reported crop and geometry.
        k, flip, top, left = it["k"], it["flip"], it["top"], it["left"]
        wh, ww = (24, 16) if k % 2 else (16, 24)
        src = _coded(40, 50, 10 * (epoch % 2))[top : top + wh, left : left + ww]
        expect = torch.from_numpy(np.ascontiguousarray(np.moveaxis(src, -1, 0)).astype(np.int64))
        expect = torch.rot90(expect, k, dims=(-2, -1))
        if flip:
            expect = torch.flip(expect, dims=(-1,))
        np.testing.assert_array_equal(a, expect.numpy())
        ks.add(k)
        flips.add(flip)
    assert ks == {0, 1, 2, 3} and flips == {0, 1}


def test_fusion_folder_reproducible(tmp_path):
    _make_folder(tmp_path)
    kw = dict(crop=16, augment=True, seed=3)
    x, y = D.FusionFolder(tmp_path, **kw)[1], D.FusionFolder(tmp_path, **kw)[1]
    assert torch.equal(x["A"], y["A"]) and (x["top"], x["left"], x["k"]) == (y["top"], y["left"], y["k"])
    # seed=None follows torch's global RNG.
    torch.manual_seed(5)
    p = D.FusionFolder(tmp_path, crop=16, augment=True)[0]
    torch.manual_seed(5)
    q = D.FusionFolder(tmp_path, crop=16, augment=True)[0]
    assert torch.equal(p["A"], q["A"])
    batch = next(iter(torch.utils.data.DataLoader(D.FusionFolder(tmp_path, crop=16, seed=0), batch_size=2)))
    assert batch["A"].shape == (2, 1, 16, 16) and batch["stem"] == ["x1", "x2"]


def test_fusion_folder_selection_and_sources(tmp_path):
    _make_folder(tmp_path, stems=("s1", "s2", "s3"), extra=[("C", "s1"), ("C", "s2"), ("C", "s3")])
    (tmp_path / "mask").mkdir()  # lower-case folders are not sources
    ds = D.FusionFolder(tmp_path, stems=["s3", "s1"])
    assert ds.sources == ["A", "B", "C"] and ds.stems == ["s3", "s1"]
    assert set(ds[0]) >= {"A", "B", "C", "GT"}
    assert D.FusionFolder(tmp_path, exclude=["s2"]).stems == ["s1", "s3"]
    with pytest.raises(ValueError, match="unknown stems"):
        D.FusionFolder(tmp_path, stems=["nope"])


def test_fusion_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        D.FusionFolder(tmp_path / "missing")
    _make_folder(tmp_path / "nogt", gt=False)
    assert not D.FusionFolder(tmp_path / "nogt").has_gt
    with pytest.raises(FileNotFoundError, match="GT"):
        D.FusionFolder(tmp_path / "nogt", require_gt=True)
    _make_folder(tmp_path / "odd", extra=[("A", "lonely")])
    with pytest.raises(ValueError, match="'lonely' missing in B/"):
        D.FusionFolder(tmp_path / "odd")
    _make_folder(tmp_path / "gtgap", stems=("x1",), extra=[("A", "x9"), ("B", "x9")])
    with pytest.raises(ValueError, match="'x9' missing in GT/"):
        D.FusionFolder(tmp_path / "gtgap")
    (tmp_path / "onlya" / "A").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="B/"):
        D.FusionFolder(tmp_path / "onlya")
    _make_folder(tmp_path / "small")
    with pytest.raises(ValueError, match="smaller than the crop"):
        D.FusionFolder(tmp_path / "small", crop=64)[0]


@pytest.mark.shared
def test_nyu_d_100_holdout():
    root = require_dataset("NYU-D-100")
    ds = D.FusionFolder(root, stems=D.NYU_TEST_STEMS, require_gt=True)
    assert len(ds) == 10 and ds.stems[0] == "nyud-091" and ds.stems[-1] == "nyud-100"
    train = D.FusionFolder(root, exclude=D.NYU_TEST_STEMS)
    assert len(train) == 90 and not set(train.stems) & set(ds.stems)
    imgs = ds.load(0)
    assert imgs["A"].shape == imgs["GT"].shape and imgs["A"].ndim == 3
    # The in-focus part of each source is (nearly) the ground truth: together they cover the image.
    close = (np.abs(imgs["A"].astype(int) - imgs["GT"]).max(-1) <= 2) | (
        np.abs(imgs["B"].astype(int) - imgs["GT"]).max(-1) <= 2
    )
    assert close.mean() > 0.9
    it = D.FusionFolder(root, stems=D.NYU_TEST_STEMS[:1], crop=64, augment=True, seed=0)[0]
    assert it["A"].shape == it["B"].shape == it["GT"].shape == (1, 64, 64)


# ----------------------------------------------------------------------------------------- synthetic


def test_skimage_photos_load_offline():
    for name in D.SKIMAGE_PHOTOS:
        img = D.skimage_photo(name)
        assert img.dtype == np.uint8 and img.ndim in (2, 3) and min(img.shape[:2]) >= 256
    depth = D.skimage_depth("motorcycle_left")
    assert depth is not None and np.isfinite(depth).all()
    assert depth.shape == D.skimage_photo("motorcycle_left").shape[:2]
    assert D.skimage_depth("astronaut") is None


@pytest.mark.parametrize("kind", ["blobs", "regions", "depth"])
def test_focus_mask(kind):
    m = D.focus_mask((64, 80), kind, rng=0, coverage=0.4)
    assert m.shape == (64, 80) and m.dtype == np.float32
    assert set(np.unique(m)) <= {0.0, 1.0}
    assert abs(m.mean() - 0.4) < 0.03
    np.testing.assert_array_equal(m, D.focus_mask((64, 80), kind, rng=0, coverage=0.4))
    soft = D.focus_mask((64, 80), kind, rng=0, coverage=0.4, soften=2.0)
    assert 0 <= soft.min() and soft.max() <= 1 and ((soft > 0) & (soft < 1)).any()


def test_focus_mask_depth_is_near_part():
    depth = np.tile(np.arange(10.0), (4, 1))  # depth grows to the right
    m = D.focus_mask((4, 10), "depth", rng=0, depth=depth, coverage=0.3)
    np.testing.assert_array_equal(m[0], [1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError):
        D.focus_mask((4, 10), "nope", rng=0)


def test_blur():
    flat = np.full((20, 20, 3), 77, np.uint8)
    for kind in ("gaussian", "disk"):
        np.testing.assert_allclose(D.blur(flat, kind, 3.5), 77.0, atol=1e-9)
    noise = RNG.integers(0, 256, size=(40, 40)).astype(np.uint8)
    assert D.blur(noise, "gaussian", 2).std() < noise.std() / 3
    assert D.blur(noise, "disk", 3).std() < noise.std() / 3
    assert D.blur(noise, "disk", 3).shape == noise.shape
    np.testing.assert_array_equal(D.blur(noise, "disk", 0), noise)


@pytest.mark.parametrize("colour", [True, False])
def test_make_pair_exact_regions(colour):
    img = D.skimage_photo("astronaut")[100:164, 200:264]
    if not colour:
        img = img[..., 1]
    mask = D.focus_mask(img.shape[:2], "regions", rng=3, coverage=0.5)
    for kind in ("gaussian", "disk"):
        a, b, gt = D.make_pair(img, mask, kind, 3.0)
        assert a.dtype == b.dtype == gt.dtype == np.uint8 and a.shape == img.shape
        m = mask.astype(bool)
        np.testing.assert_array_equal(a[m], gt[m])
        np.testing.assert_array_equal(b[~m], gt[~m])
        np.testing.assert_array_equal(gt, img)
        assert (a[~m] != gt[~m]).mean() > 0.3 and (b[m] != gt[m]).mean() > 0.3


def test_synthetic_pairs_reproducible():
    ds = D.SyntheticPairs(n=6, size=48, seed=11)
    again = D.SyntheticPairs(n=6, size=48, seed=11)
    other = D.SyntheticPairs(n=6, size=48, seed=12)
    for i in (0, 5):
        x, y = ds[i], again[i]
        for k in ("A", "B", "GT", "mask"):
            assert torch.equal(x[k], y[k])
    assert any(not torch.equal(ds[i]["GT"], other[i]["GT"]) for i in range(3))
    it = ds[2]
    assert it["A"].shape == (1, 48, 48) and it["mask"].shape == (1, 48, 48)
    assert D.SyntheticPairs(n=2, size=48, seed=0, y_only=False)[0]["A"].shape == (3, 48, 48)
    s = ds.sample(4)
    m = s["mask"].astype(bool)
    np.testing.assert_array_equal(s["A"][m], s["GT"][m])
    np.testing.assert_array_equal(s["B"][~m], s["GT"][~m])


def test_synthetic_depth_uses_real_disparity():
    ds = D.SyntheticPairs(n=3, size=64, seed=0, photos=["motorcycle_left"], mask_kinds=("depth",))
    s = ds.sample(0)
    assert s["photo"] == "motorcycle_left" and s["mask_kind"] == "depth"
    assert 0.2 < s["mask"].mean() < 0.8


def test_generate_synthetic_folder(tmp_path):
    out = D.generate_synthetic_folder(tmp_path / "syn", n=3, seed=1, size=32)
    assert sorted(os.listdir(out / "GT")) == ["syn-00000.png", "syn-00001.png", "syn-00002.png"]
    ds = D.FusionFolder(out, require_gt=True)
    assert ds.sources == ["A", "B"] and len(ds) == 3
    disk = ds.load("syn-00001")
    mem = D.SyntheticPairs(n=3, size=32, seed=1).sample(1)
    for k in ("A", "B", "GT"):
        np.testing.assert_array_equal(disk[k], mem[k])
    assert (out / "SOURCE.txt").read_text().startswith("Synthetic")


# ----------------------------------------------------------------------------------------- imageio


def _smooth_rgb(h=24, w=36):
    r, c = np.mgrid[0:h, 0:w]
    return np.stack([r * 8, c * 6, (r + c) * 4], -1).clip(0, 255).astype(np.uint8)


def test_exif_orientation_jpeg(tmp_path):
    img = _smooth_rgb()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "rot.jpg"
    Image.fromarray(img).save(p, exif=exif, quality=98)
    out = read_image(p)
    assert out.shape == (36, 24, 3)
    assert np.abs(out.astype(int) - np.rot90(img, -1)).mean() < 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_table_matches_pillow(tmp_path, orientation):
    img = _smooth_rgb(5, 7)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "o.png"
    Image.fromarray(img).save(p, exif=exif)
    expect = np.asarray(ImageOps.exif_transpose(Image.open(p)))
    np.testing.assert_array_equal(read_image(p), expect)
    ours = _ORIENT_NP.get(orientation, lambda a: a)(img)
    np.testing.assert_array_equal(ours, expect)


def test_16bit_png_and_tiff(tmp_path):
    g16 = (np.arange(12 * 10, dtype=np.uint32).reshape(12, 10) * 541 % 65536).astype(np.uint16)
    p = write_image(tmp_path / "g16.png", g16)
    np.testing.assert_array_equal(read_image(p), np.rint(g16 / 257.0).astype(np.uint8))
    f = read_image_float(p)
    assert f.dtype == np.float32 and np.abs(f - g16 / 65535.0).max() < 1e-6

    import tifffile

    rgb16 = (RNG.random((8, 9, 3)) * 65535).astype(np.uint16)
    t = tmp_path / "rgb16.tif"
    tifffile.imwrite(t, rgb16, photometric="rgb")
    f = read_image_float(t)
    assert f.shape == (8, 9, 3) and np.abs(f - rgb16 / 65535.0).max() < 1e-6
    np.testing.assert_array_equal(read_image(t), np.rint(rgb16 / 257.0).astype(np.uint8))


def test_alpha_dropped_with_warning(tmp_path):
    rgba = np.dstack([_smooth_rgb(), np.full((24, 36), 100, np.uint8)])
    p = write_image(tmp_path / "a.png", rgba)
    with pytest.warns(UserWarning, match="alpha"):
        out = read_image(p)
    np.testing.assert_array_equal(out, rgba[..., :3])
    la = tmp_path / "la.png"
    Image.fromarray(rgba[..., :2], mode="LA").save(la)
    with pytest.warns(UserWarning, match="alpha"):
        assert read_image(la).shape == (24, 36)


def test_unreadable_files(tmp_path):
    txt = tmp_path / "notes.png"
    txt.write_text("not an image\n")
    with pytest.raises(ValueError, match="notes.png") as e:
        read_image(txt)
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")
    with pytest.raises(ValueError, match="folder"):
        read_image(tmp_path)


def test_write_image_atomic_and_errors(tmp_path):
    img = _smooth_rgb()
    p = write_image(tmp_path / "sub" / "x.png", img)
    np.testing.assert_array_equal(read_image(p), img)
    assert os.listdir(tmp_path / "sub") == ["x.png"]  # no temporary file left
    # A failing save leaves the old file intact and no temporary file behind.
    with pytest.raises(Exception):
        write_image(p, 255 - img, compress_level="bad")
    np.testing.assert_array_equal(read_image(p), img)
    assert os.listdir(tmp_path / "sub") == ["x.png"]
    q = write_image(tmp_path / "y.jpg", img)
    assert np.abs(read_image(q).astype(int) - img).mean() < 2  # quality 95 by default
    with pytest.raises(ValueError, match="unknown image extension"):
        write_image(tmp_path / "x.notanext", img)
    with pytest.raises(TypeError, match="to_uint8"):
        write_image(tmp_path / "f.png", img / 255.0)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_write_image_unwritable_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            write_image(ro / "x.png", _smooth_rgb())
    finally:
        ro.chmod(0o700)


def test_write_image_unwritable_dir_reported(tmp_path, monkeypatch):
    # Same check without relying on file modes (which root ignores).
    import rediffuse.imageio as rio

    monkeypatch.setattr(rio.os, "access", lambda *a, **k: False)
    with pytest.raises(PermissionError, match="not writable"):
        write_image(tmp_path / "x.png", _smooth_rgb())
    assert os.listdir(tmp_path) == []


def test_read_image_quiet_on_plain_files(tmp_path):
    p = write_image(tmp_path / "g.png", _smooth_rgb()[..., 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(p).shape == (24, 36)
