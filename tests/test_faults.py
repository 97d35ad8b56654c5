"""Faults and mistakes that must not cost the user anything: sources, runs and scores survive.

One test (or a few) per case of docs/reliability.md, in its order. A case where a process must die
runs the process for real (``kill -9``) in a subprocess. The disk-full cases mount a small tmpfs and
are skipped where that is not allowed (not root, or no mount in a container).
"""
from __future__ import annotations

import csv
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import torch
from PIL import Image

from rediffuse import cli
from rediffuse.checkpoint import export_checkpoint, load_checkpoint, save_checkpoint
from rediffuse.evaluate import Method, evaluate_folder, make_method, read_rows
from rediffuse.fuse import FusionModel, fuse
from rediffuse.imageio import read_image_float, read_image_native, write_image

torch.set_num_threads(1)

# the children run single-threaded too: the CI machine has two cores
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_cli(argv, capsys):
    """``rediffuse ARGV`` in this process: (exit code, stdout, stderr); argparse's exits included."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str, command: str) -> str:
    """The one error line a failed command printed (it must be the only one, and no traceback)."""
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"rediffuse {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def fuse_argv(ckpt, *images, out, extra=()):
    return ["fuse", *images, "-o", out, "--checkpoint", ckpt, "--steps", "1", "--device", "cpu", "-q", *extra]


@pytest.fixture
def photos(tmp_path):
    """Two 8-bit grey 'photos' (40 × 48) in tmp_path/in."""
    rng = np.random.default_rng(0)
    d = tmp_path / "in"
    d.mkdir()
    paths = []
    for name in ("near.png", "far.png"):
        paths.append(d / name)
        Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(paths[-1])
    return paths


@pytest.fixture
def tiny(tiny_checkpoint):
    """The small test model, loaded."""
    return FusionModel(tiny_checkpoint)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs: writes beyond that fail with ENOSPC, as on a full disk."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small file system needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# ----------------------------------------------------------------------------- 1. outputs never replace inputs


def test_fuse_refuses_an_output_that_is_one_of_the_inputs(tiny_checkpoint, photos, tmp_path, capsys):
    near, far = photos
    original = near.read_bytes()
    hard = tmp_path / "in" / "hard.png"
    os.link(near, hard)  # another name for the same file (same inode)
    soft = tmp_path / "soft.png"
    soft.symlink_to(near)
    spellings = [near, Path(os.path.relpath(near)), tmp_path / "in" / ".." / "in" / "near.png", hard, soft]
    for out in spellings:
        code, _, err = run_cli(fuse_argv(tiny_checkpoint, near, far, out=out), capsys)
        assert code == 2, (out, err)  # a usage error
        line = error_line(err, "fuse")
        assert "is the input" in line and "-o" in line, line
        assert near.read_bytes() == original and far.exists()
    # the same input given as its output via the second image too
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, near, far, out=far), capsys)
    assert code == 2 and "is the input" in error_line(err, "fuse")
    # a new file next to them is fine
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, near, far, out=tmp_path / "fused.png"), capsys)
    assert code == 0, err


# ----------------------------------------------------------------------------- 4. 16 bits in, 16 bits out


def gradient16(h: int = 48, w: int = 64) -> np.ndarray:
    """A 16-bit grey ramp with far more than 256 distinct levels."""
    return np.linspace(0, 65535, h * w).reshape(h, w).astype(np.uint16)


def test_16bit_rgb_png_is_read_at_full_precision(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 65536, (20, 24, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(imagecodecs.png_encode(rgb))  # a 16-bit RGB PNG written by another program
    assert read_image_native(path).dtype == np.uint16
    assert np.array_equal(read_image_native(path), rgb)
    assert np.abs(read_image_float(path) - rgb / 65535.0).max() < 1e-6  # not cut to 8 bits


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_grey_gradient_fused_with_itself_comes_back_16bit(tiny_checkpoint, tmp_path, capsys, ext):
    src = tmp_path / f"ramp{ext}"
    write_image(src, gradient16())
    out = tmp_path / f"fused{ext}"
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, src, src, out=out), capsys)
    assert code == 0, err
    res = read_image_native(out)
    assert res.dtype == np.uint16 and res.shape == (48, 64)
    assert len(np.unique(res)) > 256


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_colour_in_gives_16bit_colour_out(tiny_checkpoint, tmp_path, capsys, ext):
    g = gradient16()
    rgb = np.dstack([g, g[::-1], g[:, ::-1]])
    src = tmp_path / f"rgb{ext}"
    write_image(src, rgb)
    assert np.array_equal(read_image_native(src), rgb)
    out = tmp_path / f"fused{ext}"
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, src, src, out=out), capsys)
    assert code == 0, err
    res = read_image_native(out)
    assert res.dtype == np.uint16 and res.shape == (48, 64, 3) and len(np.unique(res)) > 256


def test_16bit_result_to_jpeg_is_8bit_with_a_one_line_note(tiny_checkpoint, tmp_path, capsys):
    src = tmp_path / "ramp.png"
    write_image(src, gradient16())
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, src, src, out=tmp_path / "fused.jpg"), capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if "8 bits" in line]
    assert len(notes) == 1 and notes[0].startswith("rediffuse fuse: warning: ") and ".png or .tif" in notes[0]
    assert read_image_native(tmp_path / "fused.jpg").dtype == np.uint8


def test_8bit_inputs_still_give_the_8bit_result(tiny_checkpoint, photos):
    a, b = (read_image_native(p) for p in photos)
    fm = FusionModel(tiny_checkpoint)
    r8 = fuse([a, b], fm, steps=1)
    assert r8.dtype == np.uint8
    assert np.array_equal(fuse(photos, fm, steps=1), r8)  # files and arrays alike
    # the same pixels as 16-bit data come back as 16 bits, within rounding of the 8-bit result
    r16 = fuse([a.astype(np.uint16) * 257, b.astype(np.uint16) * 257], fm, steps=1)
    assert r16.dtype == np.uint16 and np.abs(r16.astype(int) - 257 * r8.astype(int)).max() <= 129


# ----------------------------------------------------------------------------- 5. evaluate keeps its scores


def write_pairs(root: Path, stems, size=(40, 48)) -> Path:
    rng = np.random.default_rng(2)
    for stem in stems:
        for sub in ("A", "B"):
            write_image(root / sub / f"{stem}.png", rng.integers(0, 256, size, dtype=np.uint8))
    return root


def test_evaluate_skips_a_corrupt_pair_and_scores_the_others(tmp_path):
    ds = write_pairs(tmp_path / "ds", ["p1", "p2", "p3"])
    bad = ds / "B" / "p2.png"
    bad.write_bytes(bad.read_bytes()[:60])  # a truncated file
    with pytest.warns(UserWarning, match=r"skipped p2: .*p2\.png"):
        rows = evaluate_folder(ds, [make_method("average")], tmp_path / "out", progress=False)
    assert [r["image"] for r in rows] == ["p1", "p3"]
    assert rows.skipped and rows.skipped[0][0] == "p2" and "B/p2.png" in rows.skipped[0][1]
    _, saved = read_rows(tmp_path / "out" / "per_image.csv")
    assert [r["image"] for r in saved] == ["p1", "p3"]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Means over 2 images" in summary and "p2" in summary and "B/p2.png" in summary


def test_evaluate_cli_names_the_bad_file(tmp_path, capsys):
    ds = write_pairs(tmp_path / "ds", ["p1", "p2", "p3"])
    (ds / "A" / "p3.png").write_text("not an image")
    code, out, err = run_cli(["evaluate", ds, "-m", "average", "-o", tmp_path / "out", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "rediffuse evaluate: warning: skipped p3" in err and "A/p3.png" in err
    assert "means over 2 images" in out and "A/p3.png" in (tmp_path / "out" / "summary.md").read_text()


_KILLED_EVALUATION = """
import os, signal, sys
from rediffuse.evaluate import Method, evaluate_folder
from rediffuse.baselines import get_baseline

