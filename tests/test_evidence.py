"""Focus evidence and the fill of weak-evidence regions (rediffuse.evidence), the spurious gradient
fraction (rediffuse.metrics), and the canonical orientation that makes `fuse` exactly C4-equivariant."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from rediffuse.evidence import Evidence, WeakEvidenceFill, best_of_rest, focus_energy, sharpness
from rediffuse.metrics import evaluate, spurious_gradient_fraction
from rediffuse.orientation import canonical_turns, centroid_moment, turn


def _scene(h=96, w=128, seed=0):
    """A grey scene: texture on the left third, flat on the rest; source A sharp, B blurred there,
    and B 25 % brighter (an exposure difference)."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 120.0)
    img[:, : w // 3] += 60 * rng.standard_normal((h, w // 3))
    img = np.clip(img, 0, 255)
    a = img.copy()
    b = np.clip(ndimage.gaussian_filter(img, 4) * 1.25, 0, 255)
    return a.astype(np.uint8), b.astype(np.uint8)


def test_confidence_is_high_where_one_source_is_sharper_and_low_where_both_are_flat():
    a, b = _scene()
    ev = Evidence(*a.shape)
    ev.add(a.astype(np.float32))
    ev.add(b.astype(np.float32))
    c = ev.confidence()
    assert c.shape == a.shape  # small images keep their grid
    assert np.median(c[:, 5:25]) > 0.8, "texture sharp in A only: strong evidence"
    assert np.median(c[:, 70:]) < 0.2, "flat in both (25 % brighter in B): no evidence"


def test_focus_energy_does_not_take_a_brighter_frame_for_a_sharper_one():
    rng = np.random.default_rng(1)
    y = np.clip(100 + 20 * rng.standard_normal((64, 64)), 0, 255)
    e1, e2 = focus_energy(y), focus_energy(np.clip(1.3 * y, 0, 255))
    assert abs(float(np.median(e2 / e1)) - 1) < 0.1  # relative energy: gain cancels (up to the dark offset)


def test_fill_follows_the_confident_surroundings_and_keeps_confident_logits():
    h, w = 64, 96
    conf = np.zeros((h, w), np.float32)
    conf[:, :20] = 1.0  # evidence only on the left, where A is sharp (logit +4)
    logit = torch.zeros(1, 1, h, w)
    logit[..., :20] = 4.0
    noise = torch.from_numpy(np.random.default_rng(2).standard_normal((h, w)).astype(np.float32)) * 3
    logit[0, 0, :, 20:] = noise[:, 20:]  # the network wanders in the flat region
    out = WeakEvidenceFill(conf, (h, w))(logit)
    assert torch.equal(out[..., :20], logit[..., :20])
    flat = out[0, 0, :, 40:]
    assert float(flat.std()) < 0.1 * float(noise[:, 40:].std())  # no patches
    assert float(flat.min()) > 2.0  # the decision of the surroundings (A), not a coin toss


def test_fill_is_linear_and_commutes_with_quarter_turns():
    rng = np.random.default_rng(3)
    h, w = 40, 56
    conf = rng.uniform(0, 1, (h, w)).astype(np.float32)
    l1 = torch.from_numpy(rng.standard_normal((1, 1, h, w)).astype(np.float32))
    l2 = torch.from_numpy(rng.standard_normal((1, 1, h, w)).astype(np.float32))
    f = WeakEvidenceFill(conf, (h, w))
    assert torch.allclose(f(2 * l1 - l2), 2 * f(l1) - f(l2), atol=1e-4)  # one operator for every frame
    ft = WeakEvidenceFill(np.rot90(conf).copy(), (w, h))
    assert torch.allclose(ft(torch.rot90(l1, 1, (-2, -1))), torch.rot90(f(l1), 1, (-2, -1)), atol=1e-4)


def test_fill_on_a_reduced_grid_keeps_the_full_size():
    ev = Evidence(600, 1100, side=256)
    assert ev.size == (140, 256)
    rng = np.random.default_rng(4)
    for _ in range(2):
        ev.add(rng.uniform(0, 255, (600, 1100)).astype(np.float32))
    out = ev.fill()(torch.zeros(1, 1, 600, 1100))
    assert out.shape == (1, 1, 600, 1100) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="does not match"):
        ev.add(np.zeros((10, 10), np.float32))


def test_spurious_gradient_fraction_counts_edges_no_source_has():
    a = np.full((64, 64), 100, np.uint8)
    b = np.full((64, 64), 140, np.uint8)
    blotch = a.copy()
    blotch[20:40, 20:40] = 140  # a patch of the brighter source inside a flat region
    assert spurious_gradient_fraction([a, b], blotch) > 0.05
    assert spurious_gradient_fraction([a, b], ((a.astype(int) + b) // 2).astype(np.uint8)) == 0
    assert spurious_gradient_fraction([a, b], a) == 0
    edge = a.copy()
    edge[:, 32:] = 200  # an edge that a source has is no spurious edge
    assert spurious_gradient_fraction([edge, b], edge) == 0
    assert evaluate(a, b, blotch)["SGF"] == pytest.approx(100 * spurious_gradient_fraction([a, b], blotch))
    with pytest.raises(ValueError, match="two or more"):
        spurious_gradient_fraction([a], a)
    with pytest.raises(ValueError, match="one size"):
        spurious_gradient_fraction([a, b[:32]], a)


def test_canonical_orientation_is_shared_by_every_turn_and_order_of_a_stack():
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (31, 47, 3), dtype=np.uint8) for _ in range(3)]
    k0 = canonical_turns(frames)
    for j in range(4):
        turned = [turn(f, j) for f in frames]
        assert (canonical_turns(turned) + j) % 4 == k0  # the same canonical grid from every turn
        assert canonical_turns(turned[::-1]) == canonical_turns(turned)
    mx, my = centroid_moment(turn(sum(f.astype(np.int64) for f in frames), k0))
    assert mx > 0 and my >= 0
    assert canonical_turns([np.full((8, 8), 7, np.uint8)] * 2) == 0  # no centroid: as it lies
    assert centroid_moment(np.full((4, 6), 1000, np.uint16)) == (0, 0)


