"""Every tutorial notebook runs end to end (smoke configuration) and its numbers hold.

New notebooks (``notebooks/NN_name.ipynb``) are picked up automatically and get the generic checks;
``CHECKS`` adds notebook-specific assertions on the results JSON.
"""
import json
import math

import pytest

from rediffuse.paths import REPO_ROOT
from rediffuse.tutorial import list_notebooks, run_notebook
from tests.conftest import numbers_in

OUT = REPO_ROOT / "outputs" / "test-notebooks"
NOTEBOOKS = list_notebooks()


_numbers = numbers_in


def check_01_bconv(r):
    for key, err in r["c4_error"].items():
        assert err <= (1e-5 if key.endswith("float32") else 1e-12), (key, err)
    assert r["plain_cnn_error_90"] > 0.05
    for basis in ("bconv", "fconv"):
        errs = r["m8_45deg"][basis]
        assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert {int(m): v for m, v in r["param_ratio"].items()} == {4: 0.25, 8: 0.125, 16: 0.0625}
    assert r["explorer_cycle_error"] < 1e-5
    assert r["cpu_s"] < 150  # CPU seconds: the wall time depends on what else the machine runs


def check_02_equivariance_theorems(r):
    assert r["bounds_hold"] == 1 and r["max_error_bound_ratio"] <= 1.0
    for op in ("maxpool", "bilinear"):
        assert all(e <= b for e, b in zip(r[f"{op}_max_errors"], r[f"{op}_bounds"]))
        assert 0.8 <= r[f"{op}_slope"] <= 1.3
        assert len(r[f"{op}_max_errors"]) >= 6  # at least five octaves of δ
    assert 1.7 <= r["bilinear_smooth_slope"] <= 2.3
    # every bound the notebook draws lies on or above the points it is drawn over (envelopes, not fits)
    ratios = r["bound_ratios"]
    assert len(ratios) >= 12 and all(0 < v <= 1.0 for v in ratios.values()), ratios
    assert any(k.startswith("Thm 3.4") for k in ratios) and any(k.startswith("Cor 3.6 U-Net") for k in ratios)
    assert r["groupnorm_field_error"] <= 1e-6
    assert min(r["groupnorm_plain_affine_error"], r["groupnorm_plain_split_error"]) >= 1e-2
    ex = r["exercise_bias_offset"]
    assert abs(ex["predicted_relative"] - ex["measured_relative"]) <= 1e-4 * ex["measured_relative"]  # float32
    assert r["exercise_envelope"]["points_above_fit"] >= 1  # the log–log fit is no bound
    assert r["quarter_turn_rote_max_error"] <= 1e-5 and r["quarter_turn_pointwise_rote_max_error"] <= 1e-5
    assert r["quarter_turn_plain_min_error"] >= 1e-2
    assert r["unet_available"] and r["quarter_turn_unet_max_error"] <= 1e-5
    # the U-Net at any angle: exact at quarter turns, periodic in 90°, not exact in between
    for name, u in r["unet_any_angle"].items():
        # (largest pixel error over the output's range, float32, grids up to 451²: round-off, not 1e-7)
        assert u["quarter_turn_max_error"] <= 1e-4 and u["min_non_quarter_error"] >= 1e-3, (name, u)
        assert u["period_90_max_diff"] <= 1e-4 and u["floor_max"] <= 1e-2, (name, u)
        assert len(u["sweep_angles"]) >= 33 and min(u["sweep_angles"]) == 0 and max(u["sweep_angles"]) == 360
    m8 = r["unet_any_angle"]["U-Net m=8"]["max_errors"]
    assert m8[-1] < 0.1 * m8[0], m8  # the m = 8 U-Net's error falls with δ
    assert len(r["variants"]) == 8
    for v in r["variants"].values():
        assert v["mistake"] >= 1e-2 and v["fix"] <= 1e-5
    fin = {k: v[-1] for k, v in r["network_max_errors"].items()}
    assert fin["Rot-E m=16"] < fin["Rot-E m=4"] and fin["plain CNN"] > 5 * fin["Rot-E m=4"]
    for m in (4, 8, 16):
        assert 0.8 <= r["network_slopes"][f"Rot-E m={m}"] <= 1.5
    assert r["photo_max_error_90"]["Rot-E m=4"] <= 1e-5 and r["photo_max_error_90"]["plain CNN"] >= 1e-2
    assert r["cpu_s"] < 150  # CPU seconds: the wall time depends on what else the machine runs