average = get_baseline("average")
calls = []

def dies_on_third(imgs):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no flush: as a power cut to the process
    return average(imgs)

evaluate_folder(sys.argv[1], [Method("average", dies_on_third)], sys.argv[2], progress=False)
"""


def scores(path: Path) -> list[tuple]:
    """The rows of a per_image.csv without their timings."""
    with open(path, newline="") as f:
        return [tuple(v for k, v in r.items() if k != "seconds") for r in csv.DictReader(f)]


def test_evaluate_rows_survive_kill_9_and_resume_computes_only_the_rest(tmp_path):
    ds = write_pairs(tmp_path / "ds", ["p1", "p2", "p3", "p4"])
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", _KILLED_EVALUATION, str(ds), str(out)], env=CHILD_ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    _, kept = read_rows(out / "per_image.csv")
    assert [row["image"] for row in kept] == ["p1", "p2"]  # written as they were scored
    # a half-written row (a kill inside write()) is dropped on resume, not read as a score
    with open(out / "per_image.csv", "a") as f:
        f.write("p3,average,1.2")
    from rediffuse.baselines import get_baseline

    seen = []
    average = get_baseline("average")
    counting = Method("average", lambda imgs: seen.append(1) or average(imgs))
    rows = evaluate_folder(ds, [counting], out, progress=False, resume=True)
    assert len(seen) == 2 and [row["image"] for row in rows] == ["p1", "p2", "p3", "p4"]
    fresh = tmp_path / "fresh"
    evaluate_folder(ds, [make_method("average")], fresh, progress=False)
    assert scores(out / "per_image.csv") == scores(fresh / "per_image.csv")
    assert "Means over 4 images" in (out / "summary.md").read_text()


def test_evaluate_cli_will_not_replace_earlier_scores(tmp_path, capsys):
    ds = write_pairs(tmp_path / "ds", ["p1", "p2"])
    out = tmp_path / "out"
    argv = ["evaluate", ds, "-m", "average", "-o", out, "--device", "cpu", "--no-images"]
    assert run_cli(argv, capsys)[0] == 0
    before = (out / "per_image.csv").read_text()
    code, _, err = run_cli(argv + ["-m", "gff"], capsys)
    assert code == 2 and "--resume" in error_line(err, "evaluate") and "--overwrite" in err
    assert (out / "per_image.csv").read_text() == before
    code, _, err = run_cli(argv + ["--resume"], capsys)  # nothing left to do: the rows stay as they were
    assert code == 0, err
    assert (out / "per_image.csv").read_text() == before
    assert run_cli(argv + ["--overwrite"], capsys)[0] == 0


# ----------------------------------------------------------------------------- 7. a full disk


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(small_disk):
    path = small_disk / "last.pt"
    good = {"model": {"w": torch.arange(256, dtype=torch.float32)}, "step": 1}
    save_checkpoint(path, good)
    before = path.read_bytes()
    big = {"model": {"w": torch.randn(100_000)}, "step": 2}  # 400 kB: cannot fit
    with pytest.raises(OSError) as e:
        save_checkpoint(path, big)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "disk is full" in msg and "unchanged" in msg
    assert sorted(p.name for p in small_disk.iterdir()) == ["last.pt"]  # no temporary file left
    assert path.read_bytes() == before
    back = load_checkpoint(path)  # the digest still verifies
    assert back["step"] == 1 and torch.equal(back["model"]["w"], good["model"]["w"])


def test_full_disk_while_writing_an_image_leaves_no_partial_file(small_disk):
    old = small_disk / "fused.png"
    write_image(old, np.zeros((8, 8), np.uint8))
    before = old.read_bytes()
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # 196 kB, incompressible
    for target in (old, small_disk / "new.png"):
        with pytest.raises(OSError) as e:
            write_image(target, noise)
        msg = str(e.value)
        assert "\n" not in msg and str(target) in msg and "disk is full" in msg, msg
        assert sorted(p.name for p in small_disk.iterdir()) == ["fused.png"]
    assert old.read_bytes() == before


def test_fuse_cli_on_a_full_disk_is_one_line_and_leaves_nothing(tiny_checkpoint, small_disk, capsys):
    rng = np.random.default_rng(3)
    srcs = []
    for name in ("a.png", "b.png"):  # noise: the fused PNG (~150 kB) cannot fit in 64 kB
        srcs.append(small_disk.parent / name)
        write_image(srcs[-1], rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, *srcs, out=small_disk / "fused.png"), capsys)
    assert code == 1 and "disk is full" in error_line(err, "fuse")
    assert list(small_disk.iterdir()) == []


# ----------------------------------------------------------------------------- 8. command-line mistakes


def test_fuse_usage_mistakes_exit_2_with_a_clear_line(tiny_checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "o.png"
    cases = [
        (["--steps", "-1"], "--steps must be a whole number from 1 to 50 (the model's T), got -1"),
        (["--steps", "0"], "--steps must be a whole number from 1 to 50 (the model's T), got 0"),
        (["--steps", "x"], "expected a whole number, got 'x'"),
        (["--seed", str(2**64)], "0 to 2**63 - 1"),
        (["--seed", "-3"], "0 to 2**63 - 1"),
    ]
    for extra, expected in cases:
        code, _, err = run_cli(fuse_argv(tiny_checkpoint, *photos, out=out, extra=extra), capsys)
        assert code == 2 and expected in err and "Overflow" not in err, (extra, err)
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, photos[0], out=out), capsys)  # one input
    assert code == 2 and "need at least two images" in error_line(err, "fuse")
    assert not out.exists()


def test_fuse_checkpoint_folder_and_nan_tiff_are_named_for_what_they_are(tiny_checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "o.png"
    code, _, err = run_cli(fuse_argv(tiny_checkpoint.parent, *photos, out=out), capsys)
    assert code == 1 and "expected a checkpoint file, got a folder" in error_line(err, "fuse")
    nan = np.random.default_rng(0).random((40, 48)).astype(np.float32)
    nan[3, 4] = np.nan
    Image.fromarray(nan, mode="F").save(tmp_path / "nan.tif")
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, tmp_path / "nan.tif", photos[1], out=out), capsys)
    line = error_line(err, "fuse")
    assert code == 1 and "NaN" in line and "outside [0, 1]" not in line
    assert not out.exists()


def test_evaluate_usage_mistakes_exit_2(tiny_checkpoint, tmp_path, capsys):
    ds = write_pairs(tmp_path / "ds", ["p1"])
    base = ["evaluate", ds, "-o", tmp_path / "out", "--device", "cpu"]
    cases = [
        (["-m", tiny_checkpoint, "--steps", "0"], "expected a number ≥ 1, got 0"),
        (["-m", tiny_checkpoint, "--steps", "-1"], "expected a number ≥ 1, got -1"),
        (["-m", "average", "--limit", "0"], "expected a number ≥ 1, got 0"),
        (["-m", "average", "--limit", "-1"], "expected a number ≥ 1, got -1"),
        (["-m", tiny_checkpoint, "--seed", str(2**70)], "0 to 2**63 - 1"),
    ]
    for extra, expected in cases:
        code, _, err = run_cli(base + extra, capsys)
        assert code == 2 and expected in err, (extra, err)
    assert not (tmp_path / "out" / "per_image.csv").exists()
    code, _, err = run_cli(base + ["-m", tiny_checkpoint.parent], capsys)  # a run folder, not its last.pt
    assert code == 1 and "expected a checkpoint file, got a folder" in error_line(err, "evaluate")
    with pytest.raises(ValueError, match="limit must be"):
        evaluate_folder(ds, [make_method("average")], limit=0, progress=False)


# ----------------------------------------------------------------------------- 9. damaged and malicious checkpoints


def test_a_flipped_bit_inside_a_weight_tensor_is_refused(tiny_checkpoint, tmp_path, capsys, photos):
    path = export_checkpoint(tiny_checkpoint, tmp_path / "model.pt")
    state = load_checkpoint(path)
    name, weight = max(state["model"].items(), key=lambda kv: kv[1].numel())
    data = path.read_bytes()
    at = data.find(weight.numpy().tobytes())  # the tensor's bytes, stored uncompressed in the zip
    assert at > 0, f"cannot find the bytes of {name} in {path}"
    damaged = bytearray(data)
    damaged[at + weight.numel() * weight.element_size() // 2] ^= 0x08  # one bit, mid-tensor
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value) and "damaged" in str(e.value)
    code, _, err = run_cli(fuse_argv(path, *photos, out=tmp_path / "o.png"), capsys)
    assert code == 1 and "damaged" in error_line(err, "fuse") and not (tmp_path / "o.png").exists()


class _Payload:
    """Unpickling this object opens (creates) a file: stands in for any code an attacker would run."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_pickle_never_runs(tmp_path, capsys, photos):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Payload(str(marker)), "model_config": {}}, evil)
    # the payload is live: an unsafe loader would have run it (checked on a copy)
    probe = tmp_path / "probe"
    torch.save(_Payload(str(probe)), tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert probe.exists()
    with pytest.raises(ValueError) as e:
        load_checkpoint(evil)
    assert "\n" not in str(e.value) and "not a readable rediffuse checkpoint" in str(e.value)
    code, _, err = run_cli(fuse_argv(evil, *photos, out=tmp_path / "o.png"), capsys)
    assert code == 1 and "not a readable" in error_line(err, "fuse")
    assert not marker.exists()


# ----------------------------------------------------------------------------- kill -9 during training


TRAIN_ARGS = ["--synthetic", "4", "--crop", "24", "--batch", "2", "--T", "50", "--base", "8", "--mults", "1", "2",
              "--groups", "2", "--prediction", "weights", "--ckpt-every", "1", "--device", "cpu", "--threads", "1"]
TRAIN_STEPS = 30


def train_process(run: Path, resume: bool) -> subprocess.Popen:
    argv = [sys.executable, "-m", "rediffuse", "train", "-o", str(run), "--steps", str(TRAIN_STEPS), *TRAIN_ARGS]
    return subprocess.Popen(argv + (["--resume"] if resume else []), env=CHILD_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def checkpointed_step(run: Path) -> int:
    try:
        return int(load_checkpoint(run / "last.pt")["step"])
    except (OSError, ValueError, KeyError):
        return -1


def wait_for_checkpoint(p: subprocess.Popen, ckpt: Path, old_mtime: int | None) -> float:
    """Wait until ``p`` has saved a checkpoint (``ckpt`` newer than ``old_mtime``) or ended; the time."""
    deadline = time.monotonic() + 300
    while p.poll() is None and time.monotonic() < deadline:
        try:
            if ckpt.stat().st_mtime_ns != old_mtime:
                break
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    return time.monotonic()


def test_kill_9_during_training_then_resume_is_bitwise_an_uninterrupted_run(tmp_path):
    """Kill the trainer at random moments (often inside a checkpoint write: one is saved every step),
    resume each time, and compare the final checkpoint with one run that was never interrupted."""
    rng = random.Random(int(os.environ.get("REDIFFUSE_KILL_SEED", "13")))
    straight = tmp_path / "straight"
    p = train_process(straight, resume=False)
    first = wait_for_checkpoint(p, straight / "last.pt", None)
    assert p.wait(timeout=600) == 0, p.stderr.read()
    # how long the steps take on this machine (the imports before them take longer): each kill
    # falls within the next quarter of that, so three kills land inside the run
    training_s = max(time.monotonic() - first, 0.05)

    run, ckpt = tmp_path / "killed", tmp_path / "killed" / "last.pt"
    kills: list[int] = []  # the checkpointed step after each kill
    while True:
        p = train_process(run, resume=bool(kills))
        if len(kills) < 3:
            # a kill point: a random moment after this process has saved its first checkpoint
            # (before that it is still importing torch, and a kill would test nothing)
            wait_for_checkpoint(p, ckpt, ckpt.stat().st_mtime_ns if ckpt.exists() else None)
            time.sleep(rng.uniform(0.0, training_s / 4))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
                kills.append(checkpointed_step(run))
                continue
        assert p.wait(timeout=600) == 0, f"kills at steps {kills}: {p.stderr.read()}"
        break
    print(f"killed with checkpoints at steps {kills} of {TRAIN_STEPS}")  # shown by pytest -s and on failure
    assert kills and all(0 < k < TRAIN_STEPS for k in kills), f"no kill inside the run (steps {kills})"

    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(ckpt)
    assert a["step"] == b["step"] == TRAIN_STEPS
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}/{k} differs after kills at steps {kills}"
    for i, (sa, sb) in enumerate(zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values())):
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), f"optimizer state {i}/{k} differs"


