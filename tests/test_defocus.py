"""The layered defocus model and the training pairs made from photos with it."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from rediffuse.defocus import boundary_band, composite_ground_truth, psf_bank, render_stack, soft_layers
from rediffuse.equivariance import equivariance_error
from rediffuse.layers import FieldAttention, RotE
from rediffuse.synthesis import LayeredPairs, LayeredStackItems, PhotoLibrary, scene_labels
from rediffuse.unet import ReDiffuseUNet


def _circular_blur(x, r, kind="disk"):
    k = psf_bank(torch.tensor([float(r)]), x.shape[-2:], kind)[0]
    return torch.fft.irfft2(torch.fft.rfft2(x) * torch.fft.rfft2(torch.fft.ifftshift(k)), s=x.shape[-2:])


@pytest.mark.parametrize("kind", ["disk", "gaussian"])
def test_psf_is_normalised_and_zero_radius_is_a_delta(kind):
    k = psf_bank(torch.tensor([0.0, 1.0, 7.5]), (33, 33), kind)
    assert torch.allclose(k.sum((-2, -1)), torch.ones(3))
    assert k[0, 16, 16] == 1.0 and k[0].sum() == 1.0
    assert (k[2] > 0).sum() > (k[1] > 0).sum()


def test_two_layers_match_the_alpha_matte_formulas():
    """Foreground matte α: near-focused = α·I + (1−α)·B̃ with B̃ the normalised background blur;
    far-focused = h*(α·I) + (1 − h*α)·I: the blurred foreground spreads over the sharp background."""
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 1, 48, 48, generator=g)
    alpha = torch.zeros(48, 48)
    alpha[12:36, 10:30] = 1.0
    mattes = torch.stack([alpha, 1 - alpha])[None]
    r = 4.0
    radii = torch.tensor([[[0.0, r], [r, 0.0]]])  # frame 0 near-focused, frame 1 far-focused
    out = render_stack(img, mattes, radii, disk=True, linear_light=False)[0, :, 0]
    I, a = img[0, 0], alpha
    hb_num, hb_den = _circular_blur((1 - a) * I, r), _circular_blur(1 - a, r)
    b_tilde = hb_num / hb_den.clamp_min(1e-4)
    near = a * I + (1 - a) * b_tilde
    far = _circular_blur(a * I, r) + (1 - _circular_blur(a, r)) * I
    inside = hb_den > 0.05  # where the normalised convolution has support (elsewhere α = 1 anyway)
    assert torch.allclose(out[0][inside], near[inside].clamp(0, 1), atol=1e-5)
    assert torch.allclose(out[1], far.clamp(0, 1), atol=1e-5)
    # the spread effect: just outside the foreground the far-focused frame is not the background
    ring = (_circular_blur(a, r) > 0.2) & (a == 0)
    assert (out[1][ring] - I[ring]).abs().mean() > 0.02


def test_in_focus_layers_are_copied_and_blur_is_applied_elsewhere():
    img = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(1, 40, 40, dtype=torch.long)
    labels[:, :, 20:] = 1
    mattes = soft_layers(labels, 2, torch.tensor([0.0]))
    out = render_stack(img, mattes, torch.tensor([[[0.0, 6.0], [6.0, 0.0]]]))[0, :, 0]
    # FFT round-off in linear light grows by the 1/2.2 power near black: within half a grey level
    assert torch.allclose(out[0][:, 7:13], img[0, 0][:, 7:13], atol=2e-3)  # in focus, away from both edges
    assert torch.allclose(out[1][:, 27:33], img[0, 0][:, 27:33], atol=2e-3)
    assert (out[0][:, 30:] - img[0, 0][:, 30:]).abs().mean() > 0.05


def test_ground_truth_takes_the_gain_of_the_sharpest_frame():
    img = torch.full((1, 1, 8, 8), 0.5)
    mattes = torch.zeros(1, 2, 8, 8)
    mattes[:, 0, :, :4] = 1
    mattes[:, 1, :, 4:] = 1
    gt = composite_ground_truth(img, mattes, torch.tensor([[[0.0, 5.0], [5.0, 0.0]]]), torch.tensor([[1.0, 1.2]]))
    assert torch.allclose(gt[0, 0, :, :4], torch.tensor(0.5)) and torch.allclose(gt[0, 0, :, 4:], torch.tensor(0.6))


def test_boundary_band_width():
    mattes = torch.zeros(1, 2, 64, 64)
    mattes[:, 0, :, :32] = 1
    mattes[:, 1, :, 32:] = 1
    band = boundary_band(mattes, width=15)[0]
    assert band[:, 17:47].all() and not band[:, :16].any() and not band[:, 48:].any()


def test_soft_layers_partition_unity():
    labels = torch.randint(0, 3, (2, 20, 20))
    m = soft_layers(labels, 3, torch.tensor([0.5, 1.0]))
    assert torch.allclose(m.sum(1), torch.ones(2, 20, 20), atol=1e-5)


def test_scene_labels_have_at_least_two_layers():
    rng = np.random.default_rng(0)
    patch = (np.random.default_rng(1).random((64, 64)) * 255).astype(np.uint8)
    for _ in range(20):
        labels, n, kind = scene_labels(patch, rng)
        assert n >= 2 and labels.max() == n - 1 and kind in ("shapes", "depth", "segments")


@pytest.fixture
def photo_folder(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(30):
        sub = tmp_path / ("set1" if k % 2 else "set2")
        sub.mkdir(exist_ok=True)
        Image.fromarray((rng.random((100, 120, 3)) * 255).astype(np.uint8)).save(sub / f"p{k:02d}.png")
    return tmp_path


def test_photo_library_split_is_disjoint_and_stable(photo_folder):
    train = PhotoLibrary(photo_folder, "train", val_fraction=0.2)
    val = PhotoLibrary(photo_folder, "val", val_fraction=0.2)
    assert len(train) + len(val) == 30 and len(val) > 0
    assert not set(train.names) & set(val.names)
    assert PhotoLibrary(photo_folder, "val", val_fraction=0.2).names == val.names


def test_layered_pairs_are_deterministic_and_in_range(photo_folder):
    lib = PhotoLibrary(photo_folder, "train", val_fraction=0.2)
    ds = LayeredPairs(lib, n=10, size=48, seed=3)
    a, b = ds[4], ds[4]
    for key in ("A", "B", "GT"):
        assert a[key].shape == (1, 48, 48) and torch.equal(a[key], b[key])
        assert a[key].min() >= -1 and a[key].max() <= 1
    ds.set_epoch(1)
    assert not torch.equal(ds[4]["A"], a["A"])
    assert a["band"].dtype == torch.bool and a["band"].shape == (48, 48)
    stack = LayeredPairs(lib, n=4, size=32, frames=4, seed=0).sample(0)
    assert all(k in stack for k in "ABCD")


def test_missing_photo_folder_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="photo folder not found"):
        PhotoLibrary(tmp_path / "nope")


def _randomised(module):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module.eval()


@pytest.mark.parametrize("size", [(9, 9), (12, 14)])
def test_field_attention_is_exactly_equivariant(size):
    att = _randomised(FieldAttention(8, RotE(4, "bconv"), groups=2, heads=4))
    x = torch.randn(2, 32, *size)
    assert max(equivariance_error(att, x, k) for k in (1, 2, 3)) <= 1e-5


def test_unet_with_bottleneck_attention_is_exactly_equivariant():
    net = _randomised(ReDiffuseUNet(conv="bconv", base=16, mults=(1, 2, 4, 8, 8), groups=4, attention=4))
    x, t = torch.randn(1, 3, 47, 53), torch.tensor([9])
    assert max(equivariance_error(net, x, k, forward_kwargs={"t": t}) for k in (1, 3)) <= 1e-5
    plain = _randomised(ReDiffuseUNet(conv="plain", base=16, mults=(1, 2, 4, 8, 8), groups=4, attention=4))
    assert equivariance_error(plain, x, 1, forward_kwargs={"t": t}) > 1e-2


def test_stack_items_are_one_frame_against_the_mean_of_the_rest(photo_folder):
    """Each item is what ``fuse`` hands the network for frame i of an N-frame stack, and its target
    is the truth where frame i is the sharpest frame and the rest's mean elsewhere."""
    lib = PhotoLibrary(photo_folder, "train", val_fraction=0.2)
    ds = LayeredStackItems(lib, n=40, size=32, max_frames=5, seed=2)
    seen = set()
    for index in range(40):
        item = ds[index]
        frames, i = (int(x) for x in item["stem"].rsplit("-", 1)[1].split("f"))
        seen.add(frames)
        d = ds.stacks[frames].sample(index)  # the stack the item was cut from
        ys = [torch.from_numpy(d[k].astype(np.float32) / 127.5 - 1)[None] for k in ds.stacks[frames].keys]
        assert torch.equal(item["A"], ys[i])
        rest = [y for k, y in enumerate(ys) if k != i]
        assert torch.allclose(item["B"], sum(rest) / len(rest), atol=1e-6)
        wins = torch.from_numpy(d["sharpest"] == i)[None]
        gt = torch.from_numpy(d["GT"].astype(np.float32) / 127.5 - 1)[None]
        assert torch.equal(item["GT"][wins], gt[wins]) and torch.equal(item["GT"][~wins], item["B"][~wins])
        assert item["band"].shape == (32, 32) and item["GT"].shape == (1, 32, 32)
    assert seen == {2, 3, 4, 5}  # every stack length up to max_frames is drawn
    again = LayeredStackItems(lib, n=40, size=32, max_frames=5, seed=2)[7]
    assert torch.equal(again["GT"], ds[7]["GT"]) and again["stem"] == ds[7]["stem"]
    ds.set_epoch(1)
    assert not torch.equal(ds[7]["A"], again["A"])
    with pytest.raises(ValueError, match="max_frames"):
        LayeredStackItems(lib, max_frames=1)


