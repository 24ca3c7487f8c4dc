"""W: the warping module, with its dense motion network.

The dense motion network turns implicit keypoints of the source (reference) and the driving
frame into a deformation of the 3D feature volume: for every driving voxel (depth 16 x 64 x 64),
the *absolute* normalised source coordinates (x, y, z) it samples, in [-1, 1] under
``grid_sample(align_corners=False)``. That deformation is what the position maps are made of.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Hourglass, SameBlock2d

KP_VARIANCE = 0.01


def coordinate_grid(d: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(d, h, w, 3) grid of (x, y, z), each axis 2*i/(n-1) - 1.

    The n-1 normalisation is LivePortrait's (an align_corners=True spacing) even though the
    grid is sampled with align_corners=False; the trained weights expect exactly this grid.
    """
    def axis(n):
        return 2 * torch.arange(n, dtype=like.dtype, device=like.device) / (n - 1) - 1

    z, y, x = torch.meshgrid(axis(d), axis(h), axis(w), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def keypoint_gaussians(kp: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(B, K, 3) keypoints -> (B, K, d, h, w) isotropic Gaussians on the coordinate grid."""
    grid = coordinate_grid(*shape, like=kp)
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * diff.pow(2).sum(-1) / KP_VARIANCE)


class DenseMotionNetwork(nn.Module):
    def __init__(
        self,
        block_expansion: int = 32,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_kp: int = 21,
        feature_channel: int = 32,
        reshape_depth: int = 16,
        compress: int = 4,
        estimate_occlusion_map: bool = True,
    ):
        super().__init__()
        self.num_kp = num_kp
        in_features = (num_kp + 1) * (compress + 1)  # per motion: compressed feature + heatmap
        self.hourglass = Hourglass(block_expansion, in_features, num_blocks, max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )

    def sparse_motions(self, feature, kp_driving, kp_source):
        """(B, K+1, d, h, w, 3): identity (background) plus one translation per keypoint."""
        b, _, d, h, w = feature.shape
        grid = coordinate_grid(d, h, w, like=kp_source)[None, None]
        shift = (kp_source - kp_driving)[:, :, None, None, None, :]
        return torch.cat([grid.expand(b, 1, d, h, w, 3), grid + shift], dim=1)

    def forward(self, feature, kp_driving, kp_source) -> dict[str, torch.Tensor]:
        b, _, d, h, w = feature.shape
        k1 = self.num_kp + 1
        feature = F.relu(self.norm(self.compress(feature)))  # B x compress x d x h x w
        motions = self.sparse_motions(feature, kp_driving, kp_source)
        c = feature.shape[1]
        repeated = feature[:, None].expand(b, k1, c, d, h, w).reshape(b * k1, c, d, h, w)
        warped = F.grid_sample(repeated, motions.reshape(b * k1, d, h, w, 3), align_corners=False)
        warped = warped.view(b, k1, c, d, h, w)
        heat = keypoint_gaussians(kp_driving, (d, h, w)) - keypoint_gaussians(kp_source, (d, h, w))
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1)  # background has none
        net_in = torch.cat([heat[:, :, None], warped], dim=2).view(b, -1, d, h, w)
        prediction = self.hourglass(net_in)
        mask = F.softmax(self.mask(prediction), dim=1)  # B x (K+1) x d x h x w
        deformation = (motions * mask[..., None]).sum(dim=1)  # B x d x h x w x 3
        out = {"mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))
        return out


class WarpingNetwork(nn.Module):
    def __init__(
        self,
        num_kp: int = 21,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        estimate_occlusion_map: bool = True,
        dense_motion_params: dict | None = None,
    ):
        super().__init__()
        params = dict(DENSE_MOTION_PARAMS if dense_motion_params is None else dense_motion_params)
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp, feature_channel=reshape_channel, estimate_occlusion_map=estimate_occlusion_map, **params
        )
        width = block_expansion * 2**num_down_blocks
        self.third = SameBlock2d(max_features, width, kernel_size=(3, 3), padding=(1, 1), lrelu=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1, stride=1)

    def forward(self, feature_3d, kp_driving, kp_source) -> dict[str, torch.Tensor]:
        """Full W (warped, occlusion-weighted 2D feature); the position maps only need
        ``dense_motion_network``, the rest is here so the released checkpoint loads strictly."""
        motion = self.dense_motion_network(feature_3d, kp_driving=kp_driving, kp_source=kp_source)
        warped = F.grid_sample(feature_3d, motion["deformation"], align_corners=False)
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.view(b, c * d, h, w)))
        if "occlusion_map" in motion:
            out = out * motion["occlusion_map"]
        return {"deformation": motion["deformation"], "occlusion_map": motion.get("occlusion_map"), "out": out}


DENSE_MOTION_PARAMS = dict(block_expansion=32, max_features=1024, num_blocks=5, reshape_depth=16, compress=4)