# ----------------------------------------------------------------------------- 11. every image through one atomic path

# (format, array): the 8-bit RGB TIFF is the one Pillow cut short without a word on a full disk
_FORMATS = [(".tif", (64, 80, 3), np.uint8), (".tif", (64, 80), np.uint8), (".tif", (64, 80, 3), np.uint16),
            (".png", (64, 80, 3), np.uint8), (".jpg", (64, 80, 3), np.uint8), (".bmp", (64, 80, 3), np.uint8),
            (".webp", (64, 80, 3), np.uint8)]


def nearly_full_disk(monkeypatch, room: int, lie: bool = False) -> None:
    """``os.write`` as on a disk with ``room`` bytes free: a short write, then ENOSPC (what the kernel
    does), or with ``lie`` a layer that reports every byte written and keeps only ``room``."""
    real, left = os.write, [room]

    def write(fd, data):
        if fd <= 2:  # the terminal
            return real(fd, data)
        data = memoryview(data)
        if lie:
            real(fd, data[:max(left[0], 0)])
            left[0] -= len(data)
            return len(data)
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, data[:left[0]])
        left[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("ext,shape,dtype", _FORMATS)
def test_a_write_cut_short_by_a_full_disk_is_one_line_for_every_format(tmp_path, monkeypatch, ext, shape, dtype):
    old = tmp_path / f"prev{ext}"
    write_image(old, np.full(shape[:2], 7, np.uint8))
    before = old.read_bytes()
    rng = np.random.default_rng(0)
    noise = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)  # incompressible
    nearly_full_disk(monkeypatch, room=2000)
    with pytest.raises(OSError) as e:
        write_image(old, noise)
    msg = str(e.value)
    assert e.value.errno == errno.ENOSPC and "\n" not in msg and "[Errno" not in msg
    assert msg == f"cannot write {old}: the disk is full; nothing was written and the existing {old.name} is unchanged"
    assert old.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [old.name]


