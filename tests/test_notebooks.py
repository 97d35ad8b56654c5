"""Every tutorial notebook runs end to end (smoke configuration) and its numbers hold.

New notebooks (``notebooks/NN_name.ipynb``) are picked up automatically and get the generic checks;
``CHECKS`` adds notebook-specific assertions on the results JSON.
"""
import ast
import json
import math
import os
import re

import pytest

from rediffuse.paths import REPO_ROOT, dataset_dir, reference_dir
from rediffuse.tutorial import list_notebooks, run_notebook
from tests.conftest import numbers_in

OUT = REPO_ROOT / "outputs" / "test-notebooks"
NOTEBOOKS = list_notebooks()
CLAIMS_FILE = REPO_ROOT / "notebooks" / "CLAIMS.md"
_CLAIM_ROW = re.compile(r"^\| (\d\d) \| (\d+) \| (.+?) \| (.+?) \| (.*?) \|$")


def claims() -> list[dict]:
    """The rows of notebooks/CLAIMS.md: notebook prefix, cell, claim, results keys (dotted paths), and
    the data a claim needs (``""``, or names such as ``Lytro``, ``NYU-D-100``, ``reference``)."""
    rows = []
    for line in CLAIMS_FILE.read_text().splitlines():
        m = _CLAIM_ROW.match(line)
        if m:
            rows.append({"nb": m[1], "cell": int(m[2]), "claim": m[3], "keys": re.findall(r"`([^`]+)`", m[4]),
                         "needs": [n.strip() for n in m[5].split(",") if n.strip()]})
    return rows


def _data_found(name: str) -> bool:
    return reference_dir() is not None if name == "reference" else dataset_dir(name) is not None


class _Reads(dict):
    """A results dict that records the dotted path of every value a check reads."""

    def __init__(self, data: dict, path: str, log: set):
        super().__init__(data)
        self._path, self._log = path, log

    def _read(self, key, value):
        path = f"{self._path}.{key}" if self._path else str(key)
        self._log.add(path)
        return _Reads(value, path, self._log) if isinstance(value, dict) else value

    def __getitem__(self, key):
        return self._read(key, super().__getitem__(key))

    def get(self, key, default=None):
        return self._read(key, super().__getitem__(key)) if key in self else default

    def items(self):
        return [(k, self._read(k, v)) for k, v in super().items()]

    def values(self):
        return [self._read(k, v) for k, v in super().items()]


def _lookup(results: dict, key: str):
    value = results
    for part in key.split("."):
        value = value[part]
    return value


_numbers = numbers_in


