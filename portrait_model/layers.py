"""Building blocks: attention with rotary time positions, adaLN modulation, embeddings."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x * (1 + scale) + shift`` (Open-Sora's t2i_modulate)."""
    return x * (1 + scale) + shift


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x * self.weight.float()).to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


class RotaryEmbedding(nn.Module):
    """Rotary positions over a sequence axis (here: frames), on the full head dimension."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., L, D): rotate by position along L."""
        n = x.shape[-2]
        pos = torch.arange(n, device=x.device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.to(x.device)).repeat_interleave(2, dim=-1)
        cos, sin = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)
        return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    """Multi-head self-attention; optional extra keys/values (reference) and rotary positions.

    ``forward`` returns the output; ``qkv`` exposes the projections so a caller can share
    the reference's keys and values with other frames.
    """

    def __init__(self, dim: int, heads: int, qk_norm: bool = True, rope: RotaryEmbedding | None = None,
                 rope_before_norm: bool = False):
        super().__init__()
        self.rope_before_norm = rope_before_norm
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.rope = rope
        self.proj = nn.Linear(dim, dim)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, L, C) -> q, k, v: (N, heads, L, head_dim), normalised, rotated if rope."""
        n, length, _ = x.shape
        q, k, v = self.qkv_proj(x).view(n, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # Rotary after the q/k norm by default. Open-Sora 1.1 rotates before it (its code flags
        # that order as a possible bug); weights converted from it keep their order.
        if self.rope is not None and self.rope_before_norm:
            q, k = self.rope(q), self.rope(k)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and not self.rope_before_norm:
            q, k = self.rope(q), self.rope(k)
        return q, k, v

    def attend(self, q, k, v) -> torch.Tensor:
        out = F.scaled_dot_product_attention(q, k, v)
        n, _, length, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(n, length, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attend(*self.qkv(x))


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class TimestepEmbedder(nn.Module):
    """Sinusoidal timestep features -> MLP (DiT)."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class PatchEmbed3D(nn.Module):
    """Conv3d with kernel = stride = patch; (B, C, T, H, W) -> (B, T, S, D)."""

    def __init__(self, patch: tuple[int, int, int], in_channels: int, dim: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pt, ph, pw = self.patch
        _, _, t, h, w = x.shape
        x = F.pad(x, (0, (-w) % pw, 0, (-h) % ph, 0, (-t) % pt))
        x = self.proj(x)  # B, D, T', H', W'
        return x.flatten(3).permute(0, 2, 3, 1)


def sincos_2d(dim: int, h: int, w: int, base_size: int, x_first: bool = False) -> torch.Tensor:
    """2-D sin/cos position table (S = h*w, dim): half the channels for y, half for x
    (x first with ``x_first``, the order of Open-Sora 1.1's PositionEmbedding2D).

    Grid coordinates are scaled to ``base_size`` so a model built for one resolution sees
    the same range of positions at another (Open-Sora's PositionEmbedding2D scaling).
    """
    ys = torch.arange(h, dtype=torch.float32) / (h / base_size)
    xs = torch.arange(w, dtype=torch.float32) / (w / base_size)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")

    def one_axis(pos: torch.Tensor, d: int) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float32) / (d / 2))
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    halves = [one_axis(gy, dim // 2), one_axis(gx, dim // 2)]
    return torch.cat(halves[::-1] if x_first else halves, dim=1)
