"""Peak training memory per GPU, estimated from measured activation bytes per token.

The figure per token is *measured*, not guessed: one backbone block (with the reference
stream) and one control block of the chosen preset run forward under bf16 autocast on the CPU,
and every tensor autograd saves for backward is counted (``saved_tensors_hooks``, each storage
once). Saved bytes are linear in tokens, so three small runs give, per block, bytes per driving
token, per reference token and a constant (weight casts), which scale to any batch.

Estimate = states (fp32 weights, gradients, AdamW moments, EMA: 20 bytes per parameter)
+ activations (every block, or for checkpointed blocks only their fp32 inputs plus one block
recomputed in backward) + the motion mapper's activations, then 10% for allocator slack and
1.5 GB for the CUDA context and kernels' workspace.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from .layers import RotaryEmbedding
from .model import ControlBlock, MotionMapper, STDiT2Block
from .presets import ModelConfig

STATE_BYTES_PER_PARAM = 4 + 4 + 8 + 4  # weights, gradients, AdamW m and v, EMA (all fp32)
SLACK = 1.10
CONTEXT_BYTES = 1.5e9


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves while ``fn`` runs forward."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if t.device.type != "meta":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@dataclass(frozen=True)
class TokenBytes:
    backbone_token: float  # per driving token, one backbone block
    backbone_ref_token: float  # per reference token, one backbone block
    control_token: float  # per driving token, one control block
    mapper_frame: float  # motion mapper, per frame of position maps
    hidden: int


@lru_cache(maxsize=4)
def measure_token_bytes(cfg: ModelConfig, map_size: int = 64) -> TokenBytes:
    """Saved activation bytes per token of one block at ``cfg``'s width, bf16 autocast (CPU)."""
    torch.manual_seed(0)
    d = cfg.hidden
    block = STDiT2Block(cfg, RotaryEmbedding(cfg.head_dim))
    control = ControlBlock(block, 0, d)
    mapper = MotionMapper(cfg)

    def run(t: int, s: int, with_ref: bool, which: str) -> int:
        x = torch.randn(1, t, s, d, requires_grad=True)
        ref = torch.randn(1, 1, s, d, requires_grad=True) if with_ref else None
        mod = torch.randn(1, t, 6, d, requires_grad=True)
        mod_tmp = torch.randn(1, t, 3, d, requires_grad=True)
        ref_mod, ref_tmp = mod[:, :1], mod_tmp[:, :1]

        def go():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                if which == "control":
                    control(x, x.detach().clone().requires_grad_(), mod, mod_tmp)
                else:
                    block(x, mod, mod_tmp, ref, ref_mod, ref_tmp)

        return _saved_bytes(go)

    s1, s2 = 16, 36
    # bytes = const + a * (t * s) + b * s (reference tokens), from three runs.
    b11, b31, b12 = run(1, s1, True, "bb"), run(3, s1, True, "bb"), run(1, s2, True, "bb")
    a = (b31 - b11) / (2 * s1)
    per_s = (b12 - b11) / (s2 - s1)  # a + b
    c11, c31 = run(1, s1, False, "control"), run(3, s1, False, "control")

    def mapper_bytes(frames: int) -> int:
        maps = torch.rand(frames, 3, 1, map_size, map_size, requires_grad=True)
        return _saved_bytes(lambda: mapper(maps.transpose(0, 2), (cfg.latent_size, cfg.latent_size)))

    with torch.autocast("cpu", dtype=torch.bfloat16):
        m1, m2 = mapper_bytes(1), mapper_bytes(2)
    return TokenBytes(a, per_s - a, (c31 - c11) / (2 * s1), float(m2 - m1), d)


@dataclass
class MemoryEstimate:
    params: int
    tokens_per_sample: int
    states_gb: float
    activations_gb: float
    peak_gb: float

    def as_dict(self) -> dict:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def estimate_peak(cfg: ModelConfig, params: int, stage: int, batch: int, checkpoint_blocks: int,
                  frames: int | None = None, latent_size: int | None = None,
                  measured: TokenBytes | None = None) -> MemoryEstimate:
    """Peak bytes per GPU for one training step of ``batch`` samples per GPU."""
    m = measured or measure_token_bytes(cfg)
    t = (frames or cfg.num_frames) if stage == 2 else 1
    side = math.ceil((latent_size or cfg.latent_size) / cfg.patch[1])
    s = side * side
    main, ref = batch * t * s, batch * s
    full_bb = main * m.backbone_token + ref * m.backbone_ref_token
    full_ctrl = main * m.control_token
    kept_inputs = (main + ref) * cfg.hidden * 4  # fp32 residual stream saved at a checkpoint
    n = checkpoint_blocks
    ctrl_ckpt = min(max(n - 1, 0), cfg.control_depth)  # control block i runs beside backbone i+1
    act = (cfg.depth - n) * full_bb + (cfg.control_depth - ctrl_ckpt) * full_ctrl
    act += n * kept_inputs + ctrl_ckpt * main * cfg.hidden * 4
    if n:
        act += full_bb + full_ctrl  # one block recomputed at a time in backward
    act += batch * t * m.mapper_frame
    states = params * STATE_BYTES_PER_PARAM
    peak = (states + act) * SLACK + CONTEXT_BYTES
    return MemoryEstimate(params, t * s + s, states / 1e9, act / 1e9, peak / 1e9)
