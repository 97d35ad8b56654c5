"""Faults and mistakes that must not cost the user anything: sources, runs and scores survive.

One test (or a few) per case of docs/reliability.md, in its order. A case where a process must die
runs the process for real (``kill -9``) in a subprocess. The disk-full cases mount a small tmpfs and
are skipped where that is not allowed (not root, or no mount in a container).
"""
from __future__ import annotations

import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import time
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
        (["--steps", "-1"], "expected a number ≥ 1, got -1"),
        (["--steps", "0"], "expected a number ≥ 1, got 0"),
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