def check_03_train_rediffuse(r):
    assert max(r["unet_c4_error"].values()) <= 1e-5, r["unet_c4_error"]
    paper = r["parameters"]["paper (base 64, ×[1,2,4,8])"]
    assert paper["rot_e"] == 8_496_353 and paper["plain"] == 33_738_113
    official = r["parameters"]["paper size, official layout"]
    assert official["plain"] == 26_910_785 and official["rot_e"] == 6_789_521
    assert r["train"]["loss_last10"] < 0.5 * r["train"]["loss_first10"], r["train"]
    for name, s in r["held_out"].items():
        assert 20 < s["psnr"] < 80 and 0.5 < s["ssim"] <= 1, (name, s)
    for p in r["parameters"].values():  # the ratio the summary prints is the one measured
        assert p["ratio"] == p["rot_e"] / p["plain"]
    assert 0.24 < paper["ratio"] < 0.26 and 0.3 < r["parameters"]["small (base 16, ×[1,2,4])"]["ratio"] < 0.4
    # the exercises' references reproduce the library on the shipped ε model
    assert r["exercise_x0_from_eps_max_diff"] < 1e-4 and r["exercise_posterior_max_diff"] < 1e-5
    traj = r["trajectory"]["ε (shipped), posterior mean (6)"]
    assert traj["clamped_fraction_first"] > 0.9 > traj["clamped_fraction_last"]  # ᾱ_{T−1} ≈ 6e-10: x̂0 explodes at first
    # equal budget: the weight map beats ε-prediction, both in this run's pair and in the shipped pair
    rows = {row["model"]: row for row in r["compare"]["rows"]}
    steps = r["compare"]["steps"]
    assert rows[f"weight map ({steps} steps)"]["PSNR"] > rows[f"ε ({steps} steps)"]["PSNR"], rows
    assert rows["weight map (shipped)"]["PSNR"] > rows["ε (shipped)"]["PSNR"] + 10, rows
    assert r["cpu_s"] < 150  # the small configuration's CPU time (wall time depends on what else the machine runs)


def check_04_evaluate_fusion(r):
    ours = r["ours"]
    for b in ("average", "focus-select", "gff"):
        assert 0.3 < ours[b]["QMI"] < 2 and 0.3 < ours[b]["QG"] < 0.98, (b, ours[b])
    assert ours["gff"]["QG"] > ours["average"]["QG"] + 0.05  # edges survive GFF, not averaging
    if "gff_vs_published" in r:  # same method, two implementations: close on every metric
        assert all(abs(v) < 0.01 for v in r["gff_vs_published"].values()), r["gff_vs_published"]
        assert len(r["leaderboard"]) >= 18 + 4
    for name, errs in r["equivariance_max_error"].items():
        if "Rot-E" in name:
            assert max(errs.values()) < 0.01, (name, errs)  # grey levels, float32
        else:
            assert max(errs.values()) > 0.1, (name, errs)
    mi, qg = r["exercise_mi"], r["exercise_qg"]  # the exercises (reference solutions) agree with the library
    assert abs(mi["toy_mi"] - mi["toy_h_f"]) < 1e-12  # F is a function of S: MI(S, F) = H(F)
    assert abs(mi["qmi_yours"] - mi["qmi_library"]) < 1e-9
    assert abs(qg["toy_yours"] - qg["toy_library"]) < 1e-6 and abs(qg["crop_yours"] - qg["crop_library"]) < 1e-6
    assert abs(qg["crop_qabf"] - qg["crop_library"]) < 0.005 and qg["crop_qg2003"] < qg["crop_library"]
    assert r["cpu_s"] < 150  # CPU seconds: the wall time depends on what else the machine runs