def test_stack_items_against_the_best_of_the_rest(photo_folder):
    """``reference="best"``: B is the other frames weighted by sharpness: for two frames the other
    frame, for more a per-pixel blend of the others (within their range), not their mean."""
    lib = PhotoLibrary(photo_folder, "train", val_fraction=0.2)
    best = LayeredStackItems(lib, n=40, size=32, max_frames=5, seed=2, reference="best")
    mean = LayeredStackItems(lib, n=40, size=32, max_frames=5, seed=2)
    differs = 0
    for index in range(40):
        item, plain = best[index], mean[index]
        frames, i = (int(x) for x in item["stem"].rsplit("-", 1)[1].split("f"))
        d = best.stacks[frames].sample(index)
        ys = torch.stack([torch.from_numpy(d[k].astype(np.float32) / 127.5 - 1)[None] for k in best.stacks[frames].keys])
        rest = torch.cat([ys[:i], ys[i + 1:]])
        assert torch.equal(item["A"], plain["A"]) and item["stem"] == plain["stem"]
        tol = 2e-4  # float32 cancellation where frame i outweighs the rest (0.03 grey levels)
        assert (item["B"] >= rest.min(0).values - tol).all() and (item["B"] <= rest.max(0).values + tol).all()
        if frames == 2:
            assert torch.allclose(item["B"], rest[0], atol=1e-4)
        else:
            differs += not torch.allclose(item["B"], plain["B"], atol=1e-3)
    assert differs >= 10
    with pytest.raises(ValueError, match="reference must be one of mean, best"):
        LayeredStackItems(lib, reference="median")


