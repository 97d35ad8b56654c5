"""``rediffuse fuse``: success paths and one test per error case (message and exit code).

The command runs through ``rediffuse.cli.main`` (its error handling: one line, exit 1, traceback only
with ``--debug``).
"""
import argparse
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import rediffuse.fuse as F
import rediffuse.weights as W
from rediffuse import cli
from rediffuse.cli import fuse as fuse_command
from rediffuse.fuse import fuse
from rediffuse.paths import dataset_dir
from rediffuse.train import save_checkpoint
from rediffuse.unet import ReDiffuseUNet

torch.set_num_threads(1)


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def only_files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture
def imgs(tmp_path):
    """A grey and a colour pair (40 rows × 48 columns) as PNG files in tmp_path/in."""
    rng = np.random.default_rng(0)
    d = tmp_path / "in"
    d.mkdir()
    paths = {}
    for name, shape in [("g1", (40, 48)), ("g2", (40, 48)), ("c1", (40, 48, 3)), ("c2", (40, 48, 3))]:
        paths[name] = d / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(paths[name])
    return paths


def fuse_args(ckpt, *images, out, extra=()):
    # random test images cannot be registered: the alignment check would warn (tests/test_stack.py tests it)
    return ["fuse", *images, "-o", out, "--checkpoint", ckpt, "--steps", "1", "--device", "cpu", "--align", "none",
            *extra]


# ----------------------------------------------------------------------------- success


def test_grey_pair_matches_the_library_and_shows_progress(ckpt, imgs, tmp_path, capsys):
    out = tmp_path / "out" / "fused.png"  # missing folders are created
    code, stdout, err = run(fuse_args(ckpt, imgs["g1"], imgs["g2"], out=out), capsys)
    assert code == 0, err
    assert "fusing" in err  # the progress bar
    assert re.search(r"wrote .*fused\.png \(48×40", err)
    res = np.asarray(Image.open(out))
    ref = fuse([np.asarray(Image.open(imgs["g1"])), np.asarray(Image.open(imgs["g2"]))], F.FusionModel(ckpt), steps=1)
    assert np.array_equal(res, ref)
    assert only_files(out.parent) == ["fused.png"]


def test_colour_stack_of_three_quiet_and_jpeg(ckpt, imgs, tmp_path, capsys):
    out = tmp_path / "fused.jpg"
    code, stdout, err = run(fuse_args(ckpt, imgs["c1"], imgs["c2"], imgs["c1"], out=out, extra=["-q"]), capsys)
    assert code == 0 and err == "" and stdout == ""
    with Image.open(out) as im:
        assert im.format == "JPEG" and im.size == (48, 40) and im.mode == "RGB"


def test_tiles_and_seed_options(ckpt, imgs, tmp_path, capsys):
    args = ["--tile", "32", "--overlap", "8", "--seed", "3", "--threads", "1", "--sampler", "ddim"]
    bad = fuse_args(ckpt, imgs["g1"], imgs["g2"], out=tmp_path / "t.png", extra=["--sampler", "x"])
    code, _, err = run(bad, capsys)
    # a bad option value: a usage error (docs/reliability.md, row 17a)
    assert code == 2 and "error: unknown sampler 'x'; available: ddim, posterior_mean, x0_regression" in err
    code, _, err = run(fuse_args(ckpt, imgs["g1"], imgs["g2"], out=tmp_path / "t.png", extra=args), capsys)
    assert code == 0, err
    assert "tiles of ≤32 px (overlap 8)" in err
    ref = fuse([imgs["g1"], imgs["g2"]], F.FusionModel(ckpt), steps=1, tile=32, overlap=8, seed=3, sampler="ddim")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "t.png")), ref)


def test_exif_orientation_is_applied(ckpt, tmp_path, capsys):
    rng = np.random.default_rng(2)
    paths = []
    for i in range(2):
        exif = Image.Exif()
        exif[0x0112] = 6  # stored 48 wide × 40 high, shown rotated: 40 wide × 48 high
        p = tmp_path / f"rot{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(p, exif=exif)
        paths.append(p)
    code, _, err = run(fuse_args(ckpt, *paths, out=tmp_path / "o.png"), capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "o.png").size == (40, 48)
    # a rotated image next to an unrotated one: a size mismatch with a hint
    plain = tmp_path / "plain.png"
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(plain)
    code, _, err = run(fuse_args(ckpt, paths[0], plain, out=tmp_path / "o2.png"), capsys)
    assert code == 1 and "differ in size" in err and "rotated" in err and "EXIF" in err


