"""Small measurements the notebooks' checked claims rest on: how far turned filter taps land from the
grid, how much of an error map sits on fine detail, and what a sample-efficiency table says."""
import math

import numpy as np
import torch

from rediffuse import sample_efficiency as se
from rediffuse.bases import grid_offset
from rediffuse.theory import detail_contrast


def test_quarter_turns_keep_filter_taps_on_the_grid():
    for p in (3, 4, 5, 7):
        assert all(grid_offset(p, k * math.pi / 2) < 1e-9 for k in range(4))
    assert abs(grid_offset(5, math.pi / 4) - (2 - math.sqrt(2))) < 1e-9  # (2, 0) → (√2, √2), nearest (1, 1)
    assert grid_offset(4, math.pi / 4) > 0.1


def test_detail_contrast_finds_errors_on_edges():
    img = torch.zeros(1, 1, 32, 32)
    img[..., :, 16:] = 1.0  # one vertical edge
    err = np.full((32, 32), 0.01)
    err[:, 15:17] = 1.0  # the error sits on the edge
    assert detail_contrast(err, img) > 10
    flat = np.full((32, 32), 0.5)
    assert abs(detail_contrast(flat, img) - 1) < 1e-12
    err[0, 0] = np.nan  # pixels outside the measured disc are ignored
    assert detail_contrast(err, img) > 10


def test_study_summary_of_the_recorded_full_study():
    recorded = se.load_recorded_study()
    assert recorded["sizes"] == [8, 32, 90] and set(recorded["table"][8]) == {"bconv", "plain", "plain-b8"}
    s = se.study_summary(recorded["table"])
    assert abs(s["plain_lead"][8][0] - (50.03 - 44.40)) < 1e-9
    assert abs(s["turn90_loss"]["plain"][90] - (53.11 - 51.95)) < 1e-9
    assert abs(s["rote_minus_control"][90][1] - (44.45 - 41.84)) < 1e-9
    two = {n: {k: v for k, v in t.items() if k != "plain-b8"} for n, t in recorded["table"].items()}
    assert "rote_minus_control" not in se.study_summary(two)  # no control in the table: no control row
