"""Animate a reference portrait with a driving video: clip-by-clip sampling with continuation.

The sampler is independent of how motion is extracted and how latents are decoded: the caller
passes ``motion_fn(reference_path, driving_path) -> MotionInputs`` (the lead wires it to the
pipeline) and ``decode_fn(latents (T, 4, h, w)) -> uint8 frames (T, H, W, 3)`` (for a real VAE:
:func:`make_vae_decode`). Each clip after the first starts with the previous clip's last frame
as a clean conditional frame, so clips join without a jump.

One frame rate end to end: the model learned motion per frame at the fps its clips were
sampled at (``train_fps`` in the checkpoint), so the driving video's maps are resampled to that
fps (nearest frame in time) and the output is written at it, lasting as long as the driving
video. A model with an fps embedding trained on several rates takes the nearest of them.
Samplers: built-in DDIM, or diffusers' DDIM / DPM-Solver++; bf16 autocast on GPU.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import PortraitModelError
from .diffusion import GaussianDiffusion, scheduler_sample
from .train import load_checkpoint, model_from_checkpoint


class SampleError(PortraitModelError):
    """Sampling inputs that cannot be used."""


@dataclass
class MotionInputs:
    reference_latent: np.ndarray | torch.Tensor  # (4, h, w), as stored in shards (scaled)
    position_maps: np.ndarray | torch.Tensor  # (N, 3, P, P), one per driving frame
    fps: float


MotionFn = Callable[[Path, Path], MotionInputs]
DecodeFn = Callable[[torch.Tensor], np.ndarray]


@torch.no_grad()
def generate_latents(
    model: torch.nn.Module,
    reference: torch.Tensor,
    maps: torch.Tensor,
    clip_frames: int,
    steps: int = 50,
    guidance: float = 1.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    scheduler: str = "ddim",
    fps: float | None = None,
) -> torch.Tensor:
    """(N, C, h, w) latents for N position maps, ``clip_frames`` at a time with continuation.

    ``scheduler``: "ddim" (built in) or a diffusers one ("diffusers-ddim", "dpm++"); ``fps``
    for a model with an fps embedding."""
    if clip_frames < 2:
        raise SampleError(f"clip length must be at least 2 frames for continuation, got {clip_frames}")
    if not 1 <= steps <= 1000:
        raise SampleError(f"--steps must be in 1..1000, got {steps}")
    diffusion = GaussianDiffusion()
    dev = torch.device(device)
    net = model
    if getattr(getattr(model, "cfg", None), "fps_embed", False):
        net = lambda *a: model(*a, fps=torch.full((a[0].shape[0],), float(fps or 0.0), device=dev))  # noqa: E731

    def run(shape, ref, motion, cond, x_mask, gen):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            if scheduler == "ddim":
                return diffusion.ddim_sample(net, shape, ref, motion, cond_latents=cond, x_mask=x_mask, steps=steps,
                                             guidance=guidance, generator=gen, device=device)
            name = "ddim" if scheduler == "diffusers-ddim" else scheduler
            return scheduler_sample(name, diffusion, net, shape, ref, motion, cond_latents=cond, x_mask=x_mask,
                                    steps=steps, guidance=guidance, generator=gen, device=device)

    gen = torch.Generator().manual_seed(seed)
    n = maps.shape[0]
    c, h, w = reference.shape
    ref = reference[None].to(device, torch.float32)
    out: list[torch.Tensor] = []
    last = None
    start = 0
    while start < n:
        first = start if last is None else start - 1  # overlap one frame: the conditional one
        stop = min(first + clip_frames, n)
        t = stop - first
        motion = maps[first:stop].transpose(0, 1)[None].to(device, torch.float32)
        x_mask = torch.ones(1, t, dtype=torch.bool, device=device)
        cond = None
        if last is not None:
            x_mask[:, 0] = False
            cond = torch.zeros(1, c, t, h, w, device=device)
            cond[:, :, 0] = last
        x = run((1, c, t, h, w), ref, motion, cond, x_mask, gen)[0].float()
        out.append(x if last is None else x[:, 1:])
        last = x[:, -1]
        start = stop
    return torch.cat(out, dim=1).transpose(0, 1)


def resample_indices(n: int, src_fps: float, dst_fps: float) -> np.ndarray:
    """Indices of the source frames nearest to times k / dst_fps, for as long as the source lasts."""
    if src_fps <= 0 or dst_fps <= 0:
        raise SampleError(f"frame rates must be positive, got {src_fps} and {dst_fps}")
    count = max(1, int(math.floor(n * dst_fps / src_fps + 1e-6)))
    return np.minimum(np.round(np.arange(count) * src_fps / dst_fps).astype(np.int64), n - 1)


def target_fps(train_fps: list[float], driving_fps: float) -> float:
    """The training fps nearest to the driving video's (the driving fps if none was recorded)."""
    if not train_fps:
        return driving_fps
    return min(train_fps, key=lambda f: abs(f - driving_fps))


