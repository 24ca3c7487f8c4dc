"""Training loop: AdamW (fused on GPU) with LR warm-up, gradient clipping, EMA with warm-up,
bf16 autocast on GPU, gradient checkpointing (all blocks by default for the paper preset),
checkpoints written in the background that resume exactly, CSV log with the time waited for
data. DDP when launched by torchrun (or Ray Train: see ``ray_train.py``).

Exact resume: the per-step randomness (timesteps, noise, condition dropping, frame masks) comes
from a generator seeded by (seed, rank, step), and the reader restarts at the number of batches
already consumed; the checkpoint also holds the global RNG states, model, EMA and optimizer.
"""
from __future__ import annotations

import copy
import csv
import functools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import PortraitModelError
from .checkpoints import (  # noqa: F401 - re-exported: the trainer's public checkpoint API
    CHECKPOINT,
    CheckpointError,
    CheckpointWriter,
    _cpu_copy,
    _rng_state,
    _set_rng_state,
    export_ema,
    load_checkpoint,
    model_from_checkpoint,
)
from .diffusion import GaussianDiffusion, conditional_frame_mask, drop_conditions
from .model import RealPortraitDiT, build_model, parameter_counts
from .presets import ModelConfig, get_preset
from .reader import ShardReader

LOG_FILE = "train_log.csv"
LOG_FIELDS = ["step", "loss", "grad_norm", "lr", "clips_per_s", "data_wait_ms", "peak_mem_gb", "elapsed_s"]


@dataclass
class TrainConfig:
    data: str  # build output: a local folder or a URI (s3://bucket/out), catalog.duckdb + shards/
    run_dir: str  # checkpoints and log
    stage: int = 1
    preset: str = "tiny"
    steps: int = 1000
    batch_size: int = 8  # per rank
    lr: float = 1e-4
    warmup_steps: int | None = None  # linear LR warm-up; None: 1000 for the paper preset, else 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)) after n EMA updates
    ema_reset: bool = False  # with init_from: restart the EMA from the initial weights
    seed: int = 0
    num_workers: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # periodic checkpoint-<step>.pt files kept besides checkpoint-last.pt
    save_checkpoints: bool = True  # False: write none (benchmarks)
    log_every: int = 10
    grad_checkpointing: str = "auto"  # auto (paper: all blocks, else none) | all | none | N first blocks
    zero: bool = False  # DDP: shard the AdamW moments across ranks (ZeRO-1, ZeroRedundancyOptimizer)
    init_from: str | None = None  # stage 2: the stage-1 checkpoint to start from (or a converted one)
    init_from_opensora: str | None = None  # an Open-Sora 1.1 STDiT2 checkpoint (see convert.py)
    resume: bool = True  # continue from run_dir/checkpoint-last.pt when present
    frames: int | None = None  # stage-2 clip length; default: the preset's num_frames
    latent_size: int | None = None  # resize stored latents (CPU test runs only)
    samples_per_clip: int = 1
    # auto: stage 1 random reference/driving pairs (maps composed), stage 2 the stored reference
    # frame; stored | random: either, in both stages
    reference: str = "auto"
    mix: str = "per-dataset"  # per-dataset: each dataset its weight's share; per-clip: each clip its weight
    max_open_shards: int = 32  # open shard files per loader process (LRU)
    skip_bad_shards: bool = False  # leave bad shards out with a warning instead of stopping
    p_drop_reference: float = 0.05
    p_drop_motion: float = 0.05
    p_drop_both: float = 0.1  # the unconditional branch of guidance
    p_condition_frames: float = 0.5  # stage 2: share of clips with clean first/last frames
    include_eval: bool = False
    include_random_weights: bool = False
    one_per_dup_group: bool = False  # one clip per duplicate group (clips.dup_group)
    dataset_weights: dict[str, float] | None = None
    device: str = "auto"
    bf16: bool = True  # autocast on CUDA only
    quiet: bool = False


def checkpoint_blocks(setting: str | int | bool, model_cfg: ModelConfig) -> int:
    """How many backbone blocks (from the first) recompute activations in backward."""
    value = str(setting).lower()
    if value == "auto":
        return model_cfg.depth if model_cfg.name == "paper" else 0
    if value in ("all", "true"):
        return model_cfg.depth
    if value in ("none", "false", "0"):
        return 0
    if value.isdigit() and int(value) <= model_cfg.depth:
        return int(value)
    raise PortraitModelError(f"--grad-checkpointing must be auto, all, none or 0..{model_cfg.depth}, got {setting!r}")


