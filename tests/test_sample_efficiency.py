"""rediffuse.sample_efficiency: upright training data, nested training sets, exact quarter turns of a
test view, and a tiny study end to end (trained, scored, cached, resumed)."""
import json

import numpy as np
import pytest
import torch

from rediffuse import sample_efficiency as se
from rediffuse.data import FusionFolder
from rediffuse.train import build_dataset
from rediffuse.viz.ablation import study_markdown

TINY_MODEL = dict(base=8, mults=(1, 2), groups=2)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("upright")
    return se.render_upright_pairs(folder, 6, 100, seed=0)


def test_upright_pairs_are_reproducible_and_kept(pairs, tmp_path):
    again = se.render_upright_pairs(tmp_path, 2, 100, seed=0)
    a, b = FusionFolder(pairs).load("upright-0001"), FusionFolder(again).load("upright-0001")
    assert all(np.array_equal(a[k], b[k]) for k in ("A", "B", "GT"))
    stamp = (again / "A" / "upright-0000.png").stat().st_mtime_ns
    se.render_upright_pairs(again, 3, 100, seed=0)  # adds pair 2, leaves 0 and 1 alone
    assert (again / "A" / "upright-0000.png").stat().st_mtime_ns == stamp
    assert len(FusionFolder(again)) == 3


def test_no_augmentation_means_upright_crops(pairs):
    cfg = se.study_config(2, crop=32, model=TINY_MODEL)
    cfg.data = [str(pairs)]
    assert cfg.augment is False
    ds = build_dataset(cfg)
    for step in range(5):
        ds.datasets[0].set_epoch(step)
        assert {(ds[i]["k"], ds[i]["flip"]) for i in range(len(ds))} == {(0, 0)}


def test_training_sets_are_nested():
    stems = [f"s{i:02d}" for i in range(20)]
    subsets = se.nested_subsets(stems, [20, 4, 10], seed=3)
    assert list(subsets) == [4, 10, 20] and subsets[20] == sorted(stems)
    assert set(subsets[4]) < set(subsets[10]) < set(subsets[20])
    with pytest.raises(ValueError, match="has 20 training pairs"):
        se.nested_subsets(stems, [21])


def test_views_keep_the_compared_square_inside():
    v = se.Views(224, 96)
    assert v.source >= 224 * 2 ** 0.5 + 2 and (v.source - v.window) % 2 == 0
    with pytest.raises(ValueError, match="window/√2"):
        se.Views(64, 50)
    with pytest.raises(ValueError, match="both be even or both odd"):
        se.Views(64, 41)


def test_turn_is_exact_at_quarter_turns_and_interpolates_between():
    x = torch.randn(1, 1, 30, 30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(se.turn(x, 90, 20), torch.rot90(x, 1, dims=(-2, -1))[..., 5:25, 5:25])
    assert torch.equal(se.turn(x, 360, 20), x[..., 5:25, 5:25])
    half = se.turn(se.turn(x, 45, 30), 45, 12)
    assert (half - se.turn(x, 90, 12)).abs().mean() < 0.5 * x.abs().mean()  # close, not exact


@pytest.mark.slow
def test_a_tiny_study_trains_scores_and_resumes(pairs, tmp_path):
    stems = FusionFolder(pairs).stems
    base = se.study_config(2, batch=2, crop=32, model=TINY_MODEL)
    views = se.Views(48, 30)
    study = se.run_study(pairs, stems[:4], pairs, stems[4:], [2, 4], base, tmp_path, views=views, curve_step=90)
    assert study["sizes"] == [2, 4] and set(study["curve"]) == {"bconv", "plain"}
    assert study["curve"]["bconv"]["angles"] == [0, 45, 90, 180, 270, 360]
    for n in (2, 4):
        rote, plain = study["table"][n]["bconv"], study["table"][n]["plain"]
        assert rote["angles"] == [0.0, 90.0, 45.0]
        assert rote["consistency"][0] == 0 and rote["consistency"][1] < 1e-3  # exact up to float32 round-off
        assert plain["consistency"][1] > 1e-2  # nothing ties the plain twin's turned output
        assert rote["parameters"] < plain["parameters"]
        assert all(10 < p < 80 for p in rote["psnr"] + plain["psnr"])
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert runs == ["n2-bconv", "n2-plain", "n4-bconv", "n4-plain"]
    cfg = json.loads((tmp_path / "n2-plain" / "config.json").read_text())["config"]
    assert cfg["augment"] is False and len(cfg["exclude"]) == 4 and cfg["model"]["conv"] == "plain"
    # a second call reuses the runs and the stored scores: nothing is trained or fused again
    stamp = (tmp_path / "scores-n4-bconv.json").stat().st_mtime_ns
    again = se.run_study(pairs, stems[:4], pairs, stems[4:], [2, 4], base, tmp_path, views=views, curve_step=90)
    assert again == study
    assert (tmp_path / "scores-n4-bconv.json").stat().st_mtime_ns == stamp
    table = study_markdown(study, total_pairs=4)
    assert "| 4 (all) | Rot-E (B-Conv) |" in table and "e-0" in table  # round-off shown, not rounded to 0


def test_the_control_has_about_the_rote_models_parameters():
    from rediffuse.ablation import variant_config
    from rediffuse.train import build_model
    from rediffuse.unet import count_parameters

    base = se.study_config(10)
    count = {key: count_parameters(build_model(variant_config(base, over)))
             for key, (_, over) in {**se.MODELS, **se.CONTROLS}.items()}
    assert count["plain"] > 2.5 * count["bconv"]  # equal widths: the twin has about 3× the parameters
    assert 0.9 <= count["plain-b8"] / count["bconv"] <= 1.2, count


@pytest.mark.slow
def test_a_study_trains_the_models_it_is_given(pairs, tmp_path):
    # the control alone (as `bench_why_equivariance.py --control` adds it to the twins): its own run
    # folder, label and scores, and nothing trained for the models left out
    stems = FusionFolder(pairs).stems
    base = se.study_config(2, batch=2, crop=32, model=TINY_MODEL)
    study = se.run_study(pairs, stems[:4], pairs, stems[4:], [2], base, tmp_path, views=se.Views(48, 30),
                         curve_step=180, models=se.CONTROLS)
    assert study["labels"] == {"plain-b8": se.CONTROLS["plain-b8"][0]} and set(study["curve"]) == {"plain-b8"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["n2-plain-b8"]
    cfg = json.loads((tmp_path / "n2-plain-b8" / "config.json").read_text())["config"]
    assert cfg["model"]["conv"] == "plain" and cfg["model"]["base"] == 8 and cfg["model"]["groups"] == 2
    assert study["table"][2]["plain-b8"]["consistency"][1] > 0  # no quarter-turn guarantee without B-Conv
