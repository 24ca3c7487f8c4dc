"""Training: the tiny model overfits one real clip; resume is exact; DDP keeps ranks in step;
stage check on resume, checkpoint history, EMA export, EMA/LR warm-up, lazy loss reduction,
failed checkpoint writes, Ray restarts."""
from __future__ import annotations

import csv
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from portrait_model import PortraitModelError
from portrait_model.diffusion import GaussianDiffusion
from portrait_model.model import build_model
from portrait_model.presets import get_preset
from portrait_model.reader import ShardReader
from portrait_model.train import (
    CHECKPOINT,
    LOG_FILE,
    CheckpointError,
    TrainConfig,
    checkpoint_blocks,
    export_ema,
    load_checkpoint,
    model_from_checkpoint,
    train,
)

from model_shards import make_test_build

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_clip(feature_build):
    """Real fixture shards from the pipeline: one video clip (d0) with VAE latents and maps."""
    return feature_build


@pytest.fixture(scope="module")
def build(fixtures_dir, tmp_path_factory):
    return make_test_build(tmp_path_factory.mktemp("three"), n_frames=8, n_clips=2)


def fixed_loss(model, batch, seed=123):
    """Loss at fixed timesteps and noise, so before/after are comparable."""
    d = GaussianDiffusion()
    g = torch.Generator().manual_seed(seed)
    x0 = batch["latents"].float().repeat(10, 1, 1, 1, 1)
    ref = batch["reference"].float().repeat(10, 1, 1, 1)
    maps = batch["position_maps"].float().repeat(10, 1, 1, 1, 1)
    t = torch.arange(10).repeat_interleave(batch["latents"].shape[0]) * 100 + 50
    with torch.no_grad():
        return d.training_loss(model.eval(), x0, ref, maps, t=t, noise=torch.randn(x0.shape, generator=g)).item()


def test_tiny_model_overfits_one_clip(one_clip, tmp_path):
    cfg = TrainConfig(data=str(one_clip), run_dir=str(tmp_path / "run"), stage=2, frames=8, latent_size=8,
                      steps=120, batch_size=2, lr=1e-3, p_drop_reference=0, p_drop_motion=0, p_drop_both=0,
                      p_condition_frames=0, log_every=20, checkpoint_every=1000, quiet=True)
    torch.manual_seed(cfg.seed)
    initial = build_model(get_preset("tiny"))
    batch = ShardReader(one_clip, 2, 1, frames=8, latent_size=8).first_batch()
    before = fixed_loss(initial, batch)
    result = train(cfg)
    after = fixed_loss(result.model, batch)
    print(f"loss at fixed noise: {before:.4f} -> {after:.4f}; "
          f"training log {result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
    assert after <= before / 5
    assert len(result.losses) == 120 and (tmp_path / "run" / CHECKPOINT).is_file()


def resume_config(build, run_dir, steps):
    return TrainConfig(data=str(build), run_dir=str(run_dir), stage=2, frames=4, latent_size=8, steps=steps,
                       batch_size=2, lr=1e-3, p_drop_reference=0.3, p_drop_motion=0.3, p_condition_frames=0.5,
                       ema_decay=0.9, log_every=1, checkpoint_every=3, quiet=True)


def test_resumed_run_reproduces_the_uninterrupted_losses(build, tmp_path):
    straight = train(resume_config(build, tmp_path / "a", 6))
    first = train(resume_config(build, tmp_path / "b", 3))
    ckpt = load_checkpoint(tmp_path / "b" / CHECKPOINT)
    assert {"model", "ema", "optimizer", "step", "rng", "reader"} <= set(ckpt)
    assert ckpt["step"] == 3 and ckpt["reader"]["batches"] == 3
    resumed = train(resume_config(build, tmp_path / "b", 6))
    assert first.losses == straight.losses[:3]
    assert resumed.losses == straight.losses[3:]
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    a, b = load_checkpoint(tmp_path / "a" / CHECKPOINT), load_checkpoint(tmp_path / "b" / CHECKPOINT)
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k])
    with open(tmp_path / "b" / LOG_FILE) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, data, out_dir, zero=False):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    result = train(TrainConfig(data=data, run_dir=os.path.join(out_dir, "run"), stage=1, latent_size=8, steps=3,
                               batch_size=2, lr=1e-3, log_every=1, checkpoint_every=10, device="cpu", quiet=True,
                               zero=zero))
    flat = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    torch.save({"params": flat, "losses": torch.tensor(result.losses)}, os.path.join(out_dir, f"rank{rank}.pt"))