def warmup_steps(cfg: TrainConfig) -> int:
    return cfg.warmup_steps if cfg.warmup_steps is not None else (1000 if cfg.preset == "paper" else 0)


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


# ---- the loop --------------------------------------------------------------------------------
def _log(cfg: TrainConfig, rank: int, msg: str) -> None:
    if rank == 0 and not cfg.quiet:
        print(msg, flush=True)


def _open_log(path: Path, resume_step: int):
    """CSV log; rows past the resumed step (from an interrupted run) are dropped."""
    rows = []
    if path.is_file() and resume_step > 0:
        with open(path, newline="") as f:
            rows = [{k: r.get(k, "") for k in LOG_FIELDS} for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
    f = open(path, "w", newline="")  # noqa: SIM115 - the caller writes to it for the whole run
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


def _model_config(cfg: TrainConfig, preset: ModelConfig, source: dict | None, path: str | None,
                  mixed_fps: bool) -> ModelConfig:
    """The preset's shapes; orderings and fps embedding from the checkpoint we start from."""
    if source is None:
        return replace(preset, fps_embed=mixed_fps)
    saved = ModelConfig.from_dict(source["model_config"])
    if saved.shape_dict() != preset.shape_dict():
        raise CheckpointError(f"checkpoint {path} holds a {saved.name!r} model, not the {preset.name!r} preset "
                              "asked for")
    return replace(saved, name=preset.name, num_frames=preset.num_frames)


@dataclass
class _Start:
    """What a run starts from, one of three ways or none: this run's own last checkpoint
    (``resume``: continue exactly where it stopped), another run's checkpoint (``init``: e.g.
    stage 2 from stage 1; weights and EMA, step 0), an Open-Sora checkpoint (``opensora``: a
    path; weights only), or random weights when all three are empty."""
    checkpoint: Path  # this run's checkpoint-last.pt
    resume: dict | None = None
    init: dict | None = None
    opensora: str | None = None

    @property
    def step(self) -> int:
        return int(self.resume["step"]) if self.resume is not None else 0


@dataclass
class _Run:
    """What the steps of one run share; ``step`` and ``ema_steps`` advance as it trains."""
    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    model_cfg: ModelConfig
    model: RealPortraitDiT
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    train_fps: list
    step: int
    ema_steps: int
    net: torch.nn.Module | None = None  # the model, DDP-wrapped when world > 1
    diffusion: GaussianDiffusion | None = None


def _train(cfg: TrainConfig, rank: int, world: int, device: torch.device) -> TrainResult:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    preset = get_preset(cfg.preset)
    checkpoint = run_dir / CHECKPOINT
    resume = _own_checkpoint(cfg, checkpoint)
    reader = _open_reader(cfg, preset, rank, world, int(resume["step"]) if resume is not None else 0)
    train_fps = reader.video_fps()
    start = _starting_point(cfg, checkpoint, resume)
    model_cfg = _start_model_config(cfg, rank, preset, start, train_fps)
    run = _build_run(cfg, rank, world, device, model_cfg, start, train_fps)
    loader = torch.utils.data.DataLoader(
        reader, batch_size=None, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
    )
    run.net = _wrap_for_ranks(run.model, world, device)
    run.diffusion = GaussianDiffusion()
    return _run_steps(run, loader, run_dir)


# ---- where the run starts ----------------------------------------------------------------------
def _own_checkpoint(cfg: TrainConfig, path: Path) -> dict | None:
    """This run's last checkpoint when it resumes, checked to be of this stage."""
    resume = load_checkpoint(path) if cfg.resume and path.is_file() else None
    if resume is not None and int(resume.get("stage", cfg.stage)) != cfg.stage:
        raise CheckpointError(f"{path} is a stage-{resume.get('stage')} checkpoint and this is a stage-"
                              f"{cfg.stage} run: use a new --run-dir (stage 2: --init-from that checkpoint)")
    return resume


def _open_reader(cfg: TrainConfig, preset: ModelConfig, rank: int, world: int, step: int) -> ShardReader:
    """This rank's reader, positioned after the ``step`` batches already consumed."""
    reader = ShardReader(
        cfg.data, cfg.stage, cfg.batch_size, seed=cfg.seed, frames=cfg.frames or preset.num_frames,
        samples_per_clip=cfg.samples_per_clip, latent_size=cfg.latent_size,
        include_eval=cfg.include_eval, include_random_weights=cfg.include_random_weights,
        dataset_weights=cfg.dataset_weights, rank=rank, world_size=world, start_batch=step,
        reference=cfg.reference, mix=cfg.mix, max_open_shards=cfg.max_open_shards,
        skip_bad_shards=cfg.skip_bad_shards, one_per_dup_group=cfg.one_per_dup_group,
    )
    reader.first_batch()  # fail here, in one line, on unreadable data (e.g. no latents)
    return reader


def _starting_point(cfg: TrainConfig, checkpoint: Path, resume: dict | None) -> _Start:
    """Resume wins over --init-from, which wins over --init-from-opensora."""
    if resume is not None:
        return _Start(checkpoint, resume=resume)
    if cfg.init_from:
        return _Start(checkpoint, init=load_checkpoint(cfg.init_from))
    return _Start(checkpoint, opensora=cfg.init_from_opensora)


def _start_model_config(cfg: TrainConfig, rank: int, preset: ModelConfig, start: _Start,
                        train_fps: list) -> ModelConfig:
    """The model's configuration for this start; warns when mixed frame rates meet a model
    without an fps embedding."""
    mixed_fps = len(train_fps) > 1
    if start.opensora:
        from .convert import opensora_config, read_state_dict

        model_cfg = replace(opensora_config(read_state_dict(start.opensora), cfg.preset, mixed_fps),
                            num_frames=preset.num_frames)
    else:
        path = str(start.checkpoint if start.resume is not None else cfg.init_from)
        model_cfg = _model_config(cfg, preset, start.resume or start.init, path, mixed_fps)
    if mixed_fps and not model_cfg.fps_embed:
        _log(cfg, rank, f"warning: clips of {len(train_fps)} frame rates {train_fps} and a model without an fps "
                        "embedding: temporal motion speed will be ambiguous")
    return model_cfg


def _load_start_weights(cfg: TrainConfig, rank: int, world: int, model: RealPortraitDiT, start: _Start,
                        train_fps: list) -> int:
    """Loads the starting weights into ``model``; returns the EMA updates already made."""
    if start.resume is not None:
        model.load_state_dict(start.resume["model"])
        pos = start.resume["reader"]
        if (pos["world_size"], pos["num_workers"], pos["batch_size"]) != (world, cfg.num_workers, cfg.batch_size):
            _log(cfg, rank, "warning: world size, workers or batch size changed: the reader position is approximate")
        _log(cfg, rank, f"resumed from {start.checkpoint} at step {start.step}")
        return int(start.resume.get("ema_steps", start.step))
    if start.init is not None:
        model.load_state_dict(start.init["model"])
        _log(cfg, rank, f"initialised from stage-{start.init.get('stage', '?')} checkpoint {cfg.init_from}")
    elif start.opensora:
        from .convert import load_opensora

        report = load_opensora(model, start.opensora, fps=train_fps[0] if train_fps else 12.5)
        _log(cfg, rank, f"initialised from Open-Sora checkpoint {report['source']} (sha256 {report['sha256'][:12]})")
    elif cfg.stage == 2:
        _log(cfg, rank, "warning: stage 2 without --init-from starts from random weights")
    return 0


def _start_ema(cfg: TrainConfig, model: RealPortraitDiT, start: _Start, ema_steps: int) -> tuple[torch.nn.Module, int]:
    """The EMA copy of ``model``, with the starting checkpoint's EMA weights unless reset."""
    ema = copy.deepcopy(model).requires_grad_(False)
    if start.resume is not None:
        ema.load_state_dict(start.resume["ema"])
    elif start.init is not None and not cfg.ema_reset:
        ema.load_state_dict(start.init["ema"])
        ema_steps = int(start.init.get("ema_steps", start.init.get("step", 0)))
    return ema, ema_steps


# ---- model, EMA and optimiser ------------------------------------------------------------------
def _build_run(cfg: TrainConfig, rank: int, world: int, device: torch.device, model_cfg: ModelConfig,
               start: _Start, train_fps: list) -> _Run:
    """Model, EMA and optimiser on ``device``, in the state the start gives them."""
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(model_cfg)
    model.set_grad_checkpointing(checkpoint_blocks(cfg.grad_checkpointing, model_cfg))
    ema_steps = _load_start_weights(cfg, rank, world, model, start, train_fps)
    ema, ema_steps = _start_ema(cfg, model, start, ema_steps)
    model.to(device)
    ema.to(device)
    opt = _make_optimizer(cfg, model, world, device)
    if start.resume is not None:
        opt.load_state_dict(start.resume["optimizer"])
        _set_rng_state(start.resume["rng"])
    counts = parameter_counts(model)
    _log(cfg, rank, f"model {model_cfg.name}: {counts['total'] / 1e6:.2f}M parameters "
                    f"(backbone {counts['backbone'] / 1e6:.2f}M, control {counts['control'] / 1e6:.2f}M), "
                    f"{model.checkpoint_blocks} checkpointed blocks")
    return _Run(cfg, rank, world, device, model_cfg, model, ema, opt, train_fps, start.step, ema_steps)


def _make_optimizer(cfg: TrainConfig, model: RealPortraitDiT, world: int,
                    device: torch.device) -> torch.optim.Optimizer:
    """Fused AdamW (one kernel for all parameters) where the parameters live on a GPU; with
    ``zero`` each rank keeps the moments of its share of the parameters only."""
    adam = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    if cfg.zero and world > 1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW, **adam)
    return torch.optim.AdamW(model.parameters(), **adam)


