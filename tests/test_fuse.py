"""The fusion pipeline on a tiny trained checkpoint: grey, colour, stacks, tiles, padding, errors."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import rediffuse.fuse as F
import rediffuse.weights as W
from rediffuse.data import focus_mask, luminance, make_pair, recombine, skimage_photo
from rediffuse.diffusion import get_schedule, predict_x0_eps
from rediffuse.fuse import FusionModel, fuse, plan_tiles, tile_window
from rediffuse.metrics import psnr
from rediffuse.paths import dataset_dir
from rediffuse.train import save_checkpoint
from rediffuse.unet import ReDiffuseUNet

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    return FusionModel(tiny_checkpoint)


def _checkpoint(path, **model_kw):
    """An untrained model saved in the checkpoint format of ``rediffuse train``."""
    torch.manual_seed(0)
    net = ReDiffuseUNet(**model_kw)
    save_checkpoint(path, dict(model=net.state_dict(), model_config=net.config,
                               config=dict(prediction="weights", T=50, schedule="cosine")))
    return path


def pair(n: int, m: int | None = None, colour: bool = True, seed: int = 0):
    """A synthetic multi-focus pair (and its ground truth) of size n × m from a scikit-image photo."""
    m = m or n
    img = skimage_photo("astronaut")
    gt = np.asarray(Image.fromarray(img).resize((m, n), Image.BICUBIC))
    if not colour:
        gt = np.asarray(Image.fromarray(gt).convert("L"))
    a, b, gt = make_pair(gt, focus_mask((n, m), "blobs", rng=seed), "gaussian", 3.0)
    return a, b, gt


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


def test_colour_uses_the_chroma_rule_of_all_sources(tiny_model, monkeypatch):
    from rediffuse.data import luminance

    a, b, _ = pair(40, 36)
    c = np.ascontiguousarray(a[::-1])
    out = fuse([a, b, c], tiny_model, steps=1)
    assert out.shape == a.shape and out.dtype == np.uint8
    # with a stand-in "model" that keeps the first luminance, the pairwise fold gives exactly Y_a joined
    # with the saturation-weighted chroma rule over all three sources (computed in row strips: same numbers)
    monkeypatch.setattr(tiny_model, "sample", lambda cond, *args, **kw: cond[:, :1])
    big = [np.tile(x, (8, 1, 1)) for x in (a, b, c)]  # 320 rows: more than one strip
    with pytest.warns(UserWarning, match="folded pairwise in the order given"):
        out = fuse(big, tiny_model, steps=1, symmetric=False, colour="paper")
    ref = recombine(luminance(big[0]), big)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_colour_by_weights_copies_the_chosen_pixels(tiny_model, monkeypatch):
    """colour="weights" (the default for weight-map models) applies each source's weight to its R, G, B:
    a pixel taken from one source is that source's pixel exactly; the paper's chroma rule is not."""
    from rediffuse.orientation import canonical_turns, turn

    a, b, _ = pair(40, 36)
    a, b = (turn(x, canonical_turns([a, b])) for x in (a, b))  # fuse works on them as they lie
    c = np.ascontiguousarray(a[::-1])

    def by_columns(cond, settings=None, *, callback=None):  # stand-in: A left of column 18, B right of it
        logit = torch.full(cond[:, :1].shape, 30.0)
        logit[..., 18:] = -30.0
        w = torch.sigmoid(logit)
        return w * cond[:, :1] + (1 - w) * cond[:, 1:2], logit

    monkeypatch.setattr(tiny_model, "sample_with_logits", by_columns)
    # the plain blend (exposure=False): with the common exposure a pixel is its source's only where that
    # source wins over the exposure's ramp (tests/test_exposure.py)
    out = fuse([a, b], tiny_model, steps=1, evidence_fill=False, exposure=False)
    assert np.array_equal(out[:, :18], a[:, :18]) and np.array_equal(out[:, 18:], b[:, 18:])
    paper = fuse([a, b], tiny_model, steps=1, colour="paper", evidence_fill=False, exposure=False)
    assert np.abs(paper.astype(int) - out.astype(int)).max() > 2  # the chroma rule mixes the sources' colours

    def brightest(cond, settings=None, *, callback=None):  # stand-in: each frame scored by its own luminance
        logit = 2000.0 * cond[:, :1]
        return cond[:, :1], logit

    monkeypatch.setattr(tiny_model, "sample_with_logits", brightest)
    frames = [a, b, c]
    stack = fuse(frames, tiny_model, steps=1, evidence_fill=False, exposure=False)  # order-free softmax, 3 frames
    ys = np.stack([luminance(f) for f in frames])
    pick = ys.argmax(0)
    clear = np.sort(ys, 0)[-1] - np.sort(ys, 0)[-2] > 2.0  # a clear winner: its weight is ~1
    want = np.take_along_axis(np.stack(frames), pick[None, ..., None], 0)[0]
    assert np.abs(stack[clear].astype(int) - want[clear].astype(int)).max() <= 1
    assert np.array_equal(fuse([c, a, b], tiny_model, steps=1, evidence_fill=False, exposure=False), stack)
    assert np.array_equal(fuse([c, a, b], tiny_model, steps=1, evidence_fill=False),
                          fuse(frames, tiny_model, steps=1, evidence_fill=False))  # with the common exposure too

    monkeypatch.setattr(tiny_model, "prediction", "eps")
    with pytest.raises(ValueError, match="colour='weights' needs a weight-map model"):
        fuse([a, b], tiny_model, steps=1, colour="weights")
    with pytest.raises(ValueError, match="colour must be one of"):
        fuse([a, b], tiny_model, steps=1, colour="rgb")


def test_seeds_and_determinism(tiny_model):
    a, b, _ = pair(32, colour=False)
    r1 = fuse([a, b], tiny_model, steps=2, seed=1)
    assert np.array_equal(r1, fuse([a, b], tiny_model, steps=2, seed=1))


def test_inputs_as_files_16bit_and_alpha(tiny_model, tmp_path):
    a, b, _ = pair(24, 28, colour=False)
    pa, pb = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(a).save(pa)
    Image.fromarray(b).save(pb)
    ref = fuse([a, b], tiny_model, steps=1)
    assert np.array_equal(fuse([pa, str(pb)], tiny_model, steps=1), ref)
    # 16-bit arrays/files: the same numbers at 16-bit scale give the same result, at 16 bits
    a16, b16 = a.astype(np.uint16) * 257, b.astype(np.uint16) * 257
    assert np.array_equal(fuse([a16, b16], tiny_model, steps=1, bits=8), ref)
    r16 = fuse([a16, b16], tiny_model, steps=1)
    assert r16.dtype == np.uint16 and np.abs(r16.astype(int) - ref.astype(int) * 257).max() <= 129
    Image.fromarray(a16).save(tmp_path / "a16.png")
    Image.fromarray(b16).save(tmp_path / "b16.png")
    assert F.load_stack_image(tmp_path / "a16.png").dtype == np.uint16  # a 16-bit file stays 16-bit
    assert np.array_equal(fuse([tmp_path / "a16.png", tmp_path / "b16.png"], tiny_model, steps=1), r16)
    fine = a16.copy()
    fine[0, 0] += 100  # a value that 8 bits cannot hold
    Image.fromarray(fine).save(tmp_path / "fine16.png")
    v = F.load_stack_image(tmp_path / "fine16.png")
    assert v.dtype == np.uint16 and v[0, 0] == fine[0, 0]
    # float images in [0, 1]
    assert np.array_equal(fuse([a / 255.0, b / 255.0], tiny_model, steps=1), ref)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fuse([a.astype(float), b], tiny_model, steps=1)
    # alpha dropped with a warning
    rgba = np.dstack([np.stack([a] * 3, -1), np.full(a.shape, 200, np.uint8)])
    with pytest.warns(UserWarning, match="alpha channel dropped"):
        out = fuse([rgba, np.stack([b] * 3, -1)], tiny_model, steps=1)
    assert out.shape == a.shape + (3,)


def test_mixed_grey_and_colour_warns_and_gives_colour(tiny_model):
    a, b, _ = pair(24)
    grey_b = np.asarray(Image.fromarray(b).convert("L"))
    with pytest.warns(UserWarning, match="mixing grey and colour"):
        out = fuse([a, grey_b], tiny_model, steps=1)
    assert out.shape == a.shape


def test_tiles_cover_the_image_and_windows_sum_to_one():
    for h, w, tile, ov in [(1024, 1024, 768, 192), (300, 1000, 256, 64), (100, 90, 128, 32), (517, 260, 96, 24)]:
        tiles = plan_tiles(h, w, tile, ov)
        cover = np.zeros((h, w))
        for t, b, l, r in tiles:
            assert b - t <= max(tile, 0) or (t, b) == (0, h)
            assert r - l <= max(tile, 0) or (l, r) == (0, w)
            wy = tile_window(b - t, t > 0, b < h, ov)
            wx = tile_window(r - l, l > 0, r < w, ov)
            cover[t:b, l:r] += (wy[:, None] * wx[None]).numpy()
        assert cover.min() > 0.2  # every pixel is covered with weight
        if len(tiles) > 1:  # neighbours overlap by at least ov
            tops = sorted({t for t, *_ in tiles})
            bottoms = sorted({b for _, b, *_ in tiles})
            assert all(bottoms[i] - tops[i + 1] >= ov for i in range(len(tops) - 1))
    assert plan_tiles(50, 60, 0, 0) == [(0, 50, 0, 60)]
    w = tile_window(64, True, True, 16)
    assert (w > 0).all() and w[16:48].eq(1).all()
    assert torch.allclose(w[:16] + w[:16].flip(0), torch.ones(16, dtype=w.dtype))  # ramps cross-fade to 1


def test_tiled_matches_untiled(tiny_model):
    a, b, _ = pair(200, 176)
    un = fuse([a, b], tiny_model, steps=2, tile=0)
    ti = fuse([a, b], tiny_model, steps=2, tile=112)
    assert len(plan_tiles(200, 176, 112, 28)) == 6
    assert psnr(un, ti) >= 40
    # tiling is stable across seeds' noise: the initial noise is drawn for the whole image
    assert np.array_equal(ti, fuse([a, b], tiny_model, steps=2, tile=112))


def test_tiled_matches_untiled_1024(tiny_model):
    """The issue's acceptance check (see benchmarks/bench_fuse.py for the trained checkpoint)."""
    a, b, _ = pair(1024)
    un = fuse([a, b], tiny_model, steps=1, tile=0)
    ti = fuse([a, b], tiny_model, steps=1, tile=512)
    assert len(plan_tiles(1024, 1024, 512, 128)) == 9
    assert psnr(un, ti) >= 40