def write_mp4(frames: np.ndarray, path: str | Path, fps: float) -> Path:
    """uint8 (T, H, W, 3) RGB -> H.264 mp4 (yuv420p) through PyAV."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise SampleError(f"decoded frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    _, h, w, _ = frames.shape
    frames = frames[:, : h - h % 2, : w - w % 2]  # yuv420p needs even sides
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_vae_decode(vae: str | Path, device: str = "cpu", scaling_factor: float | None = None) -> DecodeFn:
    """A decode_fn from a local diffusers AutoencoderKL folder (never downloads)."""
    from diffusers import AutoencoderKL

    if not Path(vae).exists():
        raise SampleError(f"VAE weights not found at {vae} (set --vae to a local diffusers VAE folder)")
    model = AutoencoderKL.from_pretrained(str(vae), local_files_only=True, use_safetensors=True).to(device).eval()
    factor = scaling_factor or model.config.get("scaling_factor", 0.18215)
    shift = model.config.get("shift_factor") or 0.0

    @torch.no_grad()
    def decode(latents: torch.Tensor) -> np.ndarray:
        frames = []
        for chunk in latents.split(8):
            img = model.decode(chunk.to(device, model.dtype) / factor + shift).sample
            frames.append(((img.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu())
        return torch.cat(frames).numpy()

    return decode


def sample_video(
    checkpoint: str | Path,
    reference: str | Path,
    driving: str | Path,
    out: str | Path,
    motion_fn: MotionFn,
    decode_fn: DecodeFn,
    steps: int = 50,
    guidance: float = 1.0,
    clip_frames: int | None = None,
    use_ema: bool = True,
    seed: int = 0,
    device: str = "auto",
    scheduler: str = "ddim",
) -> Path:
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    model = model_from_checkpoint(checkpoint, use_ema=use_ema, device=dev)
    ckpt = load_checkpoint(checkpoint)
    train_cfg = json.loads(ckpt.get("train_config") or "{}")
    inputs = motion_fn(Path(reference), Path(driving))
    ref = torch.as_tensor(np.asarray(inputs.reference_latent, dtype=np.float32))
    maps = torch.as_tensor(np.asarray(inputs.position_maps, dtype=np.float32))
    if ref.dim() != 3 or maps.dim() != 4 or maps.shape[0] == 0:
        raise SampleError(f"motion_fn must give a (C, h, w) reference latent and (N, 3, P, P) maps, "
                          f"got {tuple(ref.shape)} and {tuple(maps.shape)}")
    size = train_cfg.get("latent_size")
    if size and ref.shape[-1] != size:  # the model was trained on resized latents (test runs)
        ref = F.interpolate(ref[None], size=(size, size), mode="area")[0]
    fps = target_fps([float(f) for f in ckpt.get("train_fps") or []], float(inputs.fps))
    maps = maps[torch.from_numpy(resample_indices(maps.shape[0], float(inputs.fps), fps))]
    clip = clip_frames or model.cfg.num_frames
    latents = generate_latents(model, ref, maps, clip, steps=steps, guidance=guidance, seed=seed, device=dev,
                               scheduler=scheduler, fps=fps)
    frames = decode_fn(latents.cpu())
    if len(frames) != maps.shape[0]:
        raise SampleError(f"decode_fn returned {len(frames)} frames for {maps.shape[0]} latents")
    return write_mp4(frames, out, fps)