def test_16bit_inputs_are_accepted(ckpt, tmp_path, capsys):
    rng = np.random.default_rng(3)
    a16 = [rng.integers(0, 65536, (40, 48), dtype=np.uint16) for _ in range(2)]
    paths = []
    for i, a in enumerate(a16):
        paths.append(tmp_path / f"s{i}.png")
        Image.fromarray(a).save(paths[-1])
    code, _, err = run(fuse_args(ckpt, *paths, out=tmp_path / "o.png"), capsys)
    assert code == 0, err
    res = np.asarray(Image.open(tmp_path / "o.png"))
    assert res.dtype == np.uint16 and res.shape == (40, 48)  # 16 bits in, 16 bits out
    assert np.array_equal(res, fuse(a16, F.FusionModel(ckpt), steps=1))  # full 16-bit precision used


def test_alpha_is_dropped_with_a_warning(ckpt, imgs, tmp_path, capsys):
    rgba = tmp_path / "alpha.png"
    a = np.asarray(Image.open(imgs["c1"]))
    Image.fromarray(np.dstack([a, np.full(a.shape[:2], 128, np.uint8)])).save(rgba)
    code, _, err = run(fuse_args(ckpt, rgba, imgs["c2"], out=tmp_path / "o.png", extra=["-q"]), capsys)
    assert code == 0
    assert re.search(r"rediffuse fuse: warning: .*alpha\.png: alpha channel dropped", err)


def test_mixed_grey_and_colour_converts_with_a_notice(ckpt, imgs, tmp_path, capsys):
    code, _, err = run(fuse_args(ckpt, imgs["g1"], imgs["c2"], out=tmp_path / "o.png", extra=["-q"]), capsys)
    assert code == 0
    assert re.search(r"warning: mixing grey and colour images: .*g1\.png treated as colour", err)
    assert np.asarray(Image.open(tmp_path / "o.png")).shape == (40, 48, 3)