@pytest.mark.parametrize("reference", ["mean", "best"])
def test_training_on_stack_items_runs(photo_folder, tmp_path, reference):
    from rediffuse.fuse import FusionModel
    from rediffuse.train import TrainConfig, train

    cfg = TrainConfig(layered=50, stack_frames=4, stack_reference=reference, photos=str(photo_folder), crop=32,
                      batch=2, steps=2, prediction="weights", loss="l1_grad", T=50,
                      model=dict(base=8, mults=(1, 2, 2), conv="bconv", groups=2, emb_dim=16, attention=2))
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["steps_run"] == 2 and all(np.isfinite(summary["losses"]))
    assert FusionModel(tmp_path / "run" / "last.pt").stack_reference == reference  # fuse uses it as trained
    for bad, word in [(dict(stack_frames=1), "stack_frames"), (dict(stack_frames=-2), "stack_frames"),
                      (dict(layered=0, synthetic=4), "layered"), (dict(stack_reference="median"), "stack_reference"),
                      (dict(stack_frames=0, stack_reference="best"), "stack_reference needs stack_frames")]:
        with pytest.raises(ValueError, match=word):
            TrainConfig(**{**cfg.__dict__, **bad}).validate()


def test_training_on_layered_pairs_runs_and_learns_something(photo_folder, tmp_path):
    from rediffuse.train import TrainConfig, train

    cfg = TrainConfig(layered=50, photos=str(photo_folder), crop=32, batch=2, steps=3, prediction="weights",
                      loss="l1_grad", T=50, model=dict(base=8, mults=(1, 2, 2), conv="bconv", groups=2,
                                                       emb_dim=16, attention=2))
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["steps_run"] == 3 and all(np.isfinite(summary["losses"]))
    assert (tmp_path / "run" / "last.pt").is_file()


