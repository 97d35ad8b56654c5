"""Z-stacks as microscopists have them: multi-page TIFF (bare, ImageJ, OME), folders, 16 bits,
integer depth maps, and one clear line for each bad page.

Small stacks (3-4 pages of 64×64) on the tiny checkpoint, so each test takes seconds.
"""
import re

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy.ndimage import gaussian_filter

from rediffuse import cli
from rediffuse.fuse import DEFAULT_CHECKPOINT, FusionModel, fuse
from rediffuse.imageio import TiffPage, read_image_native, stack_frames

SIZE = 64


def banded_stack(n: int, colour: bool = False, bits: int = 16, seed: int = 0) -> np.ndarray:
    """``[n, 64, 64]`` (or ``[n, 64, 64, 3]``) frames of one texture, frame k sharp in its own band of
    rows and blurred elsewhere, as a focus sweep through a tilted specimen looks."""
    rng = np.random.default_rng(seed)
    shape = (SIZE, SIZE, 3) if colour else (SIZE, SIZE)
    sharp = gaussian_filter(rng.random(shape), (0.7, 0.7, 0)[: len(shape)])
    soft = gaussian_filter(sharp, (3, 3, 0)[: len(shape)])
    frames = np.repeat(soft[None], n, 0)
    band = SIZE // n
    for k in range(n):
        frames[k, k * band:(k + 1) * band] = sharp[k * band:(k + 1) * band]
    top = 65535 if bits == 16 else 255
    return np.rint(0.1 * top + frames * 0.8 * top).astype(np.uint16 if bits == 16 else np.uint8)


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    _, err = capsys.readouterr()
    return code, err


def fuse_argv(ckpt, *inputs, out, extra=()):
    return ["fuse", *inputs, "-o", out, "--checkpoint", ckpt, "--steps", "1", "--device", "cpu", "--threads", "1",
            "--align", "none", *extra]


def error_line(err: str) -> str:
    """The one error line; nothing else on stderr may be an error or a traceback."""
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("rediffuse fuse: error: "), err
    assert "Traceback" not in err
    return errors[0]


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return FusionModel(tiny_checkpoint)


# ----------------------------------------------------------------------------- reading


def test_a_16_bit_grey_tiff_z_stack_fuses_to_a_16_bit_tiff(tiny_checkpoint, model, tmp_path, capsys):
    pages = banded_stack(4)
    z = tmp_path / "zstack.tif"
    tifffile.imwrite(z, pages, photometric="minisblack")  # 4 pages of 64×64, uint16
    out = tmp_path / "edf.tif"
    code, err = run(fuse_argv(tiny_checkpoint, z, out=out, extra=["--depth-map", tmp_path / "depth.tif",
                                                                    "--depth-index"]), capsys)
    assert code == 0, err
    assert "zstack.tif: a z-stack of 4 pages" in err and "4 images (grey, 16-bit, 64×64)" in err
    assert re.search(r"wrote .*edf\.tif \(64×64, 16-bit", err)
    result = tifffile.imread(out)
    assert result.dtype == np.uint16 and result.shape == (SIZE, SIZE)
    # the pages streamed from the file give exactly what the same frames give as arrays
    assert np.array_equal(result, fuse(list(pages), model, steps=1))
    # integer depth map: the frame indices themselves, and the grey map is the same indices spread over 0-255
    index = tifffile.imread(tmp_path / "depth.tif")
    assert index.dtype == np.uint16 and set(np.unique(index)) <= {0, 1, 2, 3}
    fuse(list(pages), model, steps=1, depth_map=tmp_path / "grey.png")
    grey = np.asarray(Image.open(tmp_path / "grey.png"))
    assert np.array_equal(grey, np.rint(index * (255 / 3)).astype(np.uint8))


def test_the_integer_depth_map_names_the_sharp_page_of_each_band(tmp_path, capsys):
    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip("the shipped model is not present")
    tifffile.imwrite(tmp_path / "zstack.tif", banded_stack(4), photometric="minisblack")
    depth = tmp_path / "depth.tif"
    code, err = run(["fuse", tmp_path / "zstack.tif", "-o", tmp_path / "edf.tif", "--depth-map", depth,
                     "--depth-index", "--align", "none", "--device", "cpu", "--threads", "1", "-q"], capsys)
    assert code == 0 and err == "", err
    index = tifffile.imread(depth)
    for k in range(4):  # inside band k (away from its edges, where the blur of the next band reaches)
        assert (index[k * 16 + 3:(k + 1) * 16 - 3, 8:-8] == k).mean() > 0.95, k


