"""M: the motion extractor, a ConvNeXt-V2-tiny regressing implicit keypoints and head pose.

Outputs per image: canonical keypoints ``kp`` (3*num_kp), expression offsets ``exp`` (3*num_kp),
``pitch``/``yaw``/``roll`` logits over ``num_bins`` 3-degree bins, translation ``t`` (3) and
``scale`` (1). The backbone sits under ``detector`` because the checkpoint is keyed that way.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import GRN, ChannelsFirstLayerNorm

TINY_DEPTHS = (3, 3, 9, 3)
TINY_DIMS = (96, 192, 384, 768)


class ConvNeXtV2Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)  # NCHW -> NHWC for the pointwise layers
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2KeypointNet(nn.Module):
    def __init__(self, in_chans: int = 3, depths=TINY_DEPTHS, dims=TINY_DIMS, num_kp: int = 21, num_bins: int = 66):
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), ChannelsFirstLayerNorm(dims[0]))
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtV2Block(dims[i]) for _ in range(depths[i])]) for i in range(4)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        feat = dims[-1]
        self.fc_kp = nn.Linear(feat, 3 * num_kp)
        self.fc_scale = nn.Linear(feat, 1)
        self.fc_pitch = nn.Linear(feat, num_bins)
        self.fc_yaw = nn.Linear(feat, num_bins)
        self.fc_roll = nn.Linear(feat, num_bins)
        self.fc_t = nn.Linear(feat, 3)
        self.fc_exp = nn.Linear(feat, 3 * num_kp)

    def forward(self, x) -> dict[str, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        feat = self.norm(x.mean(dim=(-2, -1)))  # global average pool
        return {
            "kp": self.fc_kp(feat),
            "exp": self.fc_exp(feat),
            "pitch": self.fc_pitch(feat),
            "yaw": self.fc_yaw(feat),
            "roll": self.fc_roll(feat),
            "t": self.fc_t(feat),
            "scale": self.fc_scale(feat),
        }


class MotionExtractor(nn.Module):
    def __init__(self, num_kp: int = 21, num_bins: int = 66, backbone: str = "convnextv2_tiny"):
        super().__init__()
        if backbone != "convnextv2_tiny":
            raise ValueError(f"only the convnextv2_tiny motion extractor is supported, got {backbone!r}")
        self.num_kp = num_kp
        self.detector = ConvNeXtV2KeypointNet(num_kp=num_kp, num_bins=num_bins)

    def forward(self, image) -> dict[str, torch.Tensor]:
        """image: Bx3x256x256 in [0, 1]."""
        return self.detector(image)