def test_help_documents_every_option_with_examples(capsys):
    parser = argparse.ArgumentParser(prog="rediffuse")
    fuse_command.add_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["fuse", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ["IMAGE", "-o OUT, --output OUT", "--checkpoint P", "--steps K", "--sampler NAME", "--device",
                "--tile N", "--overlap N", "--seed S", "--threads N", "-q, --quiet"]:
        assert opt in text, opt
    assert "examples:" in text and "rediffuse fuse near.jpg far.jpg -o fused.png" in text
    for example in ["--checkpoint runs/", "--device cuda", "--steps 5", "--seed 1", "--tile 512", "--overlap 128",
                    "--tile 0", "--sampler ddim", "--threads 1 -q", "rediffuse --debug fuse"]:
        assert example in text, example
    assert "exit status" in text
    from rediffuse.diffusion import SAMPLERS

    assert set(fuse_command.SAMPLER_NAMES) == set(SAMPLERS)
    assert fuse_command.DEFAULT_CHECKPOINT_NAME == F.DEFAULT_CHECKPOINT.name
    assert fuse_command.DEFAULT_CHECKPOINT_NAME in " ".join(text.split())


def test_building_the_parser_is_cheap():
    import subprocess
    import sys

    code = ("import argparse, sys; from rediffuse.cli.fuse import add_parser; "
            "add_parser(argparse.ArgumentParser().add_subparsers()); print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# ----------------------------------------------------------------------------- errors


def expect_error(capsys, argv, pattern, code=1):
    rc, out, err = run(argv, capsys)
    assert rc == code, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("rediffuse fuse: error: "), err
    assert err.rstrip().endswith(errors[0])  # the last thing printed
    assert re.search(pattern, errors[0]), errors[0]
    assert "Traceback" not in err


def test_error_mismatched_sizes(ckpt, imgs, tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((30, 48), np.uint8)).save(small)
    expect_error(capsys, fuse_args(ckpt, imgs["g1"], small, out=tmp_path / "o.png"),
                 r"differ in size: .*g1\.png 48×40, .*small\.png 48×30; register \(align\) or resize")
    assert not (tmp_path / "o.png").exists()


def test_error_unreadable_and_missing_inputs(ckpt, imgs, tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    expect_error(capsys, fuse_args(ckpt, imgs["g1"], text, out=tmp_path / "o.png"),
                 r"cannot read .*notes\.png as an image")
    expect_error(capsys, fuse_args(ckpt, imgs["g1"], tmp_path / "gone.png", out=tmp_path / "o.png"),
                 r"image file not found: .*gone\.png")
    # a folder stands for the images in it (tests/test_zstack.py); one without any is a usage error
    (tmp_path / "empty").mkdir()
    expect_error(capsys, fuse_args(ckpt, imgs["g1"], tmp_path / "empty", out=tmp_path / "o.png"),
                 r"the folder .*empty holds no image files \(\.png, .*name a folder of frames", code=2)
    assert not (tmp_path / "o.png").exists()


def test_error_fewer_than_two_inputs(ckpt, imgs, tmp_path, capsys):
    expect_error(capsys, fuse_args(ckpt, imgs["g1"], out=tmp_path / "o.png"),
                 r"need at least two images to fuse, got 1 \(.*g1\.png\)", code=2)  # a usage error
    with pytest.raises(SystemExit) as e:  # none at all: an argparse usage error
        run(["fuse", "-o", tmp_path / "o.png"], capsys)
    assert e.value.code == 2
    assert "the following arguments are required: IMAGE" in capsys.readouterr().err


def test_error_images_too_small(ckpt, tmp_path, capsys):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"t{i}.png")
        Image.fromarray(np.full((6, 40), 100 + i, np.uint8)).save(paths[-1])
    expect_error(capsys, fuse_args(ckpt, *paths, out=tmp_path / "o.png"),
                 r"the images are 40×6 pixels, too small to fuse: .* at least 8 pixels per side")


def test_small_images_above_the_floor_are_padded(tmp_path, capsys):
    torch.manual_seed(0)
    net = ReDiffuseUNet(base=8, mults=(1, 1, 1, 1), groups=2, emb_dim=16)  # min_size 9
    save_checkpoint(tmp_path / "deep.pt", dict(model=net.state_dict(), model_config=net.config,
                                               config=dict(prediction="weights", T=50)))
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"t{i}.png")
        Image.fromarray(np.full((8, 30), 100 + 50 * i, np.uint8)).save(paths[-1])
    code, _, err = run(fuse_args(tmp_path / "deep.pt", *paths, out=tmp_path / "o.png"), capsys)
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "o.png")).shape == (8, 30)


