"""RealPortrait DiT: STDiT2-style backbone, in-DiT reference attention, motion ControlNet.

Tensors: latents ``(B, C, T, H, W)``; tokens ``(B, T, S, D)`` with S = tokens of one frame.

- Backbone block (Open-Sora 1.1 STDiT2 order, no text cross-attention): spatial self-attention
  over one frame's tokens, temporal self-attention over frames (rotary positions), MLP; each
  with adaLN-single modulation (a per-block table plus the global timestep projection).
- Reference attention: the clean reference latent is embedded by the same patch embedder and
  runs through every backbone block as a one-frame stream with timestep-0 modulation. In
  spatial attention each driving frame attends to its own tokens plus the reference's
  (keys/values concatenated); the reference attends only to itself. Temporal attention of the
  driving frames never sees the reference; the reference gets its own (one-frame) temporal
  attention so both streams stay in one feature space.
- Motion ControlNet (PixArt-delta style): position maps -> three convolutions (stride 2 each,
  from ``8 * latent_size`` to ``latent_size``) -> the shared patch embedder -> control copies of
  backbone blocks 0..K-1. Copy 0 takes ``x + before_proj(c)`` where x is backbone block 0's
  output; the output of control block i goes through a zero-initialised ``after_proj`` and is
  added to the input of backbone block i+1. Control copies run without the reference stream.
- Conditional frames: ``x_mask`` (B, T) bool, True = noised frame. False frames take the
  modulation computed from timestep 0 in every block and in the final layer.
- Conditioning offsets: ``t_spatial_offset`` / ``t_temporal_offset`` are constant vectors added
  to the timestep embedding before ``t_block`` / ``t_block_temp`` (zero unless converted from
  Open-Sora, whose size/aspect/length/fps embeddings are folded into them for 512 px clips).
  With ``fps_embed`` an fps embedding is added to the temporal one (clips of mixed fps).
- Memory: ``set_grad_checkpointing(n)`` recomputes the first n backbone blocks (and the control
  blocks that run beside them) in the backward pass; position tables are cached per device.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import Attention, Mlp, PatchEmbed3D, RotaryEmbedding, TimestepEmbedder, modulate, sincos_2d
from .presets import ModelConfig


class STDiT2Block(nn.Module):
    def __init__(self, cfg: ModelConfig, rope: RotaryEmbedding):
        super().__init__()
        d = cfg.hidden
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, cfg.heads, qk_norm=cfg.qk_norm)
        self.norm_temp = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn_temp = Attention(
            d, cfg.heads, qk_norm=cfg.qk_norm, rope=rope, rope_before_norm=cfg.rope_before_qk_norm
        )
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(d, cfg.mlp_ratio)
        self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)
        self.scale_shift_table_temporal = nn.Parameter(torch.randn(3, d) / d**0.5)

    def _params(self, mod: torch.Tensor, mod_tmp: torch.Tensor):
        """Per-frame adaLN parameters, each (B, T, 1, D)."""
        spatial = (mod + self.scale_shift_table).unsqueeze(3).unbind(2)
        temporal = (mod_tmp + self.scale_shift_table_temporal).unsqueeze(3).unbind(2)
        return spatial, temporal

    def _temporal(self, x: torch.Tensor, shift, scale, gate) -> torch.Tensor:
        b, t, s, d = x.shape
        h = modulate(self.norm_temp(x), shift, scale).transpose(1, 2).reshape(b * s, t, d)
        out = self.attn_temp(h).view(b, s, t, d).transpose(1, 2)
        return x + gate * out

    def _mlp(self, x: torch.Tensor, shift, scale, gate) -> torch.Tensor:
        return x + gate * self.mlp(modulate(self.norm2(x), shift, scale))

    def forward(self, x, mod, mod_tmp, ref=None, ref_mod=None, ref_mod_tmp=None):
        """x: (B, T, S, D); mod (B, T, 6, D); mod_tmp (B, T, 3, D); ref: (B, 1, S_r, D) or None."""
        b, t, s, d = x.shape
        (sh_msa, sc_msa, g_msa, sh_mlp, sc_mlp, g_mlp), (sh_t, sc_t, g_t) = self._params(mod, mod_tmp)
        q, k, v = self.attn.qkv(modulate(self.norm1(x), sh_msa, sc_msa).reshape(b * t, s, d))
        if ref is not None:
            (r_sh, r_sc, r_g, r_sh_mlp, r_sc_mlp, r_g_mlp), (r_sh_t, r_sc_t, r_g_t) = self._params(ref_mod, ref_mod_tmp)
            s_r = ref.shape[2]
            qr, kr, vr = self.attn.qkv(modulate(self.norm1(ref), r_sh, r_sc).reshape(b, s_r, d))
            # Every driving frame also attends to the reference frame's keys and values.
            k = torch.cat([k, kr.repeat_interleave(t, dim=0)], dim=2)
            v = torch.cat([v, vr.repeat_interleave(t, dim=0)], dim=2)
            ref = ref + r_g * self.attn.attend(qr, kr, vr).view(b, 1, s_r, d)
            ref = self._temporal(ref, r_sh_t, r_sc_t, r_g_t)
            ref = self._mlp(ref, r_sh_mlp, r_sc_mlp, r_g_mlp)
        x = x + g_msa * self.attn.attend(q, k, v).view(b, t, s, d)
        x = self._temporal(x, sh_t, sc_t, g_t)
        x = self._mlp(x, sh_mlp, sc_mlp, g_mlp)
        return x, ref


class ControlBlock(nn.Module):
    """A trainable copy of a backbone block with zero-initialised input/output projections."""

    def __init__(self, block: STDiT2Block, index: int, dim: int):
        super().__init__()
        self.copied = copy.deepcopy(block)
        self.before_proj = nn.Linear(dim, dim) if index == 0 else None
        self.after_proj = nn.Linear(dim, dim)
        for proj in (self.before_proj, self.after_proj):
            if proj is not None:
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)

    def forward(self, x, c, mod, mod_tmp):
        if self.before_proj is not None:
            c = x + self.before_proj(c)
        c, _ = self.copied(c, mod, mod_tmp)
        return c, self.after_proj(c)


class MotionMapper(nn.Module):
    """Position maps (B, 3, T, P, P) -> latent-shaped motion features (B, C, T, h, w).

    Maps are resized bilinearly to ``8 * latent_size`` (the paper's 512 for 64 latents), then
    three 3x3 stride-2 convolutions bring them to the latent grid.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c1, c2 = cfg.motion_channels
        self.size = cfg.motion_map_size
        self.convs = nn.Sequential(
            nn.Conv2d(cfg.map_channels, c1, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c2, cfg.in_channels, 3, stride=2, padding=1),
        )

    def forward(self, maps: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
        b, c, t, p, q = maps.shape
        frames = maps.transpose(1, 2).reshape(b * t, c, p, q)
        target = (latent_hw[0] * 8, latent_hw[1] * 8)
        if (p, q) != target:
            frames = F.interpolate(frames, size=target, mode="bilinear", align_corners=False)
        out = self.convs(frames)
        return out.view(b, t, *out.shape[1:]).transpose(1, 2)


class FinalLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.hidden
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(d, cfg.patch[0] * cfg.patch[1] * cfg.patch[2] * cfg.in_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, d) / d**0.5)

    def forward(self, x: torch.Tensor, t_frame: torch.Tensor) -> torch.Tensor:
        """x (B, T, S, D); t_frame (B, T, D): timestep embedding of each frame."""
        shift, scale = (self.scale_shift_table[None, None] + t_frame[:, :, None]).unsqueeze(3).unbind(2)
        return self.linear(modulate(self.norm(x), shift, scale))


class RealPortraitDiT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.checkpoint_blocks = 0  # backbone blocks 0..n-1 (and their control blocks) recomputed
        self._pos_cache: dict = {}
        self.x_embedder = PatchEmbed3D(cfg.patch, cfg.in_channels, d)
        self.t_embedder = TimestepEmbedder(d)
        self.fps_embedder = TimestepEmbedder(d) if cfg.fps_embed else None
        self.register_buffer("t_spatial_offset", torch.zeros(d))
        self.register_buffer("t_temporal_offset", torch.zeros(d))
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.t_block_temp = nn.Sequential(nn.SiLU(), nn.Linear(d, 3 * d))
        rope = RotaryEmbedding(cfg.head_dim)
        self.blocks = nn.ModuleList(STDiT2Block(cfg, rope) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(cfg)
        self._init_backbone()
        self.motion_mapper = MotionMapper(cfg)
        # Copies are taken after init, so a fresh control block equals its backbone block.
        self.control_blocks = nn.ModuleList(ControlBlock(self.blocks[i], i, d) for i in range(cfg.control_depth))

    def _init_backbone(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        embedders = [self.t_embedder] + ([self.fps_embedder] if self.fps_embedder is not None else [])
        for lin in [e.mlp[i] for e in embedders for i in (0, 2)] + [self.t_block[1], self.t_block_temp[1]]:
            nn.init.normal_(lin.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.attn_temp.proj.weight)
            nn.init.zeros_(block.attn_temp.proj.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # ---- memory -------------------------------------------------------------------------
    @property
    def grad_checkpointing(self) -> bool:
        return self.checkpoint_blocks > 0

    @grad_checkpointing.setter
    def grad_checkpointing(self, on: bool) -> None:
        self.set_grad_checkpointing(self.cfg.depth if on else 0)

    def set_grad_checkpointing(self, blocks: int) -> None:
        """Recompute backbone blocks 0..blocks-1 in backward (control block i runs beside
        backbone block i+1 and follows it). 0 = off, depth = every block."""
        if not 0 <= blocks <= self.cfg.depth:
            raise ValueError(f"checkpointed blocks must be in 0..{self.cfg.depth}, got {blocks}")
        self.checkpoint_blocks = blocks

    # ---- pieces -------------------------------------------------------------------------
    def position_table(self, hp: int, wp: int, device, dtype) -> torch.Tensor:
        """(S, D) sin/cos table, built once per grid, device and dtype (not a parameter)."""
        key = (hp, wp, str(device), dtype)
        if key not in self._pos_cache:
            base = self.cfg.latent_size // self.cfg.patch[1]
            table = sincos_2d(self.cfg.hidden, hp, wp, base, x_first=self.cfg.pos_embed_x_first)
            self._pos_cache[key] = table.to(device, dtype)
        return self._pos_cache[key]

    def embed(self, latents: torch.Tensor) -> torch.Tensor:
        tokens = self.x_embedder(latents)  # (B, T, S, D)
        _, _, h, w = latents.shape[1:]
        ph, pw = self.cfg.patch[1:]
        return tokens + self.position_table(-(-h // ph), -(-w // pw), tokens.device, tokens.dtype)

    def frame_modulation(self, t: torch.Tensor, x_mask: torch.Tensor, fps: torch.Tensor | None = None):
        """Per-frame (t_emb, mod, mod_tmp), timestep 0 where ``x_mask`` is False; and t0's.

        ``t_emb`` feeds the final layer: the plain timestep embedding for noised frames and
        t0 plus the spatial offset for conditional ones (Open-Sora 1.1's final-layer inputs)."""
        b = t.shape[0]
        both = self.t_embedder(torch.cat([t, torch.zeros_like(t)]))  # (2B, D): t, then t0
        spc = both + self.t_spatial_offset
        tmp = both + self.t_temporal_offset
        if self.fps_embedder is not None:
            if fps is None:
                raise ValueError("this model embeds the clip fps: pass fps (B,)")
            tmp = tmp + self.fps_embedder(fps.float()).repeat(2, 1)
        mods = self.t_block(spc).view(2 * b, 6, -1)
        mods_tmp = self.t_block_temp(tmp).view(2 * b, 3, -1)
        keep = x_mask[:, :, None, None]
        emb = torch.where(x_mask[:, :, None], both[:b, None], spc[b:, None])
        mod = torch.where(keep, mods[:b, None], mods[b:, None])
        mod_tmp = torch.where(keep, mods_tmp[:b, None], mods_tmp[b:, None])
        zero = (both[b:, None], mods[b:, None], mods_tmp[b:, None])
        return (emb, mod, mod_tmp), zero

    def unpatchify(self, x: torch.Tensor, t: int, h: int, w: int) -> torch.Tensor:
        pt, ph, pw = self.cfg.patch
        b = x.shape[0]
        tp, hp, wp = -(-t // pt), -(-h // ph), -(-w // pw)
        c = self.cfg.in_channels
        x = x.view(b, tp, hp, wp, pt, ph, pw, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, c, tp * pt, hp * ph, wp * pw)[:, :, :t, :h, :w]

    def _run(self, recompute: bool, fn, *args):
        if recompute and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    # ---- forward ------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        reference: torch.Tensor | None,
        motion: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        use_control: bool = True,
        fps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the noise of ``x``.

        x (B, C, T, H, W) noisy latents; t (B,) timesteps; reference (B, C, H, W) clean latent
        (None: no reference stream, the plain backbone); motion (B, 3, T, P, P) position maps;
        x_mask (B, T) bool, False = conditional frame; fps (B,) when the model embeds fps.
        """
        b, _, nt, h, w = x.shape
        if x_mask is None:
            x_mask = torch.ones(b, nt, dtype=torch.bool, device=x.device)
        (t_emb, mod, mod_tmp), (t0_emb, ref_mod, ref_mod_tmp) = self.frame_modulation(t, x_mask, fps)
        tokens = self.embed(x)  # (B, T, S, D)
        ref = self.embed(reference.unsqueeze(2)) if reference is not None else None  # (B, 1, S, D)
        c = self.embed(self.motion_mapper(motion, (h, w))) if use_control else None
        n_ckpt = self.checkpoint_blocks
        for i, block in enumerate(self.blocks):
            if use_control and 1 <= i <= len(self.control_blocks):
                c, skip = self._run(i < n_ckpt, self.control_blocks[i - 1], tokens, c, mod, mod_tmp)
                tokens = tokens + skip
            tokens, ref = self._run(i < n_ckpt, block, tokens, mod, mod_tmp, ref, ref_mod, ref_mod_tmp)
        out = self.final_layer(tokens, t_emb)  # (B, T, S, patch * C)
        return self.unpatchify(out, nt, h, w)

    @torch.no_grad()
    def copy_backbone_to_control(self) -> None:
        """Control block i := backbone block i (after loading backbone weights)."""
        for i, cb in enumerate(self.control_blocks):
            cb.copied.load_state_dict(self.blocks[i].state_dict())


def build_model(cfg: ModelConfig, device: str | torch.device | None = None) -> RealPortraitDiT:
    if device is None:
        return RealPortraitDiT(cfg)
    with torch.device(device):
        return RealPortraitDiT(cfg)


def parameter_counts(model: RealPortraitDiT) -> dict[str, int]:
    def count(mods) -> int:
        return sum(p.numel() for m in mods for p in m.parameters())

    control = count([model.control_blocks, model.motion_mapper])
    total = sum(p.numel() for p in model.parameters())
    return {
        "backbone": total - control,
        "backbone_blocks": count(model.blocks),
        "control": control,
        "control_blocks": count(model.control_blocks),
        "motion_mapper": count([model.motion_mapper]),
        "total": total,
    }