def test_progress_callback_counts_every_tile_evaluation(tiny_model):
    a, b, _ = pair(100, 90, colour=False)
    calls = []
    fuse([a, b, a], tiny_model, steps=2, tile=64, overlap=16, callback=lambda: calls.append(1), speed="quality")
    # three images, fused order-independently: one sampling run per image, 2 steps, every tile
    assert len(calls) == 3 * 2 * len(plan_tiles(100, 90, 64, 16))
    assert tiny_model.count_evaluations(100, 90, 2, 64, 16) == 2 * len(plan_tiles(100, 90, 64, 16))
    # balanced: the first step at 71×64 (the shorter side kept at 64 px: 2 tiles), the last at full size
    calls.clear()
    fuse([a, b, a], tiny_model, steps=2, tile=64, overlap=16, callback=lambda: calls.append(1), speed="balanced")
    st = tiny_model.settings(steps=2, tile=64, overlap=16, speed="balanced")
    assert tiny_model.step_sizes(100, 90, st) == [(71, 64), (100, 90)]
    assert len(calls) == 3 * tiny_model.evaluations(100, 90, st) == 3 * (2 + len(plan_tiles(100, 90, 64, 16)))


def test_small_images_are_padded_degenerate_ones_refused(tmp_path):
    fm = FusionModel(_checkpoint(tmp_path / "deep.pt", base=8, mults=(1, 1, 1, 1), groups=2, emb_dim=16))
    assert fm.min_size == 9
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (8, 12), dtype=np.uint8) for _ in range(2)]
    out = fuse(imgs, fm, steps=1)
    assert out.shape == (8, 12)
    with pytest.raises(ValueError, match="too small to fuse.*at least 8 pixels"):
        fuse([im[:7] for im in imgs], fm, steps=1)