def _wrap_for_ranks(model: RealPortraitDiT, world: int, device: torch.device) -> torch.nn.Module:
    if world == 1:
        return model
    # Gradients as views into the all-reduce buckets: no second copy of the gradients.
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True)


# ---- the steps ---------------------------------------------------------------------------------
class _Progress:
    """The CSV log (rank 0) and the losses, clips and data wait of the steps since its last row."""

    def __init__(self, run: _Run, run_dir: Path, result: TrainResult):
        self.run, self.result = run, result
        self.log_file, self.writer = _open_log(run_dir / LOG_FILE, run.step) if run.rank == 0 else (None, None)

    def start(self) -> None:
        self.started = self.window_start = time.perf_counter()
        self.clips, self.wait, self.losses = 0, 0.0, []

    def add(self, loss: torch.Tensor, clips: int) -> None:
        self.losses.append(loss.detach())  # reduced (and synchronised) only when logged
        self.clips += clips

    def write(self, grad_norm: torch.Tensor, lr: float) -> None:
        run = self.run
        values = _mean_across_ranks(torch.stack(self.losses).float(), run.world)
        self.result.losses.extend(values)
        now = time.perf_counter()
        n = len(self.losses)
        peak = torch.cuda.max_memory_allocated(run.device) / 1e9 if run.device.type == "cuda" else 0.0
        row = dict(step=run.step, loss=f"{values[-1]:.6f}", grad_norm=f"{float(grad_norm):.4f}", lr=f"{lr:.3g}",
                   clips_per_s=f"{self.clips / max(now - self.window_start, 1e-9):.2f}",
                   data_wait_ms=f"{1000 * self.wait / n:.1f}", peak_mem_gb=f"{peak:.2f}",
                   elapsed_s=f"{now - self.started:.1f}")
        if self.writer is not None:
            self.writer.writerow(row)
            self.log_file.flush()
        _log(run.cfg, run.rank, f"step {run.step} loss {row['loss']} grad {row['grad_norm']} "
                                f"{row['clips_per_s']} clips/s, data wait {row['data_wait_ms']} ms/step")
        self.window_start, self.clips, self.wait, self.losses = now, 0, 0.0, []

    def close(self) -> None:
        if self.log_file is not None:
            self.log_file.close()