def check_01_bconv(r):
    # [4], [6], [9]: the primer's checks: C4's action on an image and the regular representation, read off
    # rotate_image / rotate_fields; a lifting layer equivariant and its pooled fields invariant, to round-off
    p = r["primer"]
    assert p["four_turns_identity"] and p["composition_holds"] and p["matrix_order_four"], p
    assert p["regular_is_cyclic_permutation"] and p["regular_homomorphism"] and p["c8_quarter_turn_shifts_two"], p
    assert p["lift_equivariance_gap"] < 1e-12 and p["pooled_invariance_gap"] < 1e-12, p
    assert p["lift_relative_error"] < 1e-13 and p["lift_no_cycle_gap"] > 0.1, p
    # [18]: quarter turns permute the filter taps; 45° (m = 8) samples between them
    assert r["grid_offset_px"]["4"] < 1e-9 < 0.1 < r["grid_offset_px"]["8"], r["grid_offset_px"]
    # [28]: quarter turns exact at every size and basis: float32 round-off ~1e-7, float64 ~1e-16
    for key, err in r["c4_error"].items():
        assert err <= (1e-6 if key.endswith("float32") else 1e-14), (key, err)
    assert r["plain_cnn_error_90"] > 0.05
    # [30]-[31], [39]: m = 8 at 45° is not exact, small, falls with every refinement, at least as fast as δ
    for basis in ("bconv", "fconv"):
        errs = r["m8_45deg"][basis]
        assert all(a > b for a, b in zip(errs, errs[1:])) and 1e-4 < min(errs) and max(errs) < 0.05, errs
    assert r["m8_45deg"]["loglog_slope_bconv"] >= 1.0, r["m8_45deg"]
    assert {int(m): v for m, v in r["param_ratio"].items()} == {4: 0.25, 8: 0.125, 16: 0.0625}  # [32] exactly 1/m
    assert r["explorer_cycle_error"] < 1e-5  # [35] the bottom row is the field cycled, to round-off
    # [37]-[38]: round-off at multiples of 90° only; in between the error grows with the distance to the nearest
    by_distance = {}
    for angle, err in r["angle_errors"].items():
        by_distance.setdefault(min(int(angle) % 90, 90 - int(angle) % 90), []).append(err)
    assert max(by_distance[0]) < 1e-5, by_distance
    dists = sorted(by_distance)
    assert all(max(by_distance[a]) < min(by_distance[b]) for a, b in zip(dists, dists[1:])), by_distance
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
    # [7]: the max-pooling error stays between a third and a half of the bound at every δ
    ratios = [e / b for e, b in zip(r["maxpool_max_errors"], r["maxpool_bounds"])]
    assert all(0.3 <= v <= 0.5 for v in ratios), ratios
    # [9]: with kinks far below the bound (under a tenth); the rectified field's mean error falls like δ²
    assert r["bilinear_max_ratio"] < 0.1 and 1.7 <= r["bilinear_mean_slope"] <= 2.3, r["bilinear_mean_slope"]
    assert r["exercise_bias_offset"]["per_field_max"] == 0  # [13] one bias per field: nothing left to cycle
    # [18]: every curve falls; each envelope touches its highest point; the U-Net needs >10× the stack's C₁;
    # its error at 45° is not small at the coarsest mesh
    stack = {m: r["thm34_stack_max_errors"][m] for m in ("8", "16")}
    u8 = r["unet_any_angle"]["U-Net m=8"]
    for errs in [*stack.values(), u8["group_max_errors"]]:
        assert all(a > b for a, b in zip(errs, errs[1:])), errs
    touching = {k: v for k, v in r["bound_ratios"].items() if k.startswith("Thm 3.4")}
    assert len(touching) == 3 and all(abs(v - 1) < 1e-9 for v in touching.values()), touching
    assert u8["C1"] > 10 * max(r["thm34_stack_C1"].values()) and u8["group_max_errors"][0] > 0.1, u8
    # [20]: Rot-E ordered by m at every δ; the plain CNN improves more slowly (slope ≈ 0.6) and is several times
    # the m = 4 stack's error at every δ: about 5× at the coarsest mesh, more at the finer ones
    net = r["network_max_errors"]
    for i in range(len(r["network_deltas"])):
        assert net["Rot-E m=4"][i] > net["Rot-E m=8"][i] > net["Rot-E m=16"][i], (i, net)
    assert all(a > b for a, b in zip(net["plain CNN"], net["plain CNN"][1:])), net["plain CNN"]
    assert 0.4 <= r["network_slopes"]["plain CNN"] <= 0.8, r["network_slopes"]
    gap = r["plain_over_rote4"]
    assert all(v > 3 for v in gap) and 4 <= gap[0] <= 6 and gap[-1] > gap[0], gap
    # [24]: between quarter turns the U-Nets' error is a sizeable fraction of the range; for m = 8 the angles
    # of C₈ are not special (no dip: at least 0.8 of their neighbours' mean)
    for name, u in r["unet_any_angle"].items():
        sweep = dict(zip(u["sweep_angles"], u["sweep_errors"]))
        assert min(e for a, e in sweep.items() if a % 90) >= 0.05, (name, sweep)
    sweep = dict(zip(u8["sweep_angles"], u8["sweep_errors"]))
    angles = sorted(sweep)
    for i, a in enumerate(angles[1:-1], start=1):
        if a % 90 and a % 45 == 0:
            assert sweep[a] >= 0.8 * (sweep[angles[i - 1]] + sweep[angles[i + 1]]) / 2, (a, sweep)
    # [27]: m = 8 falls by less than half between the two coarsest meshes, then faster than first order;
    # for m = 4 the needed constant grows over the whole range (the envelope is set by the finest mesh)
    e8 = u8["max_errors"]
    assert e8[1] > 0.5 * e8[0] and all(b < 0.5 * a for a, b in zip(e8[1:], e8[2:])), e8
    need4 = r["unet_any_angle"]["U-Net m=4"]["needed_constants"]
    assert all(a < b for a, b in zip(need4, need4[1:])) and need4[-1] > 3 * need4[0], need4
    assert min(r["network_smooth_slopes"].values()) > 1.5, r["network_smooth_slopes"]  # smooth input: beyond first order
    # [31]-[33] (Figure 8): quarter turns exact for Rot-E and the U-Net, not the plain CNN; at 45° every map has
    # error, more on fine detail; Rot-E m = 4 (45° not in C₄) has a larger worst pixel than the plain CNN and a
    # somewhat smaller mean; m = 8, 16 (45° in the group) a fraction of both
    p90, p45, mean45 = r["photo_max_error_90"], r["photo_max_error_45"], r["photo_mean_error_45"]
    assert p90["Rot-E m=4"] <= 1e-5 and p90["U-Net (input Y ×3)"] <= 1e-5 and p90["plain CNN"] >= 1e-2, p90
    assert min(p45.values()) > 1e-3 and min(r["photo_detail_contrast_45"].values()) > 1.5, r["photo_detail_contrast_45"]
    assert p45["Rot-E m=4"] > p45["plain CNN"] and 0.5 * mean45["plain CNN"] < mean45["Rot-E m=4"] < mean45["plain CNN"]
    for m in ("Rot-E m=8", "Rot-E m=16"):
        assert p45[m] < 0.35 * p45["plain CNN"] and mean45[m] < 0.3 * mean45["Rot-E m=4"], (m, p45, mean45)
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
    if r["smoke"]:  # [30]: the small run already beats averaging the sources on the held-back pair
        assert r["held_out"]["this run"]["psnr"] > r["held_out"]["average"]["psnr"] + 1, r["held_out"]
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
    # [5]: at t = T−1 both weights of (6) are small (x̂0 7.8e-4, x_t about 0.032) but the x̂0 weight is 0.999 of
    # the signal level √ᾱ_{T−2}; the middle rows keep 99.6–99.8 % of x_t and add a few thousandths of x̂0;
    # t = 0 returns x̂0
    w = r["posterior_weights"]
    assert 7.5e-4 < w["1999"]["x0"] < 8.0e-4 and 0.031 < w["1999"]["x_t"] < 0.033, w["1999"]
    assert 0.998 < w["1999"]["x0_of_signal"] <= 1.0, w["1999"]
    for t in ("500", "1000", "1500"):
        assert 0.996 <= w[t]["x_t"] <= 0.998 and 0.001 < w[t]["x0"] < 0.005, (t, w[t])
    assert w["0"]["x0"] == 1 and w["0"]["x_t"] == 0, w["0"]
    assert 5.5e-10 < r["schedule_alpha_bar_last"] < 6.5e-10  # [5], [20]: ᾱ_{T−1} ≈ 6e-10, √ ≈ 2.5e-5
    # [13]: the ratio a little above 1/4 at the paper's size, further above it in the small network
    assert 0.25 < official["ratio"] and 0.25 < paper["ratio"] < r["parameters"]["small (base 16, ×[1,2,4])"]["ratio"]
    # [20]: the ε trajectory's clamp acts on fewer and fewer values; the weight map's first x̂0 is already a
    # fused image, within 3 dB of the result
    if "trajectory" in r and "ε (shipped), posterior mean (6)" in r["trajectory"]:
        frac = r["trajectory"]["ε (shipped), posterior mean (6)"]["clamped_fractions"]
        assert all(b <= a + 0.02 for a, b in zip(frac, frac[1:])) and frac[-1] < 0.5 * frac[0], frac
    if "weight map (shipped), DDIM" in r.get("trajectory", {}):
        wt = r["trajectory"]["weight map (shipped), DDIM"]
        assert 40 < wt["first_x0_psnr"] and abs(wt["psnr"] - wt["first_x0_psnr"]) < 3, wt
    # [26]: the shipped weight map's x̂0 within 2 dB over every t; the ε curves fall to the right from a high
    # start; the shipped ε model's brightness offset many times the weight map's
    curves = r["compare"]["x0_curve_psnr"]
    if "weight map (shipped)" in curves:
        assert max(curves["weight map (shipped)"]) - min(curves["weight map (shipped)"]) < 2, curves
    if "weight map (shipped)" in curves:  # "this notebook's short run stays below it all the way"
        assert max(curves[f"weight map ({steps} steps)"]) < min(curves["weight map (shipped)"]), curves
    for name, c in curves.items():
        if name.startswith("ε"):
            assert all(a > b for a, b in zip(c, c[1:])) and c[0] > 45, (name, c)
    if {"ε (shipped)", "weight map (shipped)"} <= set(rows):
        assert abs(rows["ε (shipped)"]["mean_offset_grey"]) > 5 * abs(rows["weight map (shipped)"]["mean_offset_grey"]), rows
    assert r["cpu_s"] < 150  # the small configuration's CPU time (wall time depends on what else the machine runs)