def test_an_rgb_8_bit_multi_page_tiff(tiny_checkpoint, model, tmp_path, capsys):
    pages = banded_stack(3, colour=True, bits=8)
    z = tmp_path / "rgb.tif"
    tifffile.imwrite(z, pages, photometric="rgb")  # 3 pages of 64×64×3, uint8
    frames = stack_frames(z)
    assert [str(f) for f in frames] == [f"{z} page {k}" for k in (1, 2, 3)]
    assert all(np.array_equal(f.read(), p) for f, p in zip(frames, pages))
    out = tmp_path / "edf.png"
    code, err = run(fuse_argv(tiny_checkpoint, z, out=out), capsys)
    assert code == 0, err
    assert "3 images (colour, 64×64)" in err
    result = read_image_native(out)
    assert result.dtype == np.uint8 and result.shape == (SIZE, SIZE, 3)
    assert np.array_equal(result, fuse(list(pages), model, steps=1))


def test_ome_tiff_and_imagej_hyperstacks_give_their_z_slices(model, tmp_path):
    pages = banded_stack(4)
    ome = tmp_path / "stack.ome.tif"
    tifffile.imwrite(ome, pages[None, :, None], ome=True, metadata={"axes": "TZCYX"})  # one time point, one channel
    frames = stack_frames(ome)
    assert len(frames) == 4 and all(isinstance(f, TiffPage) for f in frames)
    assert all(np.array_equal(f.read(), p) for f, p in zip(frames, pages))
    # the library takes the file itself, as the command line does
    assert np.array_equal(fuse(ome, model, steps=1), fuse(list(pages), model, steps=1))

    # three channels per z-slice (one page each) make an RGB frame
    rgb = np.moveaxis(banded_stack(3, colour=True), -1, 1)  # [Z, C, Y, X]
    for name, kw in [("c.ome.tif", dict(ome=True)), ("c-imagej.tif", dict(imagej=True))]:
        tifffile.imwrite(tmp_path / name, rgb, metadata={"axes": "ZCYX"}, **kw)
        frames = stack_frames(tmp_path / name)
        assert [f.pages for f in frames] == [(0, 1, 2), (3, 4, 5), (6, 7, 8)]
        assert all(np.array_equal(f.read(), np.moveaxis(p, 0, -1)) for f, p in zip(frames, rgb))


def test_pages_are_read_one_at_a_time(tmp_path, monkeypatch):
    z = tmp_path / "long.tif"
    tifffile.imwrite(z, np.arange(100 * 16 * 16, dtype=np.uint16).reshape(100, 16, 16), photometric="minisblack")
    decoded = []
    real = tifffile.TiffPage.asarray
    monkeypatch.setattr(tifffile.TiffPage, "asarray",
                        lambda self, *a, **k: decoded.append(self.index) or real(self, *a, **k))
    frames = stack_frames(z)  # headers only
    assert len(frames) == 100 and decoded == []
    assert frames[49].read()[0, 0] == 49 * 256 and decoded == [49]


def test_a_folder_in_natural_order(tiny_checkpoint, tmp_path, capsys):
    d = tmp_path / "stack"
    d.mkdir()
    pages = banded_stack(3, bits=8)
    for k, name in zip(range(3), ["frame1.png", "frame2.png", "frame10.png"]):
        Image.fromarray(pages[k]).save(d / name)
    (d / "notes.txt").write_text("exposure 10 ms\n")  # not an image: skipped
    Image.fromarray(pages[0]).save(d / ".thumb.png")  # hidden: skipped
    assert [p.name for p in stack_frames(d)] == ["frame1.png", "frame2.png", "frame10.png"]

    depth = tmp_path / "depth.png"
    code, err = run(fuse_argv(tiny_checkpoint, d, out=tmp_path / "a.png", extra=["--depth-map", depth,
                                                                               "--depth-index"]), capsys)
    assert code == 0, err
    assert "3 images in natural order: frame1.png, frame2.png, frame10.png" in err
    # the same as naming the files in that order: the depth map's indices follow the order of the frames
    named = [d / n for n in ["frame1.png", "frame2.png", "frame10.png"]]
    code, err = run(fuse_argv(tiny_checkpoint, *named, out=tmp_path / "b.png",
                              extra=["--depth-map", tmp_path / "d2.png", "--depth-index"]), capsys)
    assert code == 0, err
    assert np.array_equal(read_image_native(depth), read_image_native(tmp_path / "d2.png"))
    assert np.array_equal(read_image_native(tmp_path / "a.png"), read_image_native(tmp_path / "b.png"))