def check_05_fewstep_and_degradation(r):
    assert r["ddim_eta1_vs_posterior_max_diff"] < 1e-9  # generalised DDIM, η = 1, every step = DDPM posterior
    assert max(r["penrose_max_error"].values()) < 1e-9  # A A⁺ A = A (float64)
    for name, table in r["curve"]["tables"].items():
        assert table[0]["max_rel_dev"] == 0 and len(table) >= 4
        assert all(row["seconds"] > 0 for row in table)
    weights = r["curve"]["best"]["weight map (Rot-E)"]
    assert weights is not None and weights["steps"] <= 20, weights  # few steps reach 1 % of the reference
    assert r["exercise_sampler_max_diff"] < 1e-5  # the exercises' DDIM step and timesteps = the library's sampler
    assert r["steps_widget_static"]["max_diff_grey"]["weight map (Rot-E)"] <= 2
    clamp = {(row["model"], row["steps"], row["clip"]): row for row in r["clamp"]["rows"]}
    for (model, k, clip), row in clamp.items():
        if model == "weight map (Rot-E)":
            assert row["max_diff_grey"] == 0 and row["x0_out_of_range"] == 0, row  # a convex blend: nothing to clamp
        elif clip:  # the paper's ε model: without the clamp (Eq. 6 as printed) the sample leaves the image range
            off = clamp[model, k, False]
            assert -1 <= row["output_min"] and row["output_max"] <= 1 < max(-off["output_min"], off["output_max"])
            assert row["SSIM"] > off["SSIM"], (row, off)
    assert r["cpu_s"] < 150
    for label, table in r["degradation"]["tables"].items():
        noise = table["noise15"]
        assert noise["restore"]["PSNR"] > noise["plain"]["PSNR"] + 3, (label, noise)  # denoising matters
        for deg, per in table.items():
            assert set(per) == {"plain", "restore", "correct", "restore+gff"}
            assert all(10 < v["PSNR"] < 60 for v in per.values()), (label, deg, per)


def check_06_ablations(r):
    for size, rows in r["parameters"].items():
        counts = {row["conv"]: row["parameters"] for row in rows}
        assert counts["bconv"] == counts["fconv"] == counts["gconv"] < counts["plain"] / 2.5, (size, counts)
    assert len(r["table3"]) == 4 and len(r["table2"]) == 2
    assert r["gconv_equals_bconv"]  # the same network at m = 4 with 3x3 filters
    for table in (r["table3"], r["table2"], r["outputs_lytro"]):
        assert all(0.3 < v["QMI"] < 2 and 0.2 < v["QG"] < 0.98 for v in table.values()), table
    if "outputs_nyu" in r:
        assert all(v["PSNR"] > 25 for m, v in r["outputs_nyu"].items() if "weight map" in m), r["outputs_nyu"]
    assert r["exercise_conv_parameters"] == {"rote": 16 * 16 * 4 * 9 + 16, "plain": 64 * 64 * 9 + 64}
    why = r["why"]
    assert why["config"]["augment"] is False and len(why["sizes"]) >= 2
    for n, models in why["table"].items():  # angles 0, 90, 45: quarter turns exact for Rot-E only
        rote, plain = models["bconv"], models["plain"]
        assert rote["consistency"][1] < 1e-3 and plain["consistency"][1] > 1e-3, (n, models)
        assert abs(rote["psnr"][1] - rote["psnr"][0]) < 1e-3 and rote["parameters"] < plain["parameters"]
        assert all(15 < p < 80 for p in rote["psnr"] + plain["psnr"]), (n, models)
    for curve in why["curve"].values():
        assert curve["angles"][0] == 0 and curve["angles"][-1] == 360
    assert r["explorer_90deg"]["bconv"] < 1e-3 < r["explorer_90deg"]["plain"]
    assert r["cpu_s"] < 120  # the small configuration's CPU time (wall time depends on what else the machine runs)


CHECKS = {"01_bconv": check_01_bconv, "02_equivariance_theorems": check_02_equivariance_theorems,
          "03_train_rediffuse": check_03_train_rediffuse,
          "04_evaluate_fusion": check_04_evaluate_fusion,
          "05_fewstep_and_degradation": check_05_fewstep_and_degradation,
          "06_ablations": check_06_ablations}


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no NN_*.ipynb"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean(nb):
    cells = json.loads(nb.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), "strip outputs before committing"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell must be tagged 'parameters'"
    src = "".join(params[0]["source"])
    for name in ("SMOKE", "DEVICE", "RESULTS_PATH", "OUTPUT_DIR"):
        assert f"{name} =" in src, f"parameters cell lacks {name}"


@pytest.mark.slow
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(nb):
    results = run_notebook(nb, OUT, smoke=True, device="cpu")
    assert results, "empty results JSON"
    assert "runtime_s" in results
    for x in _numbers(results):
        assert math.isfinite(x), results
    check = CHECKS.get(nb.stem)
    if check is not None:
        check(results)
    assert (OUT / nb.name).exists() and not (nb.parent / f"{nb.stem}.results.json").exists()
