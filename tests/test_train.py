"""Training loop: overfitting, exact resume, DDP equivalence, checkpoint safety, run folders that cannot
be confused, the data pipeline (workers), gradient checkpointing and precision modes."""
import dataclasses
import json
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from rediffuse.data import SyntheticPairs
from rediffuse.runtime import tf32_precision
from rediffuse.train import (StepBatches, TrainConfig, build_dataset, build_model, config_differences,
                             load_checkpoint, load_model, preset_config, read_losses, read_run_config,
                             resolve_precision, save_checkpoint, train, train_model)
from rediffuse.unet import ReDiffuseUNet, set_grad_checkpoint

TINY = dict(base=8, mults=(1, 2), conv="bconv", groups=2, dropout=0.0, emb_dim=16)


def tiny_cfg(**kw):
    base = dict(synthetic=4, crop=24, batch=4, steps=6, lr=2e-3, model=dict(TINY), ckpt_every=3,
                log_every=1, prediction="x0", T=100)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    full = train(tiny_cfg(), tmp_path / "a", progress=False)["losses"]
    first = train(tiny_cfg(), tmp_path / "b", stop_after=3, progress=False)["losses"]  # "killed" after step 3
    rest = train(tiny_cfg(), tmp_path / "b", resume=True, progress=False)["losses"]
    assert len(full) == 6 and len(first) + len(rest) == 6
    assert first + rest == pytest.approx(full, rel=1e-6, abs=1e-8)
    rows = (tmp_path / "b" / "loss.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 2, 3, 4, 5, 6]


def test_tiny_model_overfits_one_pair(tmp_path):
    cfg = tiny_cfg(synthetic=1, batch=2, steps=150, lr=3e-3, ckpt_every=1000, log_every=50)
    losses = train(cfg, tmp_path, progress=False)["losses"]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.2 * first, (first, last)


def test_checkpoint_loads_weights_only_and_rebuilds_model(tmp_path):
    train(tiny_cfg(steps=3), tmp_path, progress=False)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ck["step"] == 3 and {"model", "ema", "optimizer", "rng", "config"} <= set(ck)
    model, cfg = load_model(tmp_path / "last.pt")
    x = torch.randn(1, 3, 24, 24)
    assert model(x, torch.tensor([5])).shape == (1, 1, 24, 24)
    assert not list(tmp_path.glob("*.tmp"))


def test_exported_checkpoint_is_slim_and_loads(tmp_path):
    from rediffuse.train import export_checkpoint

    train(tiny_cfg(steps=2), tmp_path, progress=False)
    out = export_checkpoint(tmp_path / "last.pt", tmp_path / "ship.pt", hardware="test")
    ck = torch.load(out, weights_only=True)
    assert "optimizer" not in ck and ck["meta"] == {"hardware": "test"} and ck["step"] == 2
    a, _ = load_model(tmp_path / "last.pt")
    b, _ = load_model(out)
    x = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(a(x, torch.tensor([3])), b(x, torch.tensor([3])))


def test_an_ema_only_half_precision_export_is_the_ema_model_up_to_rounding(tmp_path):
    from rediffuse.train import export_checkpoint

    train(tiny_cfg(steps=2), tmp_path, progress=False)
    full = tmp_path / "last.pt"
    out = export_checkpoint(full, tmp_path / "half.pt", ema_only=True, dtype=torch.float16)
    ck = torch.load(out, weights_only=True)
    assert "ema" not in ck and "optimizer" not in ck and ck["meta"]["stored"] == "EMA only, float16"
    assert {v.dtype for v in ck["model"].values() if v.is_floating_point()} == {torch.float16}
    ema, _ = load_model(full)  # the EMA weights, in float32
    plain, _ = load_model(full, ema=False)
    half, _ = load_model(out)
    assert all(p.dtype == torch.float32 for p in half.parameters())
    x, t = torch.randn(1, 3, 24, 24), torch.tensor([3])
    with torch.no_grad():
        want, got, other = ema(x, t), half(x, t), plain(x, t)
    err = (got - want).abs().max().item()
    assert 0 < err < 1e-2 * want.abs().max().item() and err < (other - want).abs().max().item()
    tiny_run = tmp_path / "no-ema"
    save_checkpoint(tiny_run / "last.pt", {k: v for k, v in torch.load(full, weights_only=True).items() if k != "ema"})
    with pytest.raises(ValueError, match="no EMA weights"):
        export_checkpoint(tiny_run / "last.pt", tmp_path / "x.pt", ema_only=True)


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(bad)
    save_checkpoint(tmp_path / "other.pt", {"hello": torch.zeros(1)})
    with pytest.raises(ValueError, match="not a rediffuse model"):
        load_model(tmp_path / "other.pt")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        summary = train(tiny_cfg(steps=3), out, progress=False)
        if rank == 0:
            torch.save(summary["losses"], os.path.join(out, "ddp_losses.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_gloo_ddp_matches_single_process(tmp_path):
    single = train(tiny_cfg(steps=3), tmp_path / "one", progress=False)["losses"]
    (tmp_path / "two").mkdir()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "two")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "two" / "ddp_losses.pt")
    assert ddp == pytest.approx(single, rel=1e-5)
    # compare what the weights compute: biases right before a one-field GroupNorm get ~0 gradients,
    # which Adam turns into arbitrary (and irrelevant) updates
    m1, _ = load_model(tmp_path / "one" / "last.pt", ema=False)
    m2, _ = load_model(tmp_path / "two" / "last.pt", ema=False)
    x, t = torch.randn(2, 3, 24, 24), torch.tensor([3, 70])
    with torch.no_grad():
        assert torch.allclose(m1(x, t), m2(x, t), atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- run folders and resuming


def test_resume_refuses_other_settings_and_names_them(tmp_path):
    train(tiny_cfg(steps=3), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"lr: run 0.002, asked 0.001.*model.base: run 8, asked 16"):
        train(tiny_cfg(steps=6, lr=1e-3, model=dict(TINY, base=16)), tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="already at step 3"):
        train(tiny_cfg(steps=2), tmp_path, resume=True, progress=False)
    # how a run executes may change: precision, workers, checkpointing, logging, a longer run
    s = train(tiny_cfg(steps=4, ckpt_every=1, log_every=2, precision="fp32", grad_checkpoint=True), tmp_path,
              resume=True, progress=False)
    assert s["steps_run"] == 1 and s["final_step"] == 4


def test_a_finished_run_says_so_and_keeps_its_statistics(tmp_path):
    first = train(tiny_cfg(steps=3), tmp_path, progress=False)
    log = (tmp_path / "loss.csv").read_text()
    again = train(tiny_cfg(steps=3), tmp_path, resume=True, progress=False)
    assert again["already_finished"] and again["steps_run"] == 0 and again["losses"] == []
    assert again["steps_per_s"] == pytest.approx(first["steps_per_s"])  # the stored summary, not NaN
    assert (tmp_path / "loss.csv").read_text() == log
    assert read_losses(tmp_path) == pytest.approx(first["losses"], rel=1e-5)


def test_an_existing_run_needs_overwrite(tmp_path):
    train(tiny_cfg(steps=2), tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="already holds a training run.*resume=True.*overwrite=True"):
        train(tiny_cfg(steps=2), tmp_path, progress=False)
    with pytest.raises(ValueError, match="exclude each other"):
        train(tiny_cfg(steps=2), tmp_path, resume=True, overwrite=True, progress=False)
    s = train(tiny_cfg(steps=3, lr=1e-3), tmp_path, overwrite=True, progress=False)
    assert s["steps_run"] == 3
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["config"]["lr"] == 1e-3 and stored["model_config"]["base"] == 8
    assert len((tmp_path / "loss.csv").read_text().splitlines()) == 4


class _CrashAt(torch.utils.data.Dataset):
    """One synthetic pair that raises when step ``crash`` asks for its items (a simulated kill)."""

    def __init__(self, crash):
        self.inner, self.crash, self.epoch = SyntheticPairs(4, size=24, seed=0), crash, 0

    def __len__(self):
        return len(self.inner)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, i):
        if self.epoch == self.crash:
            raise KeyboardInterrupt("killed")
        return self.inner[i]


def test_loss_log_keeps_every_row_up_to_the_checkpoint_after_a_kill(tmp_path):
    cfg = tiny_cfg(steps=6, ckpt_every=3, log_every=100)  # logging alone would flush nothing before the end
    full = train(cfg, tmp_path / "a", progress=False)["losses"]
    with pytest.raises(KeyboardInterrupt):
        train_model(build_model(cfg), _CrashAt(crash=4), cfg, tmp_path / "b", progress=False)
    rows = (tmp_path / "b" / "loss.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 2, 3]
    train(cfg, tmp_path / "b", resume=True, progress=False)
    assert read_losses(tmp_path / "b") == pytest.approx(full, rel=1e-5)  # the log keeps 6 digits


def test_checkpoints_of_older_versions_resume(tmp_path):
    """A run started before precision/workers/grad_checkpoint existed (its config has ``amp``)."""
    train(tiny_cfg(steps=3), tmp_path / "old", progress=False)
    ck = torch.load(tmp_path / "old" / "last.pt", weights_only=True)
    for key in ("precision", "grad_checkpoint", "workers"):
        del ck["config"][key]
    ck["config"]["amp"] = True
    save_checkpoint(tmp_path / "old" / "last.pt", ck)
    (tmp_path / "old" / "config.json").unlink()
    stored, step = read_run_config(tmp_path / "old")
    assert step == 3 and stored.precision == "auto" and stored.workers == 0 and not stored.grad_checkpoint
    s = train(dataclasses.replace(stored, steps=6), tmp_path / "old", resume=True, progress=False)
    full = train(tiny_cfg(steps=6), tmp_path / "new", progress=False)["losses"]
    assert s["losses"] == pytest.approx(full[3:], rel=1e-6, abs=1e-8)
    assert TrainConfig.from_dict({"amp": False}).precision == "fp32"
    with pytest.raises(ValueError, match="does not know.*warp"):
        TrainConfig.from_dict({"warp": 9})


def test_bad_settings_are_one_line_errors():
    for kw, word in [({"steps": 0}, "steps"), ({"ckpt_every": 0}, "ckpt_every"), ({"batch": -1}, "batch"),
                     ({"workers": -1}, "workers"), ({"precision": "fp8"}, "precision"),
                     ({"model": dict(TINY, base=0)}, "base")]:
        with pytest.raises(ValueError, match=word) as e:
            tiny_cfg(**kw).validate()
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="CUDA"):
        resolve_precision("tf32", "cpu")
    assert resolve_precision("auto", "cpu") == "fp32"


# ----------------------------------------------------------------------------- data pipeline, memory, precision


def test_each_step_batch_is_a_pure_function_of_seed_and_step():
    ds = build_dataset(tiny_cfg())
    a, b = StepBatches(ds, 4, 0, 100), StepBatches(build_dataset(tiny_cfg()), 4, 0, 100)
    for step in (5, 0, 5):
        x, y = a[step], b[step]
        assert all(torch.equal(x[k], y[k]) for k in ("GT", "cond", "t", "noise"))
    assert not torch.equal(a[1]["noise"], a[2]["noise"])
    halves = [StepBatches(ds, 4, 0, 100, rank=r, world=2)[7] for r in (0, 1)]  # DDP: each rank a slice
    assert torch.equal(halves[1]["t"], a[7]["t"][1::2]) and torch.equal(halves[0]["GT"], a[7]["GT"][0::2])


def test_workers_give_exactly_the_same_run(tmp_path):
    plain = train(tiny_cfg(), tmp_path / "w0", progress=False)
    first = train(tiny_cfg(workers=2), tmp_path / "w2", stop_after=3, progress=False)
    rest = train(tiny_cfg(workers=2), tmp_path / "w2", resume=True, progress=False)
    assert first["losses"] + rest["losses"] == plain["losses"]  # bitwise
    assert 0 <= plain["data_wait_fraction"] < 1 and plain["pairs_per_s"] > 0


def test_synthetic_pairs_are_rendered_once():
    ds = SyntheticPairs(3, size=24, seed=1, cache=True)
    first = ds.sample(2)
    assert ds.sample(2) is first and not first["A"].flags.writeable
    assert torch.equal(ds[2]["GT"], SyntheticPairs(3, size=24, seed=1)[2]["GT"])


def test_gradient_checkpointing_changes_only_memory(tmp_path):
    torch.manual_seed(0)
    net = ReDiffuseUNet(base=8, mults=(1, 2), groups=2, dropout=0.2, emb_dim=16)
    x, t = torch.randn(2, 3, 24, 24), torch.tensor([3, 70])
    grads = []
    for on in (False, True):
        assert set_grad_checkpoint(net, on) == 10  # 2 levels × 2 blocks × (down, up) + 2 in the middle
        net.zero_grad()
        torch.manual_seed(1)  # the same dropout masks; checkpointing must replay them
        net(x, t).square().mean().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(*grads))
    plain = train(tiny_cfg(), tmp_path / "a", progress=False)["losses"]
    ckpt = train(tiny_cfg(grad_checkpoint=True), tmp_path / "b", progress=False)["losses"]
    assert ckpt == pytest.approx(plain, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_resumes(tmp_path, precision):
    s = train(tiny_cfg(steps=2, precision=precision), tmp_path, progress=False)
    assert s["precision"] == precision and all(math.isfinite(v) for v in s["losses"])
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ("scaler" in ck) == (precision == "fp16")  # fp16 needs loss scaling, and its state resumes
    assert train(tiny_cfg(steps=3, precision=precision), tmp_path, resume=True, progress=False)["steps_run"] == 1


def test_training_in_fp32_runs_with_tf32_off(tmp_path):
    seen = []
    cfg = tiny_cfg(steps=2, precision="fp32")
    net = build_model(cfg)
    forward = net.forward

    def recording(*a, **k):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return forward(*a, **k)

    net.forward = recording
    with tf32_precision(True):
        train_model(net, build_dataset(cfg), cfg, tmp_path, progress=False)
        assert torch.backends.cudnn.allow_tf32  # restored afterwards
    assert seen and all(s == (False, False) for s in seen)


def test_presets():
    paper = preset_config("paper")
    assert (paper.prediction, paper.batch, paper.crop, paper.loss_scale, paper.T, paper.schedule) == \
        ("eps", 32, 256, 128.0, 2000, "cosine")
    assert paper.model["layout"] == "fusiondiff" and paper.model["base"] == 64
    assert preset_config("layered", steps=5).steps == 5
    assert preset_config("small", model={"base": 8}).model["mults"] == (1, 2, 4)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")
    assert config_differences(preset_config("small"), preset_config("small", steps=9, workers=3)) == {}
    d = config_differences(preset_config("small"), preset_config("small", model={"layout": "fusiondiff"}))
    assert d == {"model.layout": ("unet", "fusiondiff")}


def test_cosine_schedule_warmup_and_its_length_defines_the_run():
    from rediffuse.train import _lr_at

    cfg = tiny_cfg(lr=1e-3, lr_schedule="cosine", warmup=4, steps=100)
    lrs = [_lr_at(cfg, s) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-3 * math.cos(0) / 4) and lrs[3] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 3 / 100)))
    assert lrs[50] == pytest.approx(5e-4) and lrs[-1] < 1e-6 and all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    step = tiny_cfg(lr=1e-3, lr_decay=0.5, lr_decay_every=10)
    assert _lr_at(step, 9) == 1e-3 and _lr_at(step, 10) == 5e-4  # the step schedule as before
    assert "steps" in config_differences(cfg, dataclasses.replace(cfg, steps=200))  # stretching it changes it
    assert "steps" not in config_differences(step, dataclasses.replace(step, steps=200))
    for kw, word in [({"lr_schedule": "linear"}, "lr_schedule"), ({"warmup": -1}, "warmup"),
                     ({"band_weight": -1.0}, "band_weight"), ({"band_weight": 2.0}, "layered")]:
        with pytest.raises(ValueError, match=word):
            tiny_cfg(**kw).validate()


