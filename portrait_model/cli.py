"""``portrait train`` and ``portrait sample`` subcommands (plugged into pipeline/cli.py).

Each subcommand sets ``func(args) -> int``; errors of this package are PortraitModelError
subclasses with one-line messages, for the main CLI to print.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from typing import Callable

from . import PortraitModelError
from .presets import PRESETS


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train the RealPortrait DiT on a build's shards")
    p.add_argument("--data", help="build output folder (catalog.duckdb + shards/)")
    p.add_argument("--run-dir", help="folder for checkpoints and train_log.csv")
    p.add_argument("--stage", type=int, choices=(1, 2), default=1)
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8, help="per GPU / process")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.9999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=4, help="DataLoader workers per process")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--init-from", help="stage 2: the stage-1 checkpoint to start from")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="ignore run-dir's last checkpoint")
    p.add_argument("--frames", type=int, help="stage-2 clip length (default: the preset's)")
    p.add_argument("--latent-size", type=int, help="resize stored latents (CPU test runs only)")
    p.add_argument("--samples-per-clip", type=int, default=1)
    p.add_argument("--p-drop-reference", type=float, default=0.05)
    p.add_argument("--p-drop-motion", type=float, default=0.05)
    p.add_argument("--p-condition-frames", type=float, default=0.5)
    p.add_argument("--include-eval", action="store_true", help="also train on the evaluation split")
    p.add_argument("--include-random-weights", action="store_true",
                   help="also train on clips built with random-weights models")
    p.add_argument("--dataset-weights", type=json.loads, help='JSON {"name": weight}; overrides the build config')
    p.add_argument("--device", default="auto")
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--ray", type=int, metavar="N", help="launch on a Ray cluster with N workers (Ray Train)")
    p.add_argument("--ray-address", help="Ray cluster address (default: RAY_ADDRESS or local)")
    p.add_argument("--dry-run", action="store_true", help="build the model on the meta device, print parameter counts")
    p.set_defaults(func=run_train_command)
    return p


def run_train_command(args) -> int:
    if args.dry_run:
        from .model import build_model, parameter_counts
        from .presets import get_preset

        counts = parameter_counts(build_model(get_preset(args.preset), device="meta"))
        print(json.dumps({"preset": args.preset, **counts}))
        return 0
    if not args.data or not args.run_dir:
        raise PortraitModelError("portrait train needs --data (a build folder) and --run-dir")
    from .train import TrainConfig, train

    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    if args.ray:
        from .ray_train import launch_ray_train

        launch_ray_train(cfg, num_workers=args.ray, address=args.ray_address)
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
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
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
                       clip_frames=args.clip_frames, use_ema=args.use_ema, seed=args.seed, device=device)
    print(out)
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