def test_nan_in_sampling_is_reported(tiny_model, monkeypatch):
    a, b, _ = pair(24, colour=False)
    monkeypatch.setattr(tiny_model.model, "forward", lambda x, t, cond=None: torch.full_like(x[:, :1], float("nan")))
    with pytest.raises(RuntimeError, match="NaN"):
        fuse([a, b], tiny_model, steps=1)
    with pytest.raises(RuntimeError, match=r"NaN.*tile 1 of 4"):
        fuse([np.tile(a, (2, 2)), np.tile(b, (2, 2))], tiny_model, steps=1, tile=32, overlap=8)


def test_fuse_errors(tiny_model):
    img = np.zeros((20, 20), np.uint8)
    with pytest.raises(ValueError, match="at least two"):
        fuse([img], tiny_model)
    with pytest.raises(ValueError, match="differ in size.*register"):
        fuse([img, np.zeros((20, 21), np.uint8)], tiny_model)
    with pytest.raises(ValueError, match="rotated"):
        fuse([np.zeros((20, 30), np.uint8), np.zeros((30, 20), np.uint8)], tiny_model)
    with pytest.raises(TypeError, match="sequence"):
        fuse(img, tiny_model)
    with pytest.raises(ValueError, match="steps must be a whole number from 1 to 50"):
        fuse([img, img], tiny_model, steps=51)
    with pytest.raises(ValueError, match="unknown sampler"):
        fuse([img, img], tiny_model, sampler="nope")
    with pytest.raises(ValueError, match="overlap"):
        fuse([img, img], tiny_model, tile=64, overlap=32)
    with pytest.raises(ValueError, match="tile must be"):
        fuse([img, img], tiny_model, tile=8)