def check_04_evaluate_fusion(r):
    ours = r["ours"]
    for b in ("average", "focus-select", "gff"):
        assert 0.3 < ours[b]["QMI"] < 2 and 0.3 < ours[b]["QG"] < 0.98, (b, ours[b])
    assert ours["gff"]["QG"] > ours["average"]["QG"] + 0.05  # edges survive GFF, not averaging
    # [12]: focus selection (copies pixels) far ahead of the Laplacian pyramid and averaging (blends) on QMI
    assert ours["focus-select"]["QMI"] > max(ours["laplacian"]["QMI"], ours["average"]["QMI"]) + 0.1, ours
    if "gff_vs_published" in r:  # [13], [22]: same method, two implementations: within 0.001 on every metric
        assert all(abs(v) < 0.001 for v in r["gff_vs_published"].values()), r["gff_vs_published"]
        published = [row for row in r["leaderboard"] if row["source"] == "published"]
        assert len(published) == 18, published  # [0] the published leaderboard of 18 methods
        by_qmi = sorted(published, key=lambda row: row["QMI"])  # [12] the transform-domain methods are last
        assert {row["method"] for row in by_qmi[:4]} == {"DWT", "DTCWT", "NSCT", "ICA"}, by_qmi[:4]
    # [6]: QG's ceiling 0.97479, every QG below it; on real pairs Qabf within about 0.0015 of QG
    assert abs(r["qg_ceiling"] - 0.97479) < 5e-6 and max(v["QG"] for v in ours.values()) < r["qg_ceiling"]
    if r["lytro_found"]:
        assert r["qabf_minus_qg_max"] <= 0.002, r["qabf_minus_qg_max"]
        assert abs(r["exercise_qg"]["crop_qabf"] - r["exercise_qg"]["crop_library"]) <= 0.002, r["exercise_qg"]
    # [9]: each source's Q high where F took that source, low where it took the other; there the taken
    # source's edges are the stronger
    q = r["qg_maps_crop"]
    assert q["Q_A_from_A"] > 0.8 > 0.3 > q["Q_A_from_B"] and q["Q_B_from_B"] > 0.8 > 0.3 > q["Q_B_from_A"], q
    assert q["g_A_from_A"] > q["g_B_from_A"] and q["g_B_from_B"] > q["g_A_from_B"], q
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
    assert weights is not None and weights["steps"] <= 20, weights  # [11] few steps reach 1 % of the reference
    # [13]: the weight map within 0.1 % of the reference at every k; the ε model further from it at every step down
    assert all(row["max_rel_dev"] <= 1e-3 for row in r["curve"]["tables"]["weight map (Rot-E)"])
    if "paper ε (Rot-E)" in r["curve"]["tables"]:
        devs = [row["max_rel_dev"] for row in r["curve"]["tables"]["paper ε (Rot-E)"]]  # reference, then k falling
        assert all(a < b for a, b in zip(devs, devs[1:])), devs
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
    # [17]: the clamp acts on nearly every x̂0 value at the first step, and on fewer and fewer after
    for run, frac in r["clamp"]["out_of_range_steps"].items():
        assert frac[0] > 0.9 and frac[-1] < 0.5 * frac[0], (run, frac)
    assert r["cpu_s"] < 150
    # [22]: λ = 1 at every step without noise, 0 at the last step with it
    for name, lams in r["ddnm_lambda"].items():
        if name in ("avgpool2", "bicubic4"):
            assert all(v == 1 for v in lams), (name, lams)
        if name == "noise15":
            assert lams[-1] == 0, lams
    for label, table in r["degradation"]["tables"].items():
        noise = table["noise15"]
        assert noise["restore"]["PSNR"] > noise["plain"]["PSNR"] + 3, (label, noise)  # [22] denoising matters
        blur = table["blur2"]
        assert blur["restore"]["PSNR"] > blur["plain"]["PSNR"] + 2, (label, blur)  # [22] and deblurring
        for deg, per in table.items():  # [22] correct within half a dB of restore in every row
            assert abs(per["correct"]["PSNR"] - per["restore"]["PSNR"]) < 0.5, (label, deg, per)
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
    # [3]: official layout: the plain twin has the paper's 26.91M, Rot-E 6.79M, 7.55M with a time bias per channel
    official = {row["conv"]: row["parameters"] for row in r["parameters"]["paper size, official FusionDiff layout"]}
    assert official["plain"] == 26_910_785 and official["bconv"] == 6_789_521, official
    assert round(r["paper_channel_bias_parameters"] / 1e6, 2) == 7.55, r["paper_channel_bias_parameters"]
    # [8], [23]: the whole U-Net's ratio, 0.252 at the paper's size and 0.335 small
    ratio = {size: {row["conv"]: row["ratio_to_plain"] for row in rows}["bconv"] for size, rows in r["parameters"].items()}
    assert round(ratio["paper size, default layout"], 3) == 0.252 and round(ratio["small (base 16, mults 1 2 4)"], 3) == 0.335
    # [14], [23]: the weight map ahead of ε on every metric of the tables (central crops here; the spurious-
    # gradient share SGF is not among them, and on synthetic pairs it favours ε); Table 3's rows differ by less
    # than a third of that on QMI and QG
    for table in [r["outputs_lytro"]] + ([r["outputs_nyu"]] if "outputs_nyu" in r else []):
        w = next(v for k, v in table.items() if k.startswith("weight map"))
        eps = [v for k, v in table.items() if k.startswith("paper ε")]
        for e in eps:
            assert all(w[k] > e[k] for k in ("QMI", "QG", "Qabf", "QP", "QE", "MS-SSIM", "PSNR", "SSIM") if k in w), table
    lytro = r["outputs_lytro"]
    if len(lytro) == 2:
        w, e = (next(v for k, v in lytro.items() if k.startswith(p)) for p in ("weight map", "paper ε"))
        for k in ("QMI", "QG"):
            spread = max(v[k] for v in r["table3"].values()) - min(v[k] for v in r["table3"].values())
            assert spread < abs(w[k] - e[k]) / 3, (k, spread, w[k], e[k])
    # [19]: at 45° neither network is exact
    for n, models in why["table"].items():
        assert models["bconv"]["consistency"][2] > 1e-3 and models["plain"]["consistency"][2] > 1e-3, (n, models)
    # [0], [14], [19], [23]: the full study as recorded (benchmarks/results/why_equivariance_full.json)
    full = r["why_full_summary"]
    leads = [v[0] for v in full["plain_lead"].values()]
    assert round(min(leads), 1) == 5.6 and round(max(leads), 1) == 10.6, full["plain_lead"]
    assert round(max(full["turn90_loss"]["plain"].values()), 1) <= 1.2 < min(leads), full["turn90_loss"]
    assert all(abs(v) < 1e-9 for v in full["turn90_loss"]["bconv"].values())
    ctrl = full["rote_minus_control"]
    assert round(min(ctrl["90"]), 1) == 1.8 and round(max(ctrl["90"]), 1) == 2.6, ctrl
    for n in ("8", "32"):
        assert abs(ctrl[n][0]) <= 0.9 + 1e-9 and max(ctrl[n][:2]) < 1 and ctrl[n][2] < 0, (n, ctrl)
    assert r["cpu_s"] < 120  # the small configuration's CPU time (wall time depends on what else the machine runs)