def test_init_from_a_checkpoint_of_another_network_is_one_line(tmp_path):
    train(tiny_cfg(steps=1), tmp_path / "a", progress=False)
    other = tiny_cfg(steps=1, init=str(tmp_path / "a" / "last.pt"), model=dict(TINY, base=16))
    with pytest.raises(ValueError, match="does not fit") as e:
        train(other, tmp_path / "b", progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="init"):
        train(tiny_cfg(init=str(tmp_path / "nope.pt")), tmp_path / "c", progress=False)


def test_weighted_loss_is_the_plain_loss_under_uniform_weights_and_stresses_weighted_pixels():
    from rediffuse.diffusion import image_gradient_l1, training_loss, get_schedule

    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 1, 16, 16, generator=g), torch.randn(2, 1, 16, 16, generator=g)
    ones = torch.ones(2, 1, 16, 16)
    assert image_gradient_l1(pred, target, 3 * ones) == pytest.approx(float(image_gradient_l1(pred, target)), rel=1e-6)
    band = torch.zeros(2, 1, 16, 16)
    band[..., :4, :] = 1
    err = torch.zeros(2, 1, 16, 16)
    err[..., :4, :] = 1.0  # all the error inside the band
    assert image_gradient_l1(err, 0 * err, 1 + 9 * band) > image_gradient_l1(err, 0 * err)
    net = ReDiffuseUNet(conv="plain", base=8, mults=(1,), groups=2, emb_dim=16, dropout=0.0)
    sched, cond, t = get_schedule("cosine", 50), torch.randn(2, 2, 16, 16, generator=g), torch.tensor([3, 30])
    noise = torch.randn(2, 1, 16, 16, generator=g)
    for loss in ("mse", "l1_grad"):
        with torch.no_grad():
            plain = training_loss(net, target, cond, sched, prediction="weights", t=t, noise=noise, loss=loss)
            flat = training_loss(net, target, cond, sched, prediction="weights", t=t, noise=noise, loss=loss,
                                 weight=ones)
        assert float(flat) == pytest.approx(float(plain), rel=1e-5)
    with pytest.raises(ValueError, match="weight must be"):
        training_loss(net, target, cond, sched, prediction="weights", t=t, noise=noise, weight=ones[:, :, :8])


