"""The trainer's subcommands (plugged into pipeline/cli.py): ``train`` (which also registers
``convert-weights`` and ``export-ema``) and ``sample``.

Each subcommand sets ``func(args) -> int``; errors of this package are PortraitModelError
subclasses (so ``manifests.errors.PortraitError``s) with one-line messages, which the main CLI
catches once and prints.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import fields

from . import PortraitModelError
from .presets import PRESETS


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train the RealPortrait DiT on a build's shards")
    p.add_argument("--data", help="build output: a folder or a URI such as s3://bucket/out (catalog.duckdb + shards/)")
    p.add_argument("--run-dir", help="folder for checkpoints and train_log.csv")
    p.add_argument("--stage", type=int, choices=(1, 2), default=1)
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8, help="per GPU / process")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, help="linear LR warm-up (default: 1000 for paper, else 0)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.9999)
    p.add_argument("--no-ema-warmup", dest="ema_warmup", action="store_false",
                   help="full EMA decay from step 1 (default: min(decay, (1+n)/(10+n)))")
    p.add_argument("--ema-reset", action="store_true", help="with --init-from: restart the EMA from those weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=4, help="DataLoader workers per process")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--keep-checkpoints", type=int, default=3, help="periodic checkpoints kept besides the last")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--grad-checkpointing", default="auto", metavar="auto|all|none|N",
                   help="recompute the first N backbone blocks in backward (auto: all for paper, none for tiny)")
    p.add_argument("--zero", action="store_true", help="DDP: shard AdamW states across GPUs (ZeRO-1)")
    p.add_argument("--init-from", help="stage 2: the stage-1 checkpoint to start from (or a converted one)")
    p.add_argument("--init-from-opensora", metavar="PATH",
                   help="start from an Open-Sora 1.1 STDiT2 checkpoint (safetensors or .pth)")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="ignore run-dir's last checkpoint")
    p.add_argument("--frames", type=int, help="stage-2 clip length (default: the preset's)")
    p.add_argument("--latent-size", type=int, help="resize stored latents (CPU test runs only)")
    p.add_argument("--samples-per-clip", type=int, default=1)
    p.add_argument("--reference", choices=("auto", "stored", "random"), default="auto",
                   help="reference frame of video samples: the clip's stored one or a random other frame "
                        "(maps composed); auto: random in stage 1, stored in stage 2")
    p.add_argument("--fixed-reference", dest="reference", action="store_const", const="stored",
                   help="the same as --reference stored")
    p.add_argument("--mix", choices=("per-dataset", "per-clip"), default="per-dataset",
                   help="per-dataset: each dataset gets its weight's share of an epoch; per-clip: each clip "
                        "its dataset's weight (a dataset's share grows with its clips)")
    p.add_argument("--max-open-shards", type=int, default=32,
                   help="open shard files per loader process (at most a quarter of the descriptor limit)")
    p.add_argument("--skip-bad-shards", action="store_true",
                   help="leave missing or corrupted shards out with a warning (default: stop in one line)")
    p.add_argument("--p-drop-reference", type=float, default=0.05)
    p.add_argument("--p-drop-motion", type=float, default=0.05)
    p.add_argument("--p-drop-both", type=float, default=0.1, help="drop both conditions (guidance's unconditional)")
    p.add_argument("--p-condition-frames", type=float, default=0.5)
    p.add_argument("--include-eval", action="store_true", help="also train on the evaluation split")
    p.add_argument("--include-random-weights", action="store_true",
                   help="also train on clips built with random-weights models")
    p.add_argument("--one-per-dup-group", action="store_true",
                   help="train on one clip of each duplicate group (clips.dup_group: the same footage in "
                        "several datasets or files), the one with the most frames")
    p.add_argument("--dataset-weights", type=json.loads, help='JSON {"name": weight}; overrides the build config')
    p.add_argument("--device", default="auto")
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--ray", type=int, metavar="N", help="launch on a Ray cluster with N workers (Ray Train)")
    p.add_argument("--ray-address", help="Ray cluster address (default: RAY_ADDRESS or local)")
    p.add_argument("--max-failures", type=int, default=3, help="Ray Train: restarts from the last checkpoint")
    p.add_argument("--dry-run", action="store_true",
                   help="print parameter counts and the estimated peak memory per GPU for this stage and batch")
    p.set_defaults(func=run_train_command)
    add_weights_parsers(subparsers)
    return p


def add_weights_parsers(subparsers) -> None:
    p = subparsers.add_parser("convert-weights", help="Open-Sora 1.1 STDiT2 checkpoint -> a checkpoint for --init-from")
    p.add_argument("--opensora", required=True, help="Open-Sora checkpoint (.safetensors, or .pth read weights-only)")
    p.add_argument("--out", required=True, help="output .pt")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    p.add_argument("--fps", type=float, default=12.5, help="the training clips' fps (folded into the model)")
    p.add_argument("--fps-embed", action="store_true", help="keep Open-Sora's fps embedder (clips of mixed fps)")
    p.set_defaults(func=run_convert_command)
    p = subparsers.add_parser("export-ema", help="write the EMA weights of a checkpoint alone, for sampling")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    p.set_defaults(func=run_export_command)


def run_convert_command(args) -> int:
    from .convert import convert_weights

    print(convert_weights(args.opensora, args.out, preset=args.preset, fps=args.fps, fps_embed=args.fps_embed))
    return 0


def run_export_command(args) -> int:
    from .train import export_ema

    print(export_ema(args.checkpoint, args.out, args.dtype))
    return 0


def dry_run(preset: str, stage: int, batch: int, grad_checkpointing: str, frames: int | None = None) -> dict:
    """Parameters and estimated peak memory per GPU (see memory.py), as one dict."""
    from .memory import estimate_peak, measure_token_bytes
    from .model import build_model, parameter_counts
    from .presets import get_preset
    from .train import checkpoint_blocks

    cfg = get_preset(preset)
    counts = parameter_counts(build_model(cfg, device="meta"))
    blocks = checkpoint_blocks(grad_checkpointing, cfg)
    measured = measure_token_bytes(cfg)
    est = estimate_peak(cfg, counts["total"], stage, batch, blocks, frames=frames, measured=measured)
    return {"preset": preset, **counts, "stage": stage, "batch_per_gpu": batch, "checkpointed_blocks": blocks,
            "measured_kb_per_token": {"backbone_block": round(measured.backbone_token / 1e3, 1),
                                      "control_block": round(measured.control_token / 1e3, 1)},
            "estimated_gb_per_gpu": est.as_dict()}


def run_train_command(args) -> int:
    if args.dry_run:
        print(json.dumps(dry_run(args.preset, args.stage, args.batch_size, args.grad_checkpointing, args.frames)))
        return 0
    if not args.data or not args.run_dir:
        raise PortraitModelError("portrait train needs --data (a build folder or URI) and --run-dir")
    from .train import TrainConfig, train

    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    if args.ray:
        from .ray_train import launch_ray_train

        launch_ray_train(cfg, num_workers=args.ray, address=args.ray_address, max_failures=args.max_failures)
    else:
        train(cfg)
    return 0


def add_sample_parser(subparsers, motion_fn_factory: Callable | None = None) -> argparse.ArgumentParser:
    """``motion_fn_factory(args) -> motion_fn`` turns (reference, driving video) into
    (reference latent, position maps); the pipeline provides it."""
    p = subparsers.add_parser("sample", help="animate a reference image with a driving video")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--reference", required=True, help="reference image")
    p.add_argument("--driving", required=True, help="driving video")
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--vae", help="local diffusers VAE folder used to decode latents")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (at most 1000)")
    p.add_argument("--scheduler", choices=("ddim", "diffusers-ddim", "dpm++"), default="ddim",
                   help="ddim: built in; diffusers-ddim / dpm++: diffusers' schedulers (dpm++: ~20 steps)")
    p.add_argument("--guidance", type=float, default=1.0, help="guidance scale (1 = none)")
    p.add_argument("--clip-frames", type=int, help="frames per clip (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-ema", dest="use_ema", action="store_false")
    p.set_defaults(func=run_sample_command, motion_fn_factory=motion_fn_factory)
    return p


def run_sample_command(args) -> int:
    from .sample import make_vae_decode, sample_video

    if args.motion_fn_factory is None:
        raise PortraitModelError("portrait sample needs the pipeline's motion extractor (not wired in this CLI)")
    if not args.vae:
        raise PortraitModelError("portrait sample needs --vae: a local diffusers VAE folder to decode latents")
    device = args.device if args.device != "auto" else ("cuda" if _cuda() else "cpu")
    out = sample_video(args.checkpoint, args.reference, args.driving, args.out, args.motion_fn_factory(args),
                       make_vae_decode(args.vae, device=device), steps=args.steps, guidance=args.guidance,
                       scheduler=args.scheduler,
                       clip_frames=args.clip_frames, use_ema=args.use_ema, seed=args.seed, device=device)
    print(out)
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