# ----------------------------------------------------------------------------- one clear line per bad page


def test_pages_of_different_sizes_are_one_line_naming_them(tiny_checkpoint, tmp_path, capsys):
    z = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(z) as w:
        for shape in [(64, 64), (64, 64), (48, 32), (64, 64)]:
            w.write(np.full(shape, 9, np.uint16), photometric="minisblack", metadata=None)
    code, err = run(fuse_argv(tiny_checkpoint, z, out=tmp_path / "o.tif"), capsys)
    assert code == 1
    assert re.search(r"mixed\.tif: its pages differ in size \(pages 1, 2, 4 are 64×64; page 3 is 32×48\); "
                     r"a z-stack's pages must all have one size: remove or crop", error_line(err))
    assert not (tmp_path / "o.tif").exists()


def test_a_blank_page_is_one_line_saying_what_to_do(tiny_checkpoint, tmp_path, capsys):
    pages = banded_stack(3)
    pages[1] = 1234
    tifffile.imwrite(tmp_path / "z.tif", pages, photometric="minisblack")
    code, err = run(fuse_argv(tiny_checkpoint, tmp_path / "z.tif", out=tmp_path / "o.tif"), capsys)
    assert code == 1
    assert re.search(r"z\.tif page 2 is blank \(every pixel is 1234\): remove that page from the stack",
                     error_line(err))
    assert not (tmp_path / "o.tif").exists()


def test_a_one_page_tiff_holds_one_image(tiny_checkpoint, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "one.tif", banded_stack(1)[0])
    code, err = run(fuse_argv(tiny_checkpoint, tmp_path / "one.tif", out=tmp_path / "o.tif"), capsys)
    assert code == 2  # fewer than two images: a usage error, as for a single PNG
    assert re.search(r"need at least two images to fuse, got 1 \(.*one\.tif\): it holds one image; "
                     r"a stack needs two or more", error_line(err))
    with pytest.raises(ValueError, match=r"one\.tif holds 1 image, and a stack needs two or more"):
        fuse(tmp_path / "one.tif")


def test_hyperstacks_and_channels_that_are_not_one_z_stack(tmp_path):
    tifffile.imwrite(tmp_path / "tz.ome.tif", np.ones((2, 3, 16, 16), np.uint16), ome=True,
                     metadata={"axes": "TZYX"})
    with pytest.raises(ValueError, match=r"hyperstack of 2 time points × 3 z-slices.*save one z-stack"):
        stack_frames(tmp_path / "tz.ome.tif")
    tifffile.imwrite(tmp_path / "c2.tif", np.ones((3, 2, 16, 16), np.uint16), imagej=True,
                     metadata={"axes": "ZCYX"})
    with pytest.raises(ValueError, match=r"holds 2 channels per z-slice.*Split Channels"):
        stack_frames(tmp_path / "c2.tif")


def test_depth_index_needs_a_depth_map_that_holds_16_bits(tiny_checkpoint, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "z.tif", banded_stack(3), photometric="minisblack")
    code, err = run(fuse_argv(tiny_checkpoint, tmp_path / "z.tif", out=tmp_path / "o.tif",
                              extra=["--depth-index"]), capsys)
    assert code == 2 and "--depth-index says how to write the depth map: add --depth-map" in error_line(err)
    code, err = run(fuse_argv(tiny_checkpoint, tmp_path / "z.tif", out=tmp_path / "o.tif",
                              extra=["--depth-map", tmp_path / "d.jpg", "--depth-index"]), capsys)
    assert code == 2 and "name a .png or .tif depth map" in error_line(err)
    assert not (tmp_path / "o.tif").exists()