def test_ddp_two_processes_keep_parameters_identical(build, tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(build), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    torch.manual_seed(0)
    initial = torch.cat([p.detach().flatten() for p in build_model(get_preset("tiny")).parameters()])
    assert not torch.equal(r0["params"], initial), "training changed the weights"
    assert torch.equal(r0["params"], r1["params"])
    assert torch.equal(r0["losses"], r1["losses"])  # the logged loss is the mean over ranks
    assert (tmp_path / "run" / CHECKPOINT).is_file()


def small_config(build, run_dir, **kw):
    base = dict(data=str(build), run_dir=str(run_dir), stage=1, latent_size=8, steps=4, batch_size=2, lr=1e-3,
                log_every=1, checkpoint_every=2, quiet=True)
    return TrainConfig(**{**base, **kw})


def test_resume_refuses_a_checkpoint_of_the_other_stage(build, tmp_path):
    train(small_config(build, tmp_path / "run", steps=2))
    with pytest.raises(CheckpointError, match="stage-1 checkpoint and this is a stage-2 run"):
        train(small_config(build, tmp_path / "run", stage=2, frames=4, steps=4))


def test_periodic_and_last_checkpoints_and_an_ema_only_export(build, tmp_path):
    run = tmp_path / "run"
    result = train(small_config(build, run, steps=8, checkpoint_every=2, keep_checkpoints=2))
    assert sorted(p.name for p in run.glob("checkpoint-*.pt")) == [
        "checkpoint-00000006.pt", "checkpoint-00000008.pt", "checkpoint-last.pt"]
    last = load_checkpoint(run / CHECKPOINT)
    assert last["step"] == 8 and torch.equal(
        last["ema"]["x_embedder.proj.weight"],
        load_checkpoint(run / "checkpoint-00000008.pt")["ema"]["x_embedder.proj.weight"],
    )
    assert result.checkpoint == str(run / CHECKPOINT)
    export = export_ema(run / CHECKPOINT, tmp_path / "ema.pt")
    payload = load_checkpoint(export)
    assert set(payload) >= {"ema", "model_config", "stage", "step"} and "optimizer" not in payload
    assert export.stat().st_size < (run / CHECKPOINT).stat().st_size / 4
    model = model_from_checkpoint(export)
    torch.testing.assert_close(
        model.x_embedder.proj.weight, last["ema"]["x_embedder.proj.weight"], rtol=1e-2, atol=1e-3
    )
    with pytest.raises(CheckpointError, match="no 'model' weights"):
        model_from_checkpoint(export, use_ema=False)


def test_ema_and_learning_rate_warm_up(build, tmp_path):
    torch.manual_seed(0)
    initial = build_model(get_preset("tiny")).state_dict()
    train(small_config(build, tmp_path / "run", steps=1, checkpoint_every=1, warmup_steps=4, ema_decay=0.9999))
    ckpt = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    # First EMA update uses decay min(0.9999, 1/10): the EMA is mostly the trained weights already.
    for k in ("x_embedder.proj.weight", "blocks.0.mlp.fc1.weight"):
        torch.testing.assert_close(ckpt["ema"][k], 0.1 * initial[k] + 0.9 * ckpt["model"][k])
    train(small_config(build, tmp_path / "run", steps=4, warmup_steps=4))
    with open(tmp_path / "run" / LOG_FILE) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["lr"]) for r in rows] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert all(float(r["data_wait_ms"]) >= 0 for r in rows)