CHECKS = {"01_bconv": check_01_bconv, "02_equivariance_theorems": check_02_equivariance_theorems,
          "03_train_rediffuse": check_03_train_rediffuse,
          "04_evaluate_fusion": check_04_evaluate_fusion,
          "05_fewstep_and_degradation": check_05_fewstep_and_degradation,
          "06_ablations": check_06_ablations}


def _strings_in(cells: list[dict]) -> tuple[set[str], list[str]]:
    """The string constants of a notebook's code cells, and its f-strings as regular expressions (each
    replacement field a wildcard): the names its results can have."""
    literals, patterns = set(), []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse("".join(cell["source"]))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.add(node.value)
            elif isinstance(node, ast.JoinedStr):
                patterns.append("".join(re.escape(v.value) if isinstance(v, ast.Constant) else ".+" for v in node.values))
    return literals, patterns


def test_claims_list_names_real_notebooks_cells_and_keys():
    """notebooks/CLAIMS.md parses, and every row points at a cell that exists and at keys the notebook
    writes; that every key is in the results and read by the check is tested where the notebook runs."""
    rows = claims()
    assert len(rows) >= 40, "notebooks/CLAIMS.md lists fewer claims than the notebooks assert"
    assert f"{len(rows)} claims" in CLAIMS_FILE.read_text()  # the count it states is the count it has
    by_prefix = {p.stem[:2]: p for p in NOTEBOOKS}
    for row in rows:
        nb = by_prefix[row["nb"]]
        cells = json.loads(nb.read_text())["cells"]
        assert row["cell"] < len(cells), row
        literals, patterns = _strings_in(cells)
        for key in row["keys"]:
            top = key.split(".")[0]
            assert top in literals or any(re.fullmatch(pat, top) for pat in patterns), f"{nb.name} never writes {top!r}"
        assert all(n in ("Lytro", "NYU-D-100", "reference") for n in row["needs"]), row
    assert {row["nb"] for row in rows} == set(by_prefix), "every notebook has checked claims"


