"""The fusion pipeline on a tiny trained checkpoint: grey, colour, stacks, errors."""
import numpy as np
import pytest
import torch

from rediffuse.diffusion import predict_x0_eps, get_schedule
from rediffuse.fuse import FusionModel, fuse
from rediffuse.train import TrainConfig, train


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    cfg = TrainConfig(synthetic=4, crop=24, batch=2, steps=2, prediction="weights", T=50,
                      model=dict(base=8, mults=(1, 2), conv="bconv", groups=2, emb_dim=16))
    train(cfg, out, progress=False)
    return FusionModel(out / "last.pt")


def test_weight_prediction_is_a_convex_combination_of_the_sources():
    sched = get_schedule("cosine", 50)
    a, b = torch.rand(1, 1, 8, 8) * 2 - 1, torch.rand(1, 1, 8, 8) * 2 - 1
    out = torch.randn(1, 1, 8, 8) * 3
    x0, _ = predict_x0_eps(out, torch.randn(1, 1, 8, 8), 10, sched, "weights", cond=torch.cat([a, b], 1))
    w = torch.sigmoid(out)
    assert torch.allclose(x0, w * a + (1 - w) * b, atol=1e-6)
    assert (x0 <= torch.maximum(a, b) + 1e-6).all() and (x0 >= torch.minimum(a, b) - 1e-6).all()


def test_fuse_grey_colour_and_stacks(tiny_model):
    rng = np.random.default_rng(0)
    grey = [rng.integers(0, 256, (21, 30), dtype=np.uint8) for _ in range(3)]
    out = fuse(grey[:2], tiny_model, steps=2)
    assert out.shape == (21, 30) and out.dtype == np.uint8
    lo, hi = np.minimum(grey[0], grey[1]).astype(int), np.maximum(grey[0], grey[1]).astype(int)
    assert ((out >= lo - 1) & (out <= hi + 1)).all()  # weight maps never leave the sources' range
    assert fuse(grey, tiny_model, steps=2).shape == (21, 30)
    colour = [rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for _ in range(2)]
    assert fuse(colour, tiny_model, steps=1).shape == (20, 20, 3)
    again = fuse(grey[:2], tiny_model, steps=2)
    assert np.array_equal(out, again)  # deterministic


def test_fuse_errors(tiny_model):
    img = np.zeros((20, 20), np.uint8)
    with pytest.raises(ValueError, match="at least two"):
        fuse([img], tiny_model)
    with pytest.raises(ValueError, match="differ in size"):
        fuse([img, np.zeros((20, 21), np.uint8)], tiny_model)
