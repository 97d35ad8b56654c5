"""rediffuse evaluate: scoring folders, tables, the Lytro leaderboard, CLI errors."""
import csv

import numpy as np
import pytest

from rediffuse.cli import main
from rediffuse.evaluate import evaluate_folder, leaderboard, make_method, markdown_table, mean_table
from rediffuse.imageio import write_image
from tests.conftest import require_dataset


@pytest.fixture
def tiny_folder(tmp_path):
    rng = np.random.default_rng(0)
    for stem in ("p1", "p2"):
        gt = rng.integers(0, 256, (48, 40), dtype=np.uint8)
        a, b = gt.copy(), gt.copy()
        a[:, 20:] = 128
        b[:, :20] = 128
        for sub, img in (("A", a), ("B", b), ("GT", gt)):
            write_image(tmp_path / "ds" / sub / f"{stem}.png", img)
    return tmp_path / "ds"


def test_evaluate_folder_writes_images_csv_and_summary(tiny_folder, tmp_path):
    methods = [make_method("average"), make_method("focus-select")]
    rows = evaluate_folder(tiny_folder, methods, tmp_path / "out", progress=False)
    assert len(rows) == 4 and {"QMI", "QG", "Qabf", "QP", "QE", "MS-SSIM", "PSNR", "SSIM"} <= set(rows[0])
    table = mean_table(rows)
    assert table["focus-select"]["PSNR"] > table["average"]["PSNR"] + 5
    with open(tmp_path / "out" / "per_image.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (tmp_path / "out" / "focus-select" / "fused" / "p1.png").exists()
    assert "| focus-select |" in (tmp_path / "out" / "summary.md").read_text()


def test_unknown_method_is_a_one_line_error(tiny_folder, tmp_path, capsys):
    assert main(["evaluate", str(tiny_folder), "-m", "magic", "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "unknown method 'magic'" in err and err.count("\n") == 1


def test_missing_dataset_is_a_one_line_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope"), "-m", "gff", "-o", str(tmp_path / "o")]) == 1
    assert "not found" in capsys.readouterr().err


def test_lytro_cli_with_leaderboard(tmp_path, capsys):
    lytro = require_dataset("Lytro")
    out = tmp_path / "lytro"
    assert main(["evaluate", str(lytro), "-m", "focus-select", "-o", str(out), "--leaderboard",
                 "--no-images", "--threads", "1"]) == 0
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20
    text = (out / "leaderboard.md").read_text()
    assert "| GFF | published |" in text and "| focus-select | ours |" in text
    # our focus-measure selection ranks among the strong published methods on QMI
    board = leaderboard(mean_table([{**r, **{k: float(v) for k, v in r.items() if k not in ("image", "method")}}
                                    for r in rows]))
    qmi = [r["QMI"] for r in board]
    ours = next(r for r in board if r["source"] == "ours")
    assert 1.1 < ours["QMI"] < 1.3 and qmi.index(ours["QMI"]) < 8


def test_markdown_table_formats_nan():
    text = markdown_table({"m": {"QMI": 1.0, "MS-SSIM": float("nan")}})
    assert "| m | 1.0000 | – |" in text


def test_markdown_table_keeps_small_differences_visible():
    text = markdown_table({"m": {"QMI": 1.0, "diff": 3.2e-6, "zero": 0.0}})
    assert "| m | 1.0000 | 3.20e-06 | 0.0000 |" in text


def test_run_checkpoints_are_named_by_their_folder_and_names_must_differ(tiny_checkpoint, tmp_path):
    import shutil

    a = make_method(str(tiny_checkpoint))
    assert a.name.startswith(tiny_checkpoint.parent.name + " (")
    other = tmp_path / "run2" / "last.pt"
    other.parent.mkdir()
    shutil.copy(tiny_checkpoint, other)
    assert make_method(str(other)).name.startswith("run2 (")
    with pytest.raises(ValueError, match="share the name"):
        evaluate_folder(tmp_path, [make_method("gff"), make_method("gff")])
