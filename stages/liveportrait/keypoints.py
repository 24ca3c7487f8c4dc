"""Implicit keypoint transform (LivePortrait, paper Eq. 2): x = scale * (x_c R + exp) + t.

Head-pose logits over 66 bins become degrees as the softmax expectation ``3 * E[bin] - 97.5``;
R is built from pitch (about x), yaw (about y) and roll (about z) as (Rz Ry Rx)^T, so that
row-vector keypoints times R apply Rz Ry Rx. Only tx, ty are added: tz is dropped.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """(B, n_bins) logits -> (B,) degrees."""
    idx = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
    return (F.softmax(logits, dim=1) * idx).sum(dim=1) * 3 - 97.5


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (B,) each -> (B, 3, 3), transposed for right-multiplying row vectors."""
    p, y, r = (a.reshape(-1) * (math.pi / 180) for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(p), torch.zeros_like(p)

    def mat(rows):
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    rx = mat([[one, zero, zero], [zero, p.cos(), -p.sin()], [zero, p.sin(), p.cos()]])
    ry = mat([[y.cos(), zero, y.sin()], [zero, one, zero], [-y.sin(), zero, y.cos()]])
    rz = mat([[r.cos(), -r.sin(), zero], [r.sin(), r.cos(), zero], [zero, zero, one]])
    return (rz @ ry @ rx).transpose(1, 2)


def transform_keypoints(info: dict[str, torch.Tensor]) -> torch.Tensor:
    """Motion extractor output (raw logits) -> (B, K, 3) driving-space keypoints."""
    kp = info["kp"]
    b = kp.shape[0]
    kp = kp.reshape(b, -1, 3)
    exp = info["exp"].reshape(b, -1, 3)
    rot = rotation_matrix(bins_to_degrees(info["pitch"]), bins_to_degrees(info["yaw"]), bins_to_degrees(info["roll"]))
    out = (kp @ rot + exp) * info["scale"].reshape(b, 1, 1)
    xy = out[..., :2] + info["t"].reshape(b, 1, 3)[..., :2]
    return torch.cat([xy, out[..., 2:]], dim=-1)
