"""Training loop: AdamW, gradient clipping, EMA, bf16 autocast on GPU, checkpoints that resume
exactly, CSV log. DDP when launched by torchrun (or Ray Train: see ``ray_train.py``).

Exact resume: the per-step randomness (timesteps, noise, condition dropping, frame masks) comes
from a generator seeded by (seed, rank, step), and the reader restarts at the number of batches
already consumed; the checkpoint also holds the global RNG states, model, EMA and optimizer.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import PortraitModelError
from .diffusion import GaussianDiffusion, conditional_frame_mask, drop_conditions
from .model import RealPortraitDiT, build_model, parameter_counts
from .presets import ModelConfig, get_preset
from .reader import ShardReader

CHECKPOINT = "checkpoint-last.pt"
LOG_FILE = "train_log.csv"
LOG_FIELDS = ["step", "loss", "grad_norm", "lr", "clips_per_s", "elapsed_s"]


class CheckpointError(PortraitModelError):
    """A checkpoint that cannot be used as asked."""


@dataclass
class TrainConfig:
    data: str  # build output folder (catalog.duckdb + shards/)
    run_dir: str  # checkpoints and log
    stage: int = 1
    preset: str = "tiny"
    steps: int = 1000
    batch_size: int = 8  # per rank
    lr: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    seed: int = 0
    num_workers: int = 0
    checkpoint_every: int = 1000
    log_every: int = 10
    grad_checkpointing: bool = False
    init_from: str | None = None  # stage 2: the stage-1 checkpoint to start from
    resume: bool = True  # continue from run_dir/checkpoint-last.pt when present
    frames: int | None = None  # stage-2 clip length; default: the preset's num_frames
    latent_size: int | None = None  # resize stored latents (CPU test runs only)
    samples_per_clip: int = 1
    p_drop_reference: float = 0.05
    p_drop_motion: float = 0.05
    p_condition_frames: float = 0.5  # stage 2: share of clips with clean first/last frames
    include_eval: bool = False
    include_random_weights: bool = False
    dataset_weights: dict[str, float] | None = None
    device: str = "auto"
    bf16: bool = True  # autocast on CUDA only
    quiet: bool = False


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # this run's steps, in order
    checkpoint: str | None = None
    log: str | None = None
    model: RealPortraitDiT | None = None


# ---- distributed -----------------------------------------------------------------------------
def _setup_distributed(device_pref: str) -> tuple[int, int, torch.device, bool]:
    """(rank, world, device, created_group). Uses torchrun's env vars or an existing group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    created = False
    cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://")
        created = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if cuda and not created and dist.is_initialized() and "ray.train" in sys.modules:
        device = sys.modules["ray.train.torch"].get_device()  # Ray Train picked this worker's GPU
    elif cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu" if device_pref == "auto" else device_pref)
    return rank, world, device, created


def _step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, rank, step]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


# ---- checkpoints -----------------------------------------------------------------------------
def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": json.dumps(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None


def model_from_checkpoint(path: str | Path, use_ema: bool = True, device: str | torch.device = "cpu") -> RealPortraitDiT:
    ckpt = load_checkpoint(path)
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["ema" if use_ema else "model"])
    return model.to(device).eval()