def _run_steps(run: _Run, loader: torch.utils.data.DataLoader, run_dir: Path) -> TrainResult:
    """Steps until ``cfg.steps``, logging every ``log_every`` and checkpointing every
    ``checkpoint_every`` steps and at the end."""
    cfg = run.cfg
    progress = _Progress(run, run_dir, TrainResult(step=run.step, log=str(run_dir / LOG_FILE)))
    saver = CheckpointWriter(run_dir, cfg.keep_checkpoints) if run.rank == 0 else None
    result = progress.result
    batches = iter(loader)
    progress.start()
    try:
        run.model.train()
        while run.step < cfg.steps:
            waited = time.perf_counter()
            batch, x0, reference, maps = _batch_on_device(next(batches), run.device)
            progress.wait += time.perf_counter() - waited
            loss, grad_norm, lr = _train_step(run, batch, x0, reference, maps)
            progress.add(loss, x0.shape[0] * run.world)
            if run.step % cfg.log_every == 0 or run.step == cfg.steps:
                progress.write(grad_norm, lr)
            if cfg.save_checkpoints and (run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps):
                saved = _save_checkpoint(run, saver)
                if saved is not None:
                    result.checkpoint = saved
        if saver is not None:
            saver.close()
    finally:
        progress.close()
    result.step = run.step
    result.model = run.model
    return result