@pytest.fixture(scope="module")
def model():
    from rediffuse.fuse import FusionModel, checkpoint_available

    if not checkpoint_available("weights"):
        pytest.skip("the default model is not shipped")
    return FusionModel("weights")


def _pair(h=72, w=100, seed=6):
    """A colour pair: a textured left part sharp in A, a textured right part sharp in B, a flat band
    between them, B 20 % brighter."""
    rng = np.random.default_rng(seed)
    img = np.clip(128 + 50 * rng.standard_normal((h, w, 3)), 0, 255)
    img[:, 35:65] = (200, 190, 170)
    blur = ndimage.gaussian_filter(img, (3, 3, 0))
    a, b = img.copy(), blur.copy()
    a[:, 65:], b[:, 65:] = blur[:, 65:], img[:, 65:]
    return a.astype(np.uint8), np.clip(b * 1.2, 0, 255).astype(np.uint8)


def test_fuse_output_turns_exactly_with_its_inputs_and_ignores_their_order(model):
    from rediffuse.fuse import fuse

    a, b = _pair()
    ref = fuse([a, b], model, tile=64, overlap=16)  # tiles planned from one corner, noise drawn on the grid
    for k in (1, 2, 3):
        out = fuse([np.rot90(a, k).copy(), np.rot90(b, k).copy()], model, tile=64, overlap=16)
        assert np.array_equal(out, np.rot90(ref, k)), k
    frames = [a, b, np.clip(a * 0.9, 0, 255).astype(np.uint8)]
    s1 = fuse(frames, model)
    s2 = fuse(frames[::-1], model)
    assert np.array_equal(s1, s2)


# ----------------------------------------------------------------------------- the best of the rest


def _three_frames(h=64, w=96, seed=3):
    """[-1, 1] frames [1, H, W]: 0 sharp on the left half, 1 sharp on the right, 2 blurred everywhere."""
    rng = np.random.default_rng(seed)
    img = np.clip(128 + 50 * rng.standard_normal((h, w)), 0, 255)
    blur = ndimage.gaussian_filter(img, 3)
    left = np.broadcast_to(np.arange(w)[None, :] < w // 2, (h, w))
    frames = [np.where(left, img, blur), np.where(left, blur, img), blur]
    return [(f / 127.5 - 1).astype(np.float32)[None] for f in frames], left


def _best(frames):
    z = np.stack([sharpness(y) for y in frames])[:, None]
    w = np.exp(z - z.max(0))
    num, den, total = (w * np.stack(frames)).sum(0), w.sum(0), sum(frames)
    return [best_of_rest(num, den, w[i], frames[i], total, len(frames)) for i in range(len(frames))]


def test_best_of_rest_is_the_sharpest_other_frame_and_for_two_frames_the_other():
    frames, left = _three_frames()
    rest = _best(frames)
    inner = np.zeros_like(left)
    inner[8:-8, 8:40], inner[8:-8, 56:-8] = True, True  # away from the switch and the borders
    sharp = np.where(left, frames[0], frames[1])  # the sharpest frame other than frame 2, per pixel
    mean = (frames[0] + frames[1]) / 2
    err_best = np.abs(rest[2] - sharp)[0][inner].mean()
    err_mean = np.abs(mean - sharp)[0][inner].mean()
    assert err_best < 0.01 * err_mean, (err_best, err_mean)
    # frame 0's rest is frame 1 where frame 1 is sharp (right), not the blurred frame 2
    assert np.abs(rest[0] - frames[1])[0][inner & ~left].max() < 5e-3  # the plain mean's 1e-3 share
    # two frames: the rest of each is the other frame
    two = _best(frames[:2])
    assert np.abs(two[0] - frames[1]).max() < 1e-4 and np.abs(two[1] - frames[0]).max() < 1e-4
    # the other frames count through sums only: their order changes nothing
    again = _best([frames[2], frames[1], frames[0]])
    assert np.abs(again[0] - rest[2]).max() < 1e-6


def test_fuse_weighs_frames_against_the_best_of_the_rest_when_the_model_was_trained_so(tiny_checkpoint,
                                                                                        tmp_path):
    from rediffuse.fuse import FusionModel, fuse

    state = torch.load(tiny_checkpoint, weights_only=True)
    state["config"]["stack_reference"] = "best"
    torch.save(state, tmp_path / "best.pt")
    best, mean = FusionModel(tmp_path / "best.pt"), FusionModel(tiny_checkpoint)
    assert (best.stack_reference, mean.stack_reference) == ("best", "mean")
    frames = [((f[0] + 1) * 127.5).round().astype(np.uint8) for f in _three_frames()[0]]
    out = fuse(frames, best)
    assert np.array_equal(out, fuse(frames[::-1], best))  # still order-independent
    assert not np.array_equal(out, fuse(frames, mean))
    state["config"]["stack_reference"] = "median"
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="against 'median', unknown"):
        FusionModel(tmp_path / "bad.pt")