def test_run_configurations_merge_presets_settings_and_the_stored_run(tmp_path):
    """What `rediffuse train` asks of the library: a preset with settings (new data replaces the preset's),
    the stored configuration with settings (only those that change how it runs), one process group."""
    from rediffuse.train import new_run_config, process_group, resume_config

    cfg = new_run_config("layered", {"synthetic": 4, "model": {"base": 8}})
    assert (cfg.synthetic, cfg.layered, cfg.data) == (4, 0, []) and cfg.model["mults"] == (1, 2, 4, 8, 8)
    assert new_run_config("layered", {"steps": 5}).layered == 20_000  # no data given: the preset's
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        resume_config(tmp_path)
    train(tiny_cfg(steps=2), tmp_path, progress=False)
    assert resume_config(tmp_path, {"steps": 4, "workers": 1}) == dataclasses.replace(tiny_cfg(steps=4), workers=1)
    with pytest.raises(ValueError, match=r"lr: run 0.002, given 0.1.*model.base: run 8, given 16"):
        resume_config(tmp_path, {"lr": 0.1, "model": {"base": 16}})
    with pytest.raises(ValueError, match="already at step 2; give steps=2 or more"):
        resume_config(tmp_path, {"steps": 1})
    with process_group("cpu") as device:  # not launched by torchrun: one process, nothing to join
        assert device == "cpu" and not torch.distributed.is_initialized()
