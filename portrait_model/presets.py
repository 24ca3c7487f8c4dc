"""Model sizes. ``paper`` is RealPortrait's (STDiT2-XL/2 proportions); ``tiny`` is for CPU tests.

The motion-mapping module downsamples position maps by 8 with three stride-2 convolutions
(paper: 512 -> 64). Stored maps are smaller (64 by default); the module resizes any incoming
map bilinearly to ``motion_map_size = 8 * latent_size`` first, so the stride pattern is the
paper's at every preset and the reader never has to resize maps.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from . import PortraitModelError


@dataclass(frozen=True)
class ModelConfig:
    name: str
    depth: int  # backbone blocks
    hidden: int
    heads: int
    control_depth: int  # ControlNet copies of backbone blocks 0..control_depth-1
    mlp_ratio: float = 4.0
    in_channels: int = 4  # VAE latent channels
    patch: tuple[int, int, int] = (1, 2, 2)
    latent_size: int = 64  # latent side the model is built for (512 px / 8)
    num_frames: int = 16  # stage-2 clip length (sampling window)
    map_channels: int = 3  # position map: x, y, validity
    motion_channels: tuple[int, int] = (16, 32)  # widths of the first two motion convolutions
    qk_norm: bool = True
    fps_embed: bool = False  # add an fps embedding to the temporal modulation (clips of mixed fps)
    # Orderings of Open-Sora 1.1 STDiT2, kept by weights converted from it (convert.py):
    rope_before_qk_norm: bool = False  # rotate q/k before their RMSNorm
    pos_embed_x_first: bool = False  # position table: x half before y half

    @property
    def motion_map_size(self) -> int:
        return 8 * self.latent_size

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch"] = list(self.patch)
        d["motion_channels"] = list(self.motion_channels)
        return d

    def shape_dict(self) -> dict:
        """The fields that decide parameter shapes (what a checkpoint must match)."""
        d = self.to_dict()
        for k in ("name", "rope_before_qk_norm", "pos_embed_x_first", "num_frames"):
            d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["patch"] = tuple(d["patch"])
        d["motion_channels"] = tuple(d["motion_channels"])
        return cls(**d)


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(name="paper", depth=28, hidden=1152, heads=16, control_depth=13),
    # Same proportions as the paper (control copies about half the backbone), CPU-sized.
    "tiny": ModelConfig(
        name="tiny", depth=4, hidden=64, heads=4, control_depth=2, latent_size=16, num_frames=8,
        motion_channels=(8, 16),
    ),
    # tiny with a width Open-Sora's size embedders accept (hidden % 3 == 0): converter tests.
    "tiny-opensora": ModelConfig(
        name="tiny-opensora", depth=4, hidden=96, heads=4, control_depth=2, latent_size=16, num_frames=8,
        motion_channels=(8, 16),
    ),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise PortraitModelError(f"unknown model preset {name!r} (known: {', '.join(PRESETS)})")
    cfg = replace(PRESETS[name], **overrides) if overrides else PRESETS[name]
    if cfg.hidden % cfg.heads or cfg.head_dim % 2:
        raise PortraitModelError(f"hidden {cfg.hidden} must split into {cfg.heads} heads of even size")
    if not 0 < cfg.control_depth < cfg.depth:
        raise PortraitModelError(f"control_depth must be in 1..{cfg.depth - 1}, got {cfg.control_depth}")
    return cfg
