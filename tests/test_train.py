"""Training: the tiny model overfits one real clip; resume is exact; DDP keeps ranks in step."""
from __future__ import annotations

import csv
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from model_shards import make_test_build
from portrait_model.diffusion import GaussianDiffusion
from portrait_model.model import build_model
from portrait_model.presets import get_preset
from portrait_model.reader import ShardReader
from portrait_model.train import CHECKPOINT, LOG_FILE, TrainConfig, load_checkpoint, train

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
    print(f"loss at fixed noise: {before:.4f} -> {after:.4f}; training log {result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
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


def _ddp_worker(rank, world, port, data, out_dir):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    result = train(TrainConfig(data=data, run_dir=os.path.join(out_dir, "run"), stage=1, latent_size=8, steps=3,
                               batch_size=2, lr=1e-3, log_every=1, checkpoint_every=10, device="cpu", quiet=True))
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
