from rediffuse.ablation import TABLE2, TABLE3, parameter_table, train_variants, variant_config
from rediffuse.train import TrainConfig, load_checkpoint


def _tiny(steps=2):
    return TrainConfig(synthetic=4, crop=24, batch=2, steps=steps, prediction="weights", T=50,
                       model=dict(base=8, mults=(1, 2), conv="bconv", groups=2, emb_dim=16))


def test_variant_config_merges_model_dict():
    cfg = variant_config(_tiny(), TABLE2["rgb-plain"][1])
    assert cfg.channels == 3 and cfg.model["conv"] == "plain" and cfg.model["base"] == 8
    assert _tiny().model["conv"] == "bconv"  # the base config is not modified
    assert set(TABLE3) == {"plain", "gconv", "fconv", "bconv"}


def test_train_variants_skips_finished_and_resumes(tmp_path):
    variants = {k: TABLE3[k] for k in ("plain", "gconv")}
    paths = train_variants(_tiny(2), variants, tmp_path, progress=False)
    assert [load_checkpoint(p)["step"] for p in paths.values()] == [2, 2]
    assert load_checkpoint(paths["gconv"])["model_config"]["conv"] == "gconv"
    mtime = paths["plain"].stat().st_mtime_ns
    train_variants(_tiny(2), variants, tmp_path, progress=False)  # finished: untouched
    assert paths["plain"].stat().st_mtime_ns == mtime
    paths = train_variants(_tiny(3), variants, tmp_path, progress=False)  # longer budget: resumed to 3
    assert load_checkpoint(paths["plain"])["step"] == 3


def test_train_variants_never_takes_another_runs_folder(tmp_path):
    """The smoke-then-full crash of notebook 06: a folder holding a run of another size is an error."""
    import dataclasses

    import pytest

    variants = {"plain": TABLE3["plain"]}
    train_variants(_tiny(2), variants, tmp_path, progress=False)
    bigger = dataclasses.replace(_tiny(2), model=dict(_tiny().model, base=16))
    with pytest.raises(ValueError, match="other settings.*model.base"):
        train_variants(bigger, variants, tmp_path, progress=False)  # finished run of another size
    with pytest.raises(ValueError, match="other settings.*model.base"):
        train_variants(dataclasses.replace(bigger, steps=4), variants, tmp_path, progress=False)  # would resume


def test_parameter_table():
    rows = {r["conv"]: r for r in parameter_table(base=8, mults=(1, 2), groups=2)}
    assert rows["plain"]["ratio_to_plain"] == 1
    for conv in ("bconv", "fconv", "gconv"):  # hidden convs shrink by m = 4; the time MLP does not
        assert 0.25 < rows[conv]["ratio_to_plain"] < 0.8


def test_gconv_and_bconv_coincide_for_quarter_turns_and_3x3_filters():
    # m = 4 and inP = p = 3: the bicubic basis sampled at quarter-turned grids is exactly rot90 of the
    # filter, so B-Conv and G-Conv U-Nets built from one seed are the same function (Table 3 caveat)
    import torch

    from rediffuse.unet import ReDiffuseUNet

    nets = {}
    for conv in ("gconv", "bconv", "fconv"):
        torch.manual_seed(0)
        nets[conv] = ReDiffuseUNet(base=8, mults=(1, 2), groups=2, emb_dim=16, conv=conv).eval()
    x, t = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(1)), torch.tensor([3, 40])
    with torch.no_grad():
        out = {k: n(x, t) for k, n in nets.items()}
    assert torch.equal(out["gconv"], out["bconv"])
    assert not torch.allclose(out["fconv"], out["bconv"], atol=1e-3)  # a different basis: a different net


def test_central_crops_write_the_middle_of_each_pair_once(tmp_path):
    import numpy as np

    from rediffuse.ablation import central_crops
    from rediffuse.data import FusionFolder, generate_synthetic_folder

    src = generate_synthetic_folder(tmp_path / "src", n=3, seed=0, size=40)
    out = central_crops(src, tmp_path / "crops", 24, limit=2)
    ds = FusionFolder(out)
    assert ds.stems == FusionFolder(src).stems[:2] and ds.has_gt
    full, crop = FusionFolder(src).load(ds.stems[0]), ds.load(ds.stems[0])
    assert all(np.array_equal(crop[k], full[k][8:32, 8:32]) for k in ("A", "B", "GT"))
    stamp = (out / "A" / f"{ds.stems[0]}.png").stat().st_mtime_ns
    central_crops(src, out, 24)  # adds the third pair, keeps the others
    assert len(FusionFolder(out)) == 3 and (out / "A" / f"{ds.stems[0]}.png").stat().st_mtime_ns == stamp


def test_central_crops_of_another_source_replace_the_stale_ones(tmp_path):
    """A fresh clone crops synthetic pairs (with GT/); the same folder later gets crops of a set
    without GT/ (Lytro, once the data is there): no stale file of the first source remains."""
    import shutil

    from rediffuse.ablation import central_crops
    from rediffuse.data import FusionFolder, generate_synthetic_folder

    syn = generate_synthetic_folder(tmp_path / "syn", n=2, seed=0, size=40)
    real = tmp_path / "real"
    for key in ("A", "B"):  # another source, other stems, no ground truth
        (real / key).mkdir(parents=True)
        for stem in FusionFolder(syn).stems:
            shutil.copy(syn / key / f"{stem}.png", real / key / f"pair-{stem}.png")
    out = central_crops(syn, tmp_path / "crops", 24)
    assert FusionFolder(out).has_gt
    out = central_crops(real, out, 24)
    ds = FusionFolder(out)  # would raise on GT/ stems that A/ and B/ lack
    assert not ds.has_gt and all(s.startswith("pair-") for s in ds.stems) and len(ds) == 2
    (out / "SOURCE.txt").unlink()  # crops of an older version (no manifest) are not trusted either
    stamp = (out / "A" / f"{ds.stems[0]}.png").stat().st_mtime_ns
    central_crops(real, out, 24)
    assert (out / "A" / f"{ds.stems[0]}.png").stat().st_mtime_ns != stamp and len(FusionFolder(out)) == 2


def test_replace_other_retrains_a_disposable_run_and_changes_its_key(tmp_path):
    import dataclasses

    from rediffuse.ablation import runs_key
    from rediffuse.train import read_run_config

    variants = {"plain": TABLE3["plain"]}
    paths = train_variants(_tiny(2), variants, tmp_path, progress=False)
    key = runs_key(paths)
    assert runs_key(train_variants(_tiny(2), variants, tmp_path, progress=False)) == key  # kept: same key
    bigger = dataclasses.replace(_tiny(2), model=dict(_tiny().model, base=16))
    paths = train_variants(bigger, variants, tmp_path, progress=False, replace_other=True)
    cfg, step = read_run_config(paths["plain"].parent)
    assert cfg.model["base"] == 16 and step == 2 and runs_key(paths) != key
    before = runs_key(paths)
    longer = train_variants(dataclasses.replace(bigger, steps=3), variants, tmp_path, progress=False)
    assert runs_key(longer) != before  # trained further: scores of the shorter run are not reused
