"""``rediffuse train``: presets and their estimates, run folders that cannot be confused, usage errors."""
import os
import subprocess
import sys

import pytest
import torch

from rediffuse import cli
from rediffuse.cli import common
from rediffuse.train import save_checkpoint

TINY = ["--synthetic", "4", "--crop", "24", "--batch", "2", "--base", "8", "--mults", "1", "2", "--groups", "2",
        "--T", "50", "--device", "cpu", "--threads", "1"]


def run_cli(*argv):
    return cli.main([str(a) for a in argv])


def test_paper_preset_dry_run_prints_the_papers_counts(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rediffuse", "train", "--preset", "paper", "--dry-run"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for count in ("26,910,785", "6,789,521", "7,554,353"):
        assert count in r.stdout, r.stdout
    assert "estimated peak memory" in r.stdout and "batch 32 × 256²" in r.stdout and "TFLOP" in r.stdout
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.parametrize("preset", ["small", "layered"])
def test_every_preset_prints_parameters_and_memory(preset, capsys):
    assert run_cli("train", "--preset", preset, "--dry-run", "--grad-checkpoint") == 0
    out = capsys.readouterr().out
    assert "parameters:" in out and "estimated peak memory" in out and "gradient checkpointing" in out


def test_runs_cannot_be_confused(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *TINY, "--steps", "2", "--ckpt-every", "1", "-o", run) == 0
    out = capsys.readouterr().out
    assert "parameters:" in out and "estimated peak memory" in out  # printed before training
    assert (run / "config.json").is_file()
    # resuming with no other flag reads the configuration from the checkpoint
    assert run_cli("train", "-o", run, "--resume", "--device", "cpu") == 0
    assert "already finished: step 2 of 2" in capsys.readouterr().out
    assert run_cli("train", "-o", run, "--resume", "--steps", "3", "--device", "cpu") == 0
    assert "3 steps (1 now)" in capsys.readouterr().out
    # a flag that contradicts the run: one line naming the settings
    rc = run_cli("train", "-o", run, "--resume", "--lr", "0.1", "--base", "16", "--device", "cpu")
    assert rc == common.EXIT_FAILURE
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "lr: run 0.0002, given 0.1" in err and "model.base: run 8, given 16" in err
    # a new run where one is: refused unless --overwrite
    assert run_cli("train", *TINY, "--steps", "1", "-o", run) == common.EXIT_FAILURE
    assert "already holds a training run" in capsys.readouterr().err
    assert run_cli("train", *TINY, "--steps", "1", "--overwrite", "-o", run) == 0
    assert len((run / "loss.csv").read_text().splitlines()) == 2


def test_a_run_of_an_older_version_resumes_from_its_folder_alone(tmp_path, capsys):
    """Like runs/layered-bconv: started before this version (config with ``amp``, no precision/workers)."""
    run = tmp_path / "old"
    assert run_cli("train", *TINY, "--steps", "2", "--attention", "2", "--dropout", "0", "-o", run) == 0
    ck = torch.load(run / "last.pt", weights_only=True)
    for key in ("precision", "grad_checkpoint", "workers"):
        del ck["config"][key]
    ck["config"]["amp"] = True
    save_checkpoint(run / "last.pt", ck)
    (run / "config.json").unlink()
    capsys.readouterr()
    assert run_cli("train", "-o", run, "--resume", "--steps", "3", "--device", "cpu", "--threads", "1") == 0
    assert "3 steps (1 now)" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--ckpt-every", "--base", "--steps", "--batch", "--crop"])
def test_zero_is_a_usage_error(flag, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli("train", "-o", "x", flag, "0")
    assert e.value.code == common.EXIT_USAGE and "expected a number ≥ 1, got 0" in capsys.readouterr().err


def test_other_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli("train", "-o", tmp_path, "--resume", "--overwrite")
    assert e.value.code == common.EXIT_USAGE
    assert run_cli("train", "--synthetic", "2") == common.EXIT_USAGE  # no -o
    assert "-o/--out is required" in capsys.readouterr().err
    assert run_cli("train", "-o", tmp_path / "none", "--resume") == common.EXIT_FAILURE
    assert "no checkpoint at" in capsys.readouterr().err