def test_l1_grad_loss_needs_an_image_space_loss():
    from rediffuse.diffusion import get_schedule, training_loss

    net = ReDiffuseUNet(conv="plain", base=8, mults=(1,), groups=2, emb_dim=16)
    x0, cond = torch.zeros(1, 1, 16, 16), torch.zeros(1, 2, 16, 16)
    with pytest.raises(ValueError, match="l1_grad"):
        training_loss(net, x0, cond, get_schedule("cosine", 50), prediction="eps", loss="l1_grad")
    assert training_loss(net, x0, cond, get_schedule("cosine", 50), prediction="weights", loss="l1_grad") >= 0


def test_band_weighted_fine_tune_from_a_checkpoint(photo_folder, tmp_path):
    """A fine-tune: weights from a first run's EMA, a fresh optimiser, cosine annealing, boundary pixels
    weighted; the batches carry the band, and a band weight on data without one is refused."""
    from rediffuse.train import StepBatches, TrainConfig, build_dataset, build_model, train

    model = dict(base=8, mults=(1, 2, 2), conv="bconv", groups=2, emb_dim=16, attention=2)
    first = TrainConfig(layered=50, photos=str(photo_folder), crop=32, batch=2, steps=2, prediction="weights",
                        loss="l1_grad", T=50, model=model)
    train(first, tmp_path / "a", progress=False)
    tune = dataclasses.replace(first, init=str(tmp_path / "a" / "last.pt"), lr_schedule="cosine", warmup=1,
                               band_weight=4.0, seed=1, steps=3)
    batch = StepBatches(build_dataset(tune), 2, 1, 50)[0]
    assert batch["band"].shape == (2, 1, 32, 32) and batch["band"].dtype == torch.bool
    ema = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["ema"]
    train(dataclasses.replace(tune, lr=1e-12, steps=1), tmp_path / "b", progress=False)  # ~no update
    started = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(started[k], v, atol=1e-9) for k, v in ema.items())
    assert not all(torch.allclose(v, build_model(tune).state_dict()[k], atol=1e-6) for k, v in ema.items())
    summary = train(tune, tmp_path / "c", progress=False)
    assert summary["steps_run"] == 3 and all(np.isfinite(summary["losses"]))
    with pytest.raises(ValueError, match="band_weight"):
        dataclasses.replace(tune, synthetic=4).validate()