def test_losses_are_reduced_when_logged_and_all_reach_the_result(build, tmp_path):
    every = train(small_config(build, tmp_path / "a", steps=5, log_every=1))
    sparse = train(small_config(build, tmp_path / "b", steps=5, log_every=3))
    assert sparse.losses == every.losses and len(sparse.losses) == 5
    with open(tmp_path / "b" / LOG_FILE) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [3, 5]


def test_a_failed_checkpoint_write_fails_the_run_in_one_line(build, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device") as err:
        train(small_config(build, tmp_path / "run", steps=2))
    assert "\n" not in str(err.value)


def test_grad_checkpointing_setting():
    paper, tiny = get_preset("paper"), get_preset("tiny")
    assert checkpoint_blocks("auto", paper) == 28 and checkpoint_blocks("auto", tiny) == 0
    assert checkpoint_blocks("all", tiny) == 4 and checkpoint_blocks("none", paper) == 0
    assert checkpoint_blocks("12", paper) == 12
    with pytest.raises(PortraitModelError, match="auto, all, none or 0..28"):
        checkpoint_blocks("29", paper)


def test_ray_launcher_restarts_failed_workers(build, tmp_path, monkeypatch):
    import ray
    import ray.train.torch as ray_torch

    from portrait_model.ray_train import launch_ray_train

    seen = {}

    class FakeTrainer:
        def __init__(self, fn, train_loop_config, scaling_config, run_config):
            seen.update(run_config=run_config, scaling=scaling_config)

        def fit(self):
            return "fitted"

    monkeypatch.setattr(ray_torch, "TorchTrainer", FakeTrainer)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2})
    assert launch_ray_train(small_config(build, tmp_path / "run"), num_workers=2, max_failures=5) == "fitted"
    assert seen["run_config"].failure_config.max_failures == 5
    with pytest.raises(PortraitModelError, match="--no-resume"):
        launch_ray_train(small_config(build, tmp_path / "run", resume=False), num_workers=2)


def test_stage2_can_restart_the_ema_from_the_stage1_weights(build, tmp_path):
    train(small_config(build, tmp_path / "s1", steps=2))
    s1 = load_checkpoint(tmp_path / "s1" / CHECKPOINT)
    train(small_config(build, tmp_path / "s2", stage=2, frames=4, steps=1, checkpoint_every=1,
                       init_from=str(tmp_path / "s1" / CHECKPOINT), ema_reset=True))
    s2 = load_checkpoint(tmp_path / "s2" / CHECKPOINT)
    assert s2["stage"] == 2 and s2["ema_steps"] == 1
    k = "blocks.0.attn.qkv_proj.weight"
    # A fresh EMA: the stage-1 model weights, then one warm-up update (decay 0.1).
    torch.testing.assert_close(s2["ema"][k], 0.1 * s1["model"][k] + 0.9 * s2["model"][k])


def test_zero_sharded_optimizer_trains_like_plain_ddp(build, tmp_path):
    """ZeRO-1: each rank holds half the AdamW moments; the weights move exactly as with DDP, and
    the checkpoint still holds every parameter's moments."""
    for zero in (False, True):
        out = tmp_path / ("zero" if zero else "plain")
        out.mkdir()
        mp.spawn(_ddp_worker, args=(2, _free_port(), str(build), str(out), zero), nprocs=2, join=True)
    plain, zero = (torch.load(tmp_path / d / "rank0.pt", weights_only=True) for d in ("plain", "zero"))
    torch.testing.assert_close(zero["params"], plain["params"])
    assert torch.equal(zero["params"], torch.load(tmp_path / "zero" / "rank1.pt", weights_only=True)["params"])
    ckpt = load_checkpoint(tmp_path / "zero" / "run" / CHECKPOINT)
    assert len(ckpt["optimizer"]["state"]) == sum(1 for _ in build_model(get_preset("tiny")).parameters())