def test_error_missing_default_checkpoint(imgs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(W, "DEFAULT_CHECKPOINT", tmp_path / "checkpoints" / "rediffuse-weights-bconv.pt")
    expect_error(capsys, ["fuse", imgs["g1"], imgs["g2"], "-o", tmp_path / "o.png", "--device", "cpu"],
                 r"the default checkpoint .*rediffuse-weights-bconv\.pt is not there.*--checkpoint PATH")


def test_error_missing_corrupt_or_incompatible_checkpoint(imgs, tmp_path, capsys):
    a = [imgs["g1"], imgs["g2"]]
    o = tmp_path / "o.png"
    expect_error(capsys, fuse_args(tmp_path / "nope.pt", *a, out=o), r"checkpoint not found: .*nope\.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 100)
    expect_error(capsys, fuse_args(junk, *a, out=o), r"junk\.pt is not a readable rediffuse checkpoint")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    expect_error(capsys, fuse_args(tmp_path / "other.pt", *a, out=o), r"not a rediffuse model checkpoint")
    net = ReDiffuseUNet(in_channels=6, out_channels=2, base=8, mults=(1,), groups=2)
    save_checkpoint(tmp_path / "rgb.pt", dict(model=net.state_dict(), model_config=net.config, config={}))
    expect_error(capsys, fuse_args(tmp_path / "rgb.pt", *a, out=o),
                 r"6 input and 2 output channels; fusion needs a luminance model")
    sd = net.state_dict()
    sd.pop(next(iter(sd)))
    save_checkpoint(tmp_path / "cut.pt", dict(model=sd, model_config=net.config, config={}))
    expect_error(capsys, fuse_args(tmp_path / "cut.pt", *a, out=o), r"does not match the model it describes")
    net = ReDiffuseUNet(base=8, mults=(1,), groups=2)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    next(v for v in sd.values() if v.is_floating_point()).view(-1)[0] = float("inf")
    save_checkpoint(tmp_path / "inf.pt", dict(model=sd, model_config=net.config, config={"prediction": "weights"}))
    expect_error(capsys, fuse_args(tmp_path / "inf.pt", *a, out=o), r"inf\.pt is corrupt: .*NaN/inf")
    assert not o.exists()


def test_error_cuda_requested_without_cuda(ckpt, imgs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = fuse_args(ckpt, imgs["g1"], imgs["g2"], out=tmp_path / "o.png")
    argv[argv.index("--device") + 1] = "cuda"
    expect_error(capsys, argv, r"CUDA was requested but this PyTorch build sees no GPU; use --device cpu")


def test_error_output_cannot_be_written(ckpt, imgs, tmp_path, capsys):
    a = [imgs["g1"], imgs["g2"]]
    expect_error(capsys, fuse_args(ckpt, *a, out=tmp_path), r"cannot write .*: it is a folder")
    expect_error(capsys, fuse_args(ckpt, *a, out=tmp_path / "o.xyz"), r"unknown image extension '\.xyz'")
    expect_error(capsys, fuse_args(ckpt, *a, out=tmp_path / "noext"), r"no file extension")
    expect_error(capsys, fuse_args(ckpt, *a, out=imgs["g1"].parent / "g1.png" / "o.png"),
                 r"g1\.png is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_error_nan_in_sampling_leaves_no_output(ckpt, imgs, tmp_path, capsys, monkeypatch):
    def nan_forward(self, x, t, cond=None):
        return torch.full_like(x[:, :1], float("nan"))

    monkeypatch.setattr(ReDiffuseUNet, "forward", nan_forward)
    expect_error(capsys, fuse_args(ckpt, imgs["g1"], imgs["g2"], out=tmp_path / "o.png"),
                 r"NaN/inf values at timestep \d+: the checkpoint looks broken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_interrupt_leaves_no_output(ckpt, imgs, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(F.FusionModel, "sample", interrupted)
    rc, _, err = run(fuse_args(ckpt, imgs["g1"], imgs["g2"], out=tmp_path / "o.png"), capsys)
    assert rc == 130 and "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_debug_shows_the_traceback(ckpt, imgs, tmp_path, capsys):
    with pytest.raises(ValueError, match="at least two"):
        run(["--debug", *fuse_args(ckpt, imgs["g1"], out=tmp_path / "o.png")], capsys)


def test_python_dash_m_entry_point(ckpt, imgs, tmp_path):
    import subprocess
    import sys

    def dash_m(*args):
        return subprocess.run([sys.executable, "-m", "rediffuse", "fuse", *map(str, args)], capture_output=True,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})

    r = dash_m(imgs["g1"], "-o", tmp_path / "o.png", "--checkpoint", ckpt)
    assert r.returncode == 2 and "rediffuse fuse: error: need at least two images" in r.stderr
    r = dash_m(imgs["g1"], imgs["g2"], "-o", tmp_path / "o.png", "--checkpoint", ckpt, "--steps", "1", "-q",
               "--device", "cpu", "--threads", "1", "--align", "none")
    assert r.returncode == 0 and r.stderr == "" and (tmp_path / "o.png").is_file()


@pytest.mark.shared
def test_lytro_triple(ckpt, tmp_path, capsys):
    root = dataset_dir("Lytro-Triple")
    if root is None:
        pytest.skip("../shared/data/Lytro-Triple is not present")
    stem = sorted((root / "A").iterdir())[0].name
    files = [root / k / stem for k in ("A", "B", "C")]
    code, _, err = run(fuse_args(ckpt, *files, out=tmp_path / "triple.png", extra=["-q"]), capsys)
    assert code == 0 and err == ""
    with Image.open(tmp_path / "triple.png") as im:
        assert im.size == (520, 520) and im.mode == "RGB"
