"""Exact equivariance is claimed with TF32 off: fusion, evaluation and every equivariance check switch it
off while they run (and restore the caller's flags). CPUs ignore the flags, so the test records what the
network's forward saw instead of measuring an error."""
import numpy as np
import pytest
import torch

from rediffuse.equivariance import equivariance_error
from rediffuse.evaluate import fusion_equivariance_maps
from rediffuse.fuse import FusionModel, fuse
from rediffuse.runtime import exact_precision, tf32_precision
from rediffuse.theory.error_maps import error_map
from rediffuse.unet import ReDiffuseUNet


def _flags():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _record(net):
    """Patch ``net.forward`` to note the TF32 flags at every call; returns the list of notes."""
    seen, forward = [], net.forward

    def recording(*a, **k):
        seen.append(_flags())
        return forward(*a, **k)

    net.forward = recording
    return seen


@pytest.fixture
def tf32_on():
    """TF32 allowed, as PyTorch's defaults (and many training scripts) leave cuDNN."""
    with tf32_precision(True):
        yield


def _check(seen):
    assert seen, "the network was never called"
    assert all(s == (False, False) for s in seen), seen
    assert _flags() == (True, True), "the caller's flags were not restored"


def test_fusion_runs_with_tf32_off(tiny_checkpoint, tf32_on):
    fm = FusionModel(tiny_checkpoint)
    seen = _record(fm.model)
    y = torch.rand(1, 1, 24, 24) * 2 - 1
    fm.fuse_y(y, y.flip(-1))
    _check(seen)
    seen.clear()
    rng = np.random.default_rng(0)
    fuse([rng.integers(0, 256, (20, 20), dtype=np.uint8) for _ in range(2)], fm)  # also pads to min size
    _check(seen)
    seen.clear()
    fusion_equivariance_maps(fm, y, y.flip(-1), ks=(1,))  # notebook 04's check of a trained model
    _check(seen)


def test_equivariance_checks_run_with_tf32_off(tf32_on):
    net = ReDiffuseUNet(base=8, mults=(1, 2), groups=2, emb_dim=16).eval()
    seen = _record(net)
    x, t = torch.randn(1, 3, 24, 24), torch.tensor([5])
    equivariance_error(net, x, 1, forward_kwargs={"t": t})
    _check(seen)
    seen.clear()
    error_map(lambda im: net(im, t), x, 1, in_type=net.in_type, out_type=net.out_type)
    _check(seen)


def test_exact_precision_restores_flags():
    with tf32_precision(True):
        with exact_precision():
            assert _flags() == (False, False)
        assert _flags() == (True, True)