def _batch_on_device(batch: dict, device: torch.device) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch with its latents, reference and position maps as float32 on ``device``."""
    x0 = batch["latents"].to(device, torch.float32, non_blocking=True)
    reference = batch["reference"].to(device, torch.float32, non_blocking=True)
    maps = batch["position_maps"].to(device, torch.float32, non_blocking=True)
    return batch, x0, reference, maps


def _learning_rate(cfg: TrainConfig, step: int) -> float:
    warmup = warmup_steps(cfg)
    return cfg.lr * min(1.0, (step + 1) / warmup) if warmup else cfg.lr


def _train_step(run: _Run, batch: dict, x0: torch.Tensor, reference: torch.Tensor,
                maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One optimiser and EMA step on one batch: (loss, gradient norm, learning rate)."""
    cfg, device = run.cfg, run.device
    gen = _step_generator(cfg.seed, run.rank, run.step)
    reference, maps = drop_conditions(reference, maps, cfg.p_drop_reference, cfg.p_drop_motion,
                                      cfg.p_drop_both, generator=gen)
    p_cond = cfg.p_condition_frames if cfg.stage == 2 else 0.0
    x_mask = conditional_frame_mask(x0.shape[0], x0.shape[2], p_cond, gen).to(device)
    lr = _learning_rate(cfg, run.step)
    for group in run.opt.param_groups:
        group["lr"] = lr
    call = run.net
    if run.model_cfg.fps_embed:
        call = functools.partial(run.net, fps=batch["fps"].to(device, torch.float32))
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.bf16):
        loss = run.diffusion.training_loss(call, x0, reference, maps, x_mask, generator=gen)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.opt.step()
    decay = min(cfg.ema_decay, (1 + run.ema_steps) / (10 + run.ema_steps)) if cfg.ema_warmup else cfg.ema_decay
    _ema_update(run.ema, run.model, decay)
    run.ema_steps += 1
    run.step += 1
    return loss, grad_norm, lr


def _save_checkpoint(run: _Run, saver: CheckpointWriter | None) -> str | None:
    """Every rank takes part (sharded moments, barrier); rank 0 writes. Its path, on rank 0."""
    if hasattr(run.opt, "consolidate_state_dict"):
        run.opt.consolidate_state_dict(to=0)  # every rank sends its shard of the moments
    payload = _checkpoint_payload(run.cfg, run.world, run.model, run.ema, run.opt, run.step, run.ema_steps,
                                  run.model_cfg, run.train_fps)
    saved = str(saver.save(run.step, payload)) if saver is not None else None
    if run.world > 1:
        dist.barrier()
    return saved


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    e = list(ema.parameters())
    torch._foreach_lerp_(e, [p.detach() for p in model.parameters()], 1.0 - decay)


def _mean_across_ranks(values: torch.Tensor, world: int) -> list[float]:
    if world > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= world
    return values.tolist()


def _checkpoint_payload(cfg, world, model, ema, opt, step, ema_steps, model_cfg, train_fps) -> dict | None:
    if dist.is_initialized() and dist.get_rank() != 0:
        return None
    return _cpu_copy({
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "ema_steps": ema_steps,
        "stage": cfg.stage,
        "rng": _rng_state(),
        # One batch per step per rank: the step is each rank's reader position.
        "reader": {"batches": step, "seed": cfg.seed, "world_size": world,
                   "num_workers": cfg.num_workers, "batch_size": cfg.batch_size},
        "model_config": model_cfg.to_dict(),
        "train_config": json.dumps(asdict(cfg)),
        "train_fps": list(train_fps),
    })