@pytest.mark.slow
def test_01_runs_without_ipywidgets_when_show_widgets_is_false(tmp_path, monkeypatch):
    """SHOW_WIDGETS = False: notebook 01 runs in a kernel where ipywidgets cannot be imported, and shows
    each explorer once, as a static figure."""
    blocker = tmp_path / "no-ipywidgets" / "ipywidgets"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('ipywidgets is not installed (hidden by the test)')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(blocker.parent), os.environ.get("PYTHONPATH")])))
    nb = next(p for p in NOTEBOOKS if p.stem.startswith("01"))
    results = run_notebook(nb, tmp_path / "out", smoke=True, device="cpu", parameters={"SHOW_WIDGETS": False})
    check_01_bconv(results)
    executed = json.loads((tmp_path / "out" / nb.name).read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    assert not any(o["output_type"] == "error" for o in outputs)
    assert not any(WIDGET_VIEW in o.get("data", {}) for o in outputs)
    _each_explorer_shown_once(tmp_path / "out" / nb.name, live=False)


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
        reads: set[str] = set()
        check(_Reads(results, "", reads))
        # every key notebooks/CLAIMS.md lists for this notebook is in its results and read by its check
        for row in claims():
            if row["nb"] != nb.stem[:2] or not all(_data_found(n) for n in row["needs"]):
                continue
            for key in row["keys"]:
                _lookup(results, key)  # KeyError: the list names a key the notebook no longer writes
                assert key in reads, f"CLAIMS.md: {key} ({row['claim']}) is not read by {check.__name__}"
    assert (OUT / nb.name).exists() and not (nb.parent / f"{nb.stem}.results.json").exists()
    if nb.stem[:2] in ONE_OUTPUT_EXPLORERS:
        _each_explorer_shown_once(OUT / nb.name, live=True)


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
ONE_OUTPUT_EXPLORERS = {"01": 2, "02": 2}  # notebooks whose explorers are one output each, and how many


def _each_explorer_shown_once(executed_path, live: bool):
    """Every explorer of the executed notebook is one output: the widget with its first drawing as the
    PNG beside it (``live``), or that PNG alone; no other output of its cell is a widget or a copy."""
    cells = json.loads(executed_path.read_text())["cells"]
    shown = [c for c in cells if c["cell_type"] == "code" and re.search(r"display\((\w+_output\(|vt\.explorer\(|theorem_explorer\))",
                                                                         "".join(c["source"]))]
    assert len(shown) == ONE_OUTPUT_EXPLORERS[executed_path.stem[:2]], [c["source"][:2] for c in shown]
    for cell in shown:
        text = lambda o: "".join(o.get("data", {}).get("text/plain", ""))  # noqa: E731
        mine = [o for o in cell["outputs"] if text(o).endswith("explorer>")]
        assert len(mine) == 1 and "image/png" in mine[0]["data"], "".join(cell["source"])[:200]
        assert (WIDGET_VIEW in mine[0]["data"]) is live, "".join(cell["source"])[:200]
        others = [o for o in cell["outputs"] if o is not mine[0]]
        assert not any(WIDGET_VIEW in o.get("data", {}) for o in others), "".join(cell["source"])[:200]
        explorer_png = mine[0]["data"]["image/png"]
        assert not any(o.get("data", {}).get("image/png") == explorer_png for o in others)