def test_checkpoint_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        FusionModel(tmp_path / "nope.pt")
    monkeypatch.setattr(W, "DEFAULT_CHECKPOINT", tmp_path / "checkpoints" / "rediffuse-weights-bconv.pt")
    with pytest.raises(FileNotFoundError, match="default checkpoint .* not there.*checkpoint=PATH"):
        FusionModel()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable rediffuse checkpoint"):
        FusionModel(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="luminance model"):
        FusionModel(_checkpoint(tmp_path / "odd.pt", in_channels=6, out_channels=2, base=8, mults=(1,), groups=2))
    torch.save({"model": {}, "model_config": {"colour": True}}, tmp_path / "alien.pt")
    with pytest.raises(ValueError, match="not a checkpoint this version"):
        FusionModel(tmp_path / "alien.pt")
    p = _checkpoint(tmp_path / "nan.pt", base=8, mults=(1,), groups=2)
    ck = torch.load(p, weights_only=True)
    next(v for v in ck["model"].values() if v.is_floating_point()).view(-1)[0] = float("nan")
    torch.save(ck, p)
    with pytest.raises(ValueError, match="damaged: its weights do not match the checksum"):
        FusionModel(p)
    del ck["sha256"]  # a checkpoint from before digests: the NaN check still refuses it
    torch.save(ck, p)
    with pytest.raises(ValueError, match="corrupt.*NaN"):
        FusionModel(p)


def test_cuda_request_without_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA was requested"):
        FusionModel(_checkpoint(tmp_path / "m.pt", base=8, mults=(1,), groups=2), device="cuda")


@pytest.mark.shared
def test_lytro_triple_in_one_call(tiny_model):
    root = dataset_dir("Lytro-Triple")
    if root is None:
        pytest.skip("../shared/data/Lytro-Triple is not present")
    stem = sorted((root / "A").iterdir())[0].name
    files = [root / k / stem for k in ("A", "B", "C")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no notices for a clean colour triple
        out = fuse(files, tiny_model, steps=1)
    assert out.shape == (520, 520, 3) and out.dtype == np.uint8


def test_rgb_model_fuses_colour_directly(tmp_path):
    # a FusionDiff-style RGB model (9 inputs, 3 outputs): a weight map per colour channel, so fusing an
    # image with itself must give the image back exactly
    from rediffuse.train import TrainConfig, train

    cfg = TrainConfig(synthetic=4, crop=24, batch=2, steps=2, prediction="weights", T=50, channels=3,
                      model=dict(base=8, mults=(1, 2), conv="bconv", groups=2, emb_dim=16))
    train(cfg, tmp_path, progress=False)
    fm = FusionModel(tmp_path / "last.pt")
    assert fm.channels == 3
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    out = fuse([img, img], fm, tile=0)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).max() <= 1
    grey = fuse([img[..., 0], img[..., 1]], fm, tile=0)
    assert grey.shape == (40, 36)


def test_shipped_models_by_name(tmp_path, monkeypatch):
    assert F.resolve_checkpoint(None) == F.DEFAULT_CHECKPOINT
    assert F.resolve_checkpoint("weights") == F.DEFAULT_CHECKPOINT
    assert F.resolve_checkpoint("runs/x/last.pt") == F.Path("runs/x/last.pt")
    if F.DEFAULT_CHECKPOINT.is_file():
        assert FusionModel("weights").path == F.DEFAULT_CHECKPOINT
    monkeypatch.setitem(W.SHIPPED_MODELS, "paper", tmp_path / "missing-eps.pt")
    with pytest.raises(FileNotFoundError, match="shipped model 'paper'.*checkpoint=PATH"):
        FusionModel("paper")