def test_bytes_that_never_reached_the_disk_are_caught_before_the_rename(tmp_path, monkeypatch):
    old = tmp_path / "prev.tif"
    write_image(old, np.zeros((8, 8, 3), np.uint8))
    before = old.read_bytes()
    nearly_full_disk(monkeypatch, room=300, lie=True)
    with pytest.raises(OSError, match=r"the disk is full \(only 300 of \d+ bytes reached it\)"):
        write_image(old, np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    assert old.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["prev.tif"]


def test_figures_take_the_same_atomic_path(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rediffuse.viz.common import save_figure

    fig = plt.figure()
    first = save_figure(fig, tmp_path, "fig").read_bytes()
    nearly_full_disk(monkeypatch, room=100)
    with pytest.raises(OSError, match="fig.png: the disk is full; nothing was written and the existing"):
        save_figure(fig, tmp_path, "fig", dpi=300)
    plt.close(fig)
    assert (tmp_path / "fig.png").read_bytes() == first and len(list(tmp_path.iterdir())) == 1


def test_full_disk_8bit_rgb_tiff_keeps_the_earlier_file(small_disk):
    """The reported case on a real file system: a 64 KiB tmpfs with 12 KiB left."""
    prev = small_disk / "prev.tif"
    write_image(prev, np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    before = prev.read_bytes()
    (small_disk / "fill").write_bytes(b"x" * (64 * 1024 - 16 * 1024))
    with pytest.raises(OSError) as e:
        write_image(prev, np.random.default_rng(1).integers(0, 256, (80, 80, 3), dtype=np.uint8))  # 19 kB
    assert "disk is full" in str(e.value) and "prev.tif is unchanged" in str(e.value)
    assert prev.read_bytes() == before and sorted(p.name for p in small_disk.iterdir()) == ["fill", "prev.tif"]


# ----------------------------------------------------------------------------- 12. the tutorial's output folder


def test_tutorial_will_not_replace_files_in_its_output_folder(tmp_path, monkeypatch, capsys):
    from rediffuse import tutorial

    mine = {tmp_path / "01_bconv.ipynb": "my notebook", tmp_path / "01_bconv.json": "{}",
            tmp_path / "01_bconv" / "keys_kernel.png": "my figure"}
    for path, text in mine.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    ran = []
    monkeypatch.setattr(tutorial, "run_notebook", lambda nb, out, **kw: ran.append(nb.stem) or {"wall_s": 0.0})
    code, _, err = run_cli(["tutorial", "-o", tmp_path, "--only", "01", "--device", "cpu"], capsys)
    line = error_line(err, "tutorial")
    assert code == 2 and "01_bconv.ipynb" in line and "--overwrite" in line and not ran
    assert all(p.read_text() == text for p, text in mine.items())
    with pytest.raises(FileExistsError):
        tutorial.run_tutorial(tmp_path, device="cpu", only=["01"])
    # another notebook's files are not in the way, and --overwrite replaces
    assert run_cli(["tutorial", "-o", tmp_path, "--only", "02", "--device", "cpu"], capsys)[0] == 0
    assert run_cli(["tutorial", "-o", tmp_path, "--only", "01", "--overwrite", "--device", "cpu"], capsys)[0] == 0
    assert ran == ["02_equivariance_theorems", "01_bconv"]


def test_tutorial_never_writes_into_notebooks(tmp_path, capsys):
    from rediffuse import tutorial

    sources = {p: p.read_bytes() for p in tutorial.NOTEBOOK_DIR.glob("*.ipynb")}
    for folder in (tutorial.NOTEBOOK_DIR, tutorial.NOTEBOOK_DIR / "sub"):
        code, _, err = run_cli(["tutorial", "-o", folder, "--overwrite", "--only", "01", "--device", "cpu"], capsys)
        assert code == 2 and "notebooks/ folder" in error_line(err, "tutorial")
    with pytest.raises(ValueError, match="notebooks/ folder"):
        tutorial.run_notebook(tutorial.NOTEBOOK_DIR / "01_bconv.ipynb", tutorial.NOTEBOOK_DIR)
    assert {p: p.read_bytes() for p in tutorial.NOTEBOOK_DIR.glob("*.ipynb")} == sources
    assert not (tutorial.NOTEBOOK_DIR / "sub").exists()


# ----------------------------------------------------------------------------- 13. huge images


def png_header(path: Path, width: int, height: int, bits: int = 8, colour: int = 0) -> Path:
    """A PNG that declares ``width × height`` pixels and holds almost no data: what a decompression
    bomb looks like to a reader that checks the header (the pixels are never decoded here)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bits, colour, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                     + chunk(b"IEND", b""))
    return path


def test_an_image_too_large_is_refused_from_its_header(tiny_checkpoint, photos, tmp_path, monkeypatch, capsys):
    big = png_header(tmp_path / "big.png", 12000, 12000, bits=16, colour=2)  # 144 MP of 16-bit RGB
    import rediffuse.fuse as F

    monkeypatch.setattr(F, "read_image_native", lambda p: pytest.fail(f"{p} decoded before its size was checked"))
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, big, photos[0], out=tmp_path / "o.png",
                                     extra=["--max-pixels", "100M"]), capsys)
    line = error_line(err, "fuse")
    assert code == 1 and "big.png is 12000×12000 pixels (144 MP)" in line and "--max-pixels 100000000" in line
    assert "needs about 24" in line and "GB of memory" in line and not (tmp_path / "o.png").exists()
    with pytest.raises(ValueError, match="big.png is 12000×12000"):
        fuse([big, photos[0]], FusionModel(tiny_checkpoint), max_pixels=10**8)
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, big, photos[0], out=tmp_path / "o.png",
                                     extra=["--max-pixels", "lots"]), capsys)
    assert code == 2 and "--max-pixels" in error_line(err, "fuse")


def test_the_default_pixel_limit_comes_from_the_memory(tiny_checkpoint, photos, tmp_path, monkeypatch, capsys):
    import rediffuse.stack as S

    big = png_header(tmp_path / "big.png", 12000, 12000, bits=16, colour=2)
    monkeypatch.setattr(S, "machine_memory", lambda: 8 * 10**9)  # an 8 GB laptop
    limit = S.default_max_pixels()
    assert 40e6 < limit < 50e6  # (8 GB - 1 GiB) / 160 B
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, big, photos[0], out=tmp_path / "o.png"), capsys)
    line = error_line(err, "fuse")
    assert code == 1 and "this machine's 8.0 GB of memory can fuse" in line and "needs about 24.1 GB" in line
    assert run_cli(fuse_argv(tiny_checkpoint, *photos, out=tmp_path / "o.png"), capsys)[0] == 0  # small ones pass


def test_a_decompression_bomb_is_one_line_not_a_traceback(tiny_checkpoint, photos, tmp_path, capsys):
    bomb = png_header(tmp_path / "bomb.png", 30000, 30000)  # 900 MP, over Pillow's own limit
    for read in (read_image_native, read_image_float):
        with pytest.raises(ValueError) as e:
            read(bomb)
        assert "\n" not in str(e.value) and "bomb.png" in str(e.value) and "900000000 pixels" in str(e.value)
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, bomb, photos[0], out=tmp_path / "o.png",
                                     extra=["--max-pixels", "200M"]), capsys)
    assert code == 1 and "bomb.png is 30000×30000 pixels (900 MP)" in error_line(err, "fuse")
    assert "DecompressionBomb" not in err


# ----------------------------------------------------------------------------- 14. --align auto on small frames


def band_stack(n: int, size: tuple[int, int], photo: str, sigma: float) -> list[np.ndarray]:
    """N frames of identical geometry, frame k sharp in the k-th horizontal band and blurred elsewhere."""
    import cv2

    from rediffuse.data import blur, skimage_photo

    h, w = size
    img = cv2.resize(skimage_photo(photo).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    soft = blur(img, "gaussian", sigma).astype(np.float32)
    edges = np.linspace(0, h, n + 1).astype(int)
    frames = []
    for k in range(n):
        band = np.zeros((h, w, 1), np.float32)
        band[edges[k]:edges[k + 1]] = 1
        frames.append(np.clip(np.rint(band * img + (1 - band) * soft), 0, 255).astype(np.uint8))
    return frames


@pytest.mark.parametrize("photo,n,size", [("rocket", 5, (64, 64)), ("chelsea", 5, (64, 64)),
                                          ("astronaut", 100, (64, 64)), ("coffee", 10, (192, 256))])
def test_auto_alignment_leaves_identical_geometry_alone_at_any_size(tiny, photo, n, size):
    # before: rocket 64×64 "misaligned by up to 11.9 px", chelsea 3.5 px, and the frames were resampled
    from rediffuse import stack as S

    frames = band_stack(n, size, photo, sigma=4.0)
    notes: list[str] = []
    reader = S.FrameReader(lambda i: (frames[i], 8), [f"f{i:03d}.png" for i in range(n)])
    info = reader.survey("auto", log=notes.append)
    assert info.motion is None and reader.registrations is None, notes
    assert notes == ["frames aligned (no frame moves measurably): fused as they are"]
    if n <= 10:
        assert np.array_equal(fuse(frames, tiny, align="auto"), fuse(frames, tiny, align="none"))


@pytest.mark.parametrize("size", [(64, 64), (96, 96)])
def test_auto_alignment_still_registers_moved_small_stacks(size):
    from rediffuse import stack as S
    from stacks import misaligned_stack

    frames, _, _, truth = misaligned_stack(3, size, seed=1)  # shifts up to 20 px, 1°, 2 %
    notes: list[str] = []
    reader = S.FrameReader(lambda i: (frames[i], 8), ["a", "b", "c"])
    assert reader.survey("auto", log=notes.append).motion == "similarity"
    assert notes[0].startswith("frames misaligned by up to")


# ----------------------------------------------------------------------------- 15. full disk under --save-weights


def test_full_disk_while_keeping_weight_maps_names_the_file(tmp_path):
    from rediffuse.stack import OnlineSoftmax

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (a device whose writes fail with ENOSPC)")
    (tmp_path / "0.f32").symlink_to("/dev/full")  # the scratch file of frame 0, on a disk with no room
    acc = OnlineSoftmax(2, (1, 300, 40), keep=tmp_path)
    with pytest.raises(OSError) as e:
        acc.add(0, np.zeros((1, 300, 40), np.float32))
    msg = str(e.value)
    assert e.value.errno == errno.ENOSPC and "\n" not in msg and "requested and" not in msg
    assert f"cannot write {tmp_path / '0.f32'}" in msg and "the disk is full" in msg and "save_weights=DIR" in msg


def test_fuse_cli_save_weights_on_a_full_disk_is_one_line(tiny_checkpoint, small_disk, capsys):
    rng = np.random.default_rng(4)
    srcs = []
    for name in ("a.png", "b.png"):  # 2 × 128² float32 logits (128 kB) cannot fit in 64 kB
        srcs.append(small_disk.parent / name)
        write_image(srcs[-1], rng.integers(0, 256, (128, 128), dtype=np.uint8))
    out = small_disk.parent / "fused.png"
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, *srcs, out=out, extra=["--save-weights", small_disk / "w"]),
                           capsys)
    line = error_line(err, "fuse")
    assert code == 1 and "the disk is full" in line and ".f32" in line and "--save-weights" in line
    assert not out.exists() and list((small_disk / "w").iterdir()) == []  # the scratch folder is gone too


# ----------------------------------------------------------------------------- 16, 17. command lines and exit codes


def test_argparse_mistakes_are_one_line_without_the_usage_block(tiny_checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "o.png"
    cases = [
        (["train", "-o", tmp_path / "run", "--ckpt-every", "0"], "train", "argument --ckpt-every: expected a number"),
        (fuse_argv(tiny_checkpoint, *photos, out=out, extra=["--steps", "x"]), "fuse", "argument --steps"),
        (fuse_argv(tiny_checkpoint, *photos, out=out, extra=["--overlap", "-1"]), "fuse", "argument --overlap"),
        (fuse_argv(tiny_checkpoint, *photos, out=out, extra=["--scale", "0"]), "fuse", "argument --scale"),
        (fuse_argv(tiny_checkpoint, *photos, out=out, extra=["--seed", str(2**64)]), "fuse", "0 to 2**63 - 1"),
        (["train", "-o", tmp_path / "run", "--seed", str(2**64)], "train", "0 to 2**63 - 1"),
        (["evaluate", tmp_path, "-m", "average", "--limit", "0"], "evaluate", "argument --limit"),
        (["fuse", *photos, "-o", out, "--no-such-flag"], "fuse", "unrecognized arguments: --no-such-flag"),
        (["fuse", *photos], "fuse", "the following arguments are required: -o/--output"),
    ]
    for argv, command, expected in cases:
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and "usage:" not in err, (argv, err)
        line = error_line(err, command)
        assert expected in line and line.endswith(f"(rediffuse {command} --help lists the options)"), line
    code, _, err = run_cli(["nonsense"], capsys)
    assert code == 2 and err.startswith("rediffuse: error: argument COMMAND: invalid choice") and err.count("\n") == 1


def test_bad_option_values_exit_2_and_name_the_option(tiny_checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "o.png"
    cases = [
        (fuse_argv(tiny_checkpoint, *photos, out=out, extra=["--tile", "3"]), "fuse", "--tile must be"),
        (fuse_argv(tiny_checkpoint, *photos, out=out, extra=["--tile", "64", "--overlap", "40"]), "fuse",
         "--overlap must be"),
        (fuse_argv(tiny_checkpoint, *photos, out=out, extra=["--sampler", "nope"]), "fuse", "unknown sampler"),
        (["train", "--dry-run", "--crop", "7"], "train", "--crop must be at least 8 pixels, got 7"),
        (["train", "--dry-run", "--base", "4", "--groups", "2"], "train", "--groups 2 must divide"),
        (["train", "--dry-run", "--base", "6"], "train", "--base must be a multiple of 4"),
    ]
    for argv, command, expected in cases:
        code, _, err = run_cli(argv, capsys)
        line = error_line(err, command)
        assert code == 2 and expected in line and "GroupNorm" not in line, (argv, err)
    assert not out.exists()
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, tmp_path / "missing.png", photos[0], out=out), capsys)
    assert code == 1 and "not found" in error_line(err, "fuse")  # a failure while running: 1


def test_ctrl_c_exits_130_and_train_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from rediffuse.cli import fuse as fuse_command
    from rediffuse.cli import train as train_command

    def ctrl_c(args):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(train_command, "run", ctrl_c)
    code, _, err = run_cli(["train", "-o", run, "--synthetic", "4"], capsys)
    assert code == 130 and err == "rediffuse train: interrupted; no checkpoint was written yet: start the run again " \
                                  "with the same command\n"
    (run / "last.pt").write_bytes(b"")
    code, _, err = run_cli(["train", "-o", run, "--synthetic", "4"], capsys)
    assert code == 130 and f"rediffuse train -o {run} --resume" in err and err.count("\n") == 1
    monkeypatch.setattr(fuse_command, "run", ctrl_c)
    code, _, err = run_cli(["fuse", "a.png", "b.png", "-o", tmp_path / "o.png"], capsys)
    assert code == 130 and err == "rediffuse fuse: interrupted\n"


# ----------------------------------------------------------------------------- 18. smaller ones


def test_an_alpha_channel_is_reported_once_per_file(tiny_checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(5)
    paths = []
    for k in range(3):  # three frames: each is read three or four times
        paths.append(tmp_path / f"f{k}.png")
        rgba = rng.integers(0, 256, (40, 48, 4), dtype=np.uint8)
        Image.fromarray(rgba if k < 2 else rgba[..., :3]).save(paths[-1])
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, *paths, out=tmp_path / "o.png"), capsys)
    notes = [line for line in err.splitlines() if "alpha channel dropped" in line]
    assert code == 0 and len(notes) == 2 and "f0.png" in notes[0] and "f1.png" in notes[1], err


def test_a_noise_reference_is_not_blamed_on_the_other_frame(tiny):
    from stacks import misaligned_stack

    _, good, _, _ = misaligned_stack(3, (64, 64), seed=0, shift=0)
    noise = np.random.default_rng(0).integers(0, 256, good[0].shape, dtype=np.uint8)
    cases = [([noise, good[0]], ["noise.png", "good.png"], "good.png and noise.png do not match"),
             ([noise, good[0], good[1]], ["noise.png", "a.png", "b.png"], "no frame matches the reference noise.png"),
             ([good[0], noise, good[1]], ["a.png", "noise.png", "b.png"], "(noise.png: ")]
    for frames, names, expected in cases:
        with pytest.warns(UserWarning, match="could not check whether the frames are aligned") as rec:
            fuse(frames, tiny, align="auto", names=names)
        msg = str(rec[0].message)
        assert expected in msg, msg
    with pytest.raises(ValueError, match=r"no frame can be registered to the reference noise\.png .*reference=K"):
        fuse([noise, good[0], good[1]], tiny, align="similarity", names=["noise.png", "a.png", "b.png"])


def test_flat_frames_give_no_scikit_image_warning(tiny_checkpoint, tmp_path, capsys):
    paths = [tmp_path / "black1.png", tmp_path / "black2.png"]
    for p in paths:
        Image.fromarray(np.zeros((40, 48), np.uint8)).save(p)
    code, _, err = run_cli(fuse_argv(tiny_checkpoint, *paths, out=tmp_path / "o.png"), capsys)
    assert code == 0 and "RMS" not in err and "skimage" not in err, err


def dead_pid() -> int:
    """The id of a process that has ended (killed with -9, as a crashed run would be)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    p.send_signal(signal.SIGKILL)
    p.wait()
    return p.pid


def test_temp_files_of_a_killed_run_are_removed_by_the_next_run(tiny_checkpoint, photos, tmp_path, capsys):
    out_dir, weights = tmp_path / "out", tmp_path / "out" / "w"
    weights.mkdir(parents=True)
    gone = dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a writer still at work
    try:
        left = [out_dir / f".fused.png.{gone}-0123456789ab.tmp", weights / f".weight-01.png.{gone}-0123456789ab.tmp"]
        scratch = weights / f".rediffuse-logits-{gone}-x1y2z3"
        keep = [out_dir / f".fused.png.{live.pid}-ba9876543210.tmp", out_dir / "notes.tmp", out_dir / ".hidden.txt"]
        for p in left + keep:
            p.write_bytes(b"half an image")
        scratch.mkdir()
        (scratch / "0.f32").write_bytes(b"\0" * 64)
        code, _, err = run_cli(fuse_argv(tiny_checkpoint, *photos, out=out_dir / "fused.png",
                                         extra=["--save-weights", weights]), capsys)
        assert code == 0, err
        assert not any(p.exists() for p in left) and not scratch.exists()
        assert all(p.exists() for p in keep)  # a live writer's file, and files that are not ours
        assert sorted(p.name for p in weights.iterdir()) == ["weight-01.png", "weight-02.png"]
    finally:
        live.kill()
        live.wait()