def _save(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


# ---- the loop --------------------------------------------------------------------------------
def _log(cfg: TrainConfig, rank: int, msg: str) -> None:
    if rank == 0 and not cfg.quiet:
        print(msg, flush=True)


def _open_log(path: Path, resume_step: int):
    """CSV log; rows past the resumed step (from an interrupted run) are dropped."""
    rows = []
    if path.is_file() and resume_step > 0:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
    f = open(path, "w", newline="")
    writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    f.flush()
    return f, writer


def train(cfg: TrainConfig) -> TrainResult:
    if cfg.stage not in (1, 2):
        raise PortraitModelError(f"--stage must be 1 or 2, got {cfg.stage}")
    rank, world, device, created_group = _setup_distributed(cfg.device)
    try:
        return _train(cfg, rank, world, device)
    finally:
        if created_group:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, rank: int, world: int, device: torch.device) -> TrainResult:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT
    model_cfg = get_preset(cfg.preset)
    frames = cfg.frames or model_cfg.num_frames

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(model_cfg)
    model.grad_checkpointing = cfg.grad_checkpointing
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    step = 0
    resume = load_checkpoint(ckpt_path) if cfg.resume and ckpt_path.is_file() else None
    if resume is not None:
        _check_same_model(resume, model_cfg, ckpt_path)
        model.load_state_dict(resume["model"])
        ema.load_state_dict(resume["ema"])
        opt.load_state_dict(resume["optimizer"])
        step = int(resume["step"])
        _set_rng_state(resume["rng"])
        pos = resume["reader"]
        if (pos["world_size"], pos["num_workers"], pos["batch_size"]) != (world, cfg.num_workers, cfg.batch_size):
            _log(cfg, rank, "warning: world size, workers or batch size changed: the reader position is approximate")
        _log(cfg, rank, f"resumed from {ckpt_path} at step {step}")
    elif cfg.init_from:
        init = load_checkpoint(cfg.init_from)
        _check_same_model(init, model_cfg, Path(cfg.init_from))
        model.load_state_dict(init["model"])
        ema.load_state_dict(init["ema"])
        _log(cfg, rank, f"initialised from stage-{init.get('stage', '?')} checkpoint {cfg.init_from}")
    elif cfg.stage == 2:
        _log(cfg, rank, "warning: stage 2 without --init-from starts from random weights")

    model.to(device)
    ema.to(device)
    _optimizer_to(opt, device)
    counts = parameter_counts(model)
    _log(cfg, rank, f"model {model_cfg.name}: {counts['total'] / 1e6:.2f}M parameters "
                    f"(backbone {counts['backbone'] / 1e6:.2f}M, control {counts['control'] / 1e6:.2f}M)")

    reader = ShardReader(
        cfg.data, cfg.stage, cfg.batch_size, seed=cfg.seed, frames=frames,
        samples_per_clip=cfg.samples_per_clip, latent_size=cfg.latent_size,
        include_eval=cfg.include_eval, include_random_weights=cfg.include_random_weights,
        dataset_weights=cfg.dataset_weights, rank=rank, world_size=world, start_batch=step,
    )
    reader.first_batch()  # fail here, in one line, on unreadable data (e.g. no latents)
    loader = torch.utils.data.DataLoader(
        reader, batch_size=None, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
    )
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    diffusion = GaussianDiffusion()
    autocast = device.type == "cuda" and cfg.bf16
    log_file, writer = (None, None)
    if rank == 0:
        log_file, writer = _open_log(run_dir / LOG_FILE, step)

    result = TrainResult(step=step, log=str(run_dir / LOG_FILE))
    batches = iter(loader)
    start = window_start = time.perf_counter()
    window_clips = 0
    try:
        model.train()
        while step < cfg.steps:
            batch = next(batches)
            gen = _step_generator(cfg.seed, rank, step)
            x0 = batch["latents"].to(device, torch.float32, non_blocking=True)
            reference = batch["reference"].to(device, torch.float32, non_blocking=True)
            maps = batch["position_maps"].to(device, torch.float32, non_blocking=True)
            reference, maps = drop_conditions(reference, maps, cfg.p_drop_reference, cfg.p_drop_motion, gen)
            p_cond = cfg.p_condition_frames if cfg.stage == 2 else 0.0
            x_mask = conditional_frame_mask(x0.shape[0], x0.shape[2], p_cond, gen).to(device)
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                loss = diffusion.training_loss(net, x0, reference, maps, x_mask, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            _ema_update(ema, model, cfg.ema_decay)
            step += 1
            loss_value = _mean_across_ranks(loss.detach(), world)
            result.losses.append(loss_value)
            window_clips += x0.shape[0] * world
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                row = dict(step=step, loss=f"{loss_value:.6f}", grad_norm=f"{float(grad_norm):.4f}", lr=f"{lr:.3g}",
                           clips_per_s=f"{window_clips / max(now - window_start, 1e-9):.2f}",
                           elapsed_s=f"{now - start:.1f}")
                if writer is not None:
                    writer.writerow(row)
                    log_file.flush()
                _log(cfg, rank, f"step {step} loss {row['loss']} grad {row['grad_norm']} "
                                f"{row['clips_per_s']} clips/s")
                window_start, window_clips = now, 0
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _checkpoint(cfg, rank, world, ckpt_path, model, ema, opt, step, model_cfg)
                result.checkpoint = str(ckpt_path)
    finally:
        if log_file is not None:
            log_file.close()
    result.step = step
    result.model = model
    return result


def _check_same_model(ckpt: dict, model_cfg: ModelConfig, path: Path) -> None:
    if ckpt.get("model_config") != model_cfg.to_dict():
        name = (ckpt.get("model_config") or {}).get("name", "?")
        raise CheckpointError(f"checkpoint {path} holds a {name!r} model, not the {model_cfg.name!r} preset asked for")


def _optimizer_to(opt: torch.optim.Optimizer, device: torch.device) -> None:
    for state in opt.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and k != "step":
                state[k] = v.to(device)


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    e = list(ema.parameters())
    torch._foreach_lerp_(e, [p.detach() for p in model.parameters()], 1.0 - decay)


def _mean_across_ranks(value: torch.Tensor, world: int) -> float:
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return float(value)


def _checkpoint(cfg, rank, world, path, model, ema, opt, step, model_cfg) -> None:
    if rank == 0:
        _save(path, {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "stage": cfg.stage,
            "rng": _rng_state(),
            # One batch per step per rank: the step is each rank's reader position.
            "reader": {"batches": step, "seed": cfg.seed, "world_size": world,
                       "num_workers": cfg.num_workers, "batch_size": cfg.batch_size},
            "model_config": model_cfg.to_dict(),
            "train_config": json.dumps(asdict(cfg)),
        })
    if world > 1:
        dist.barrier()
