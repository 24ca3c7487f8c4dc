"""LivePortrait's dense motion -> motion position maps over the training crop.

Per frame, a LivePortrait-style face crop (256x256, a similarity of the training crop) is cut
from the 512 training crop; F and M run on the reference's face crop, M on each driving face
crop, and the dense motion network gives the deformation: for every driving voxel, where in the
reference face crop it takes its content (normalised, ``grid_sample(align_corners=False)``).

Coordinates (continuous: pixel i covers [i, i+1)):
- a deformation value x in [-1, 1] is the reference face-crop position (x + 1) / 2 * 256;
- driving voxel column j (of 64) is the driving face-crop position (j + 0.5) * 256 / 64, the
  area its feature decodes to. (LivePortrait's own identity grid spaces voxels by 2/(n-1), so
  an identity keypoint motion reads the source ~1.6% zoomed towards the centre; the maps report
  what the network does, not that grid's labels.)
Depth is collapsed by a weighted mean over the 16 depth slices, the weights being the norm of
the reference feature each driving voxel samples (where the volume is occupied), or uniform.
The map is then sampled at the P x P cell centres of the driving *training* crop (bilinear,
through the driving face crop's similarity), and positions are mapped back through the
reference face crop's similarity into reference training-crop pixels, normalised by its size.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..face_geometry import cv2_affine
from .keypoints import transform_keypoints

FACE_CROP = 256  # the networks' input size
# Face crop from the 478 MediaPipe landmarks, approximating LivePortrait's source crop (scale
# 2.3, vy -0.125 on its 203 landmarks, which stop at the brows; MediaPipe's reach the hairline,
# hence a smaller scale and a smaller upward shift).
FACE_SCALE = 2.0
FACE_VY = -0.08
_EYES = ([33, 133], [362, 263])  # corners of each eye
_LIPS = [13, 14, 61, 291]


def face_crop_matrix(landmarks: np.ndarray, scale: float = FACE_SCALE, vy: float = FACE_VY,
                     rotate: bool = True, out_size: int = FACE_CROP) -> np.ndarray:
    """3x3 similarity, training-crop -> face-crop continuous pixels.

    Up is from the lip centre to the eye centre (rotation only with ``rotate``); the square side
    is ``scale`` times the landmarks' largest extent in that frame, moved ``vy`` sides along
    the downward axis.
    """
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    if rotate:
        eyes = (lm[_EYES[0]].mean(0) + lm[_EYES[1]].mean(0)) / 2
        down = lm[_LIPS].mean(0) - eyes
        down = down / max(np.linalg.norm(down), 1e-9)
    else:
        down = np.array([0.0, 1.0])
    right = np.array([down[1], -down[0]])
    basis = np.stack([right, down])  # rows: the face crop's x and y axes in training-crop space
    local = lm @ basis.T
    lo, hi = local.min(0), local.max(0)
    side = max(float((hi - lo).max()) * scale, 1e-6)
    centre_local = (lo + hi) / 2 + np.array([0.0, vy * side])
    k = out_size / side
    m = np.eye(3)
    m[:2, :2] = k * basis
    m[:2, 2] = out_size / 2 - k * centre_local
    return m


def cut_face_crop(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """256x256 face crop as LivePortrait cuts it: warp at 512 (bilinear), then area-resize to 256."""
    m512 = np.diag([2.0, 2.0, 1.0]) @ matrix
    big = cv2.warpAffine(rgb, cv2_affine(m512[:2]), (2 * FACE_CROP, 2 * FACE_CROP), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT)
    return cv2.resize(big, (FACE_CROP, FACE_CROP), interpolation=cv2.INTER_AREA)


def to_input(crops: list[np.ndarray], device) -> torch.Tensor:
    x = torch.from_numpy(np.stack(crops)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(255.0)  # RGB in [0, 1], no normalisation


def collapse_depth(deformation: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(B, d, h, w, 3) -> (B, h, w, 3) weighted mean over depth (uniform without weights)."""
    if weights is None:
        return deformation.mean(dim=1)
    w = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return (deformation * w[..., None]).sum(dim=1)


def occupancy_weights(feature: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """(B, d, h, w): norm over channels of the reference feature each driving voxel samples."""
    sampled = F.grid_sample(feature, deformation, align_corners=False)  # B x C x d x h x w
    return sampled.float().norm(dim=1)


def field_to_maps(
    field: torch.Tensor,
    ref_face: np.ndarray,
    drv_faces: np.ndarray,
    ref_size: int,
    drv_size: int,
    map_size: int,
    face_masks: np.ndarray,
    include_depth: bool = False,
) -> np.ndarray:
    """Collapsed deformation (B, h, w, 3) -> position maps (B, C, P, P) float32.

    ``ref_face`` 3x3 and ``drv_faces`` (B, 3, 3): training-crop -> face-crop similarities;
    ``face_masks`` (B, P, P) bool: the driving face region on the map grid. Channels: x, y
    (normalised over the reference training crop), validity, then depth (z in [0, 1]) if asked.
    """
    dev = field.device
    field = field.float()
    b, h, w, _ = field.shape
    # Reference face-crop pixels -> reference training-crop pixels -> [0, 1].
    face_xy = (field[..., :2] + 1) * (FACE_CROP / 2)
    inv = torch.as_tensor(np.linalg.inv(ref_face), dtype=torch.float32, device=dev)
    ref_xy = face_xy @ inv[:2, :2].T + inv[:2, 2]
    channels = [ref_xy / ref_size]
    if include_depth:
        channels.append((field[..., 2:3] + 1) / 2)
    values = torch.cat(channels, dim=-1).permute(0, 3, 1, 2)  # B x C x h x w

    # Driving training-crop cell centres -> driving face-crop pixels -> grid_sample coordinates.
    centres = (np.arange(map_size) + 0.5) * (drv_size / map_size)
    gx, gy = np.meshgrid(centres, centres)
    pts = np.stack([gx, gy, np.ones_like(gx)], axis=-1)  # P x P x 3
    face_pts = np.einsum("bij,pqj->bpqi", np.asarray(drv_faces, dtype=np.float64), pts)[..., :2]
    inside = ((face_pts >= 0) & (face_pts <= FACE_CROP)).all(-1)
    grid = torch.as_tensor(face_pts / FACE_CROP * 2 - 1, dtype=torch.float32, device=dev)
    sampled = F.grid_sample(values, grid, mode="bilinear", padding_mode="border", align_corners=False)
    sampled = sampled.cpu().numpy()  # B x C x P x P

    xy = sampled[:, :2]
    valid = np.asarray(face_masks, bool) & inside & ((xy >= 0) & (xy <= 1)).all(axis=1)
    out = np.zeros((b, 3 + int(include_depth), map_size, map_size), dtype=np.float32)
    out[:, :2] = xy
    out[:, 2] = 1.0
    if include_depth:
        out[:, 3] = sampled[:, 2]
    return out * valid[:, None]


class LivePortraitMotion:
    """Batched runner: reference once, driving frames in chunks of ``batch_size``."""

    def __init__(self, models, device: str, batch_size: int = 16, depth_weighting: str = "occupancy",
                 face_scale: float = FACE_SCALE, face_vy: float = FACE_VY, rotate: bool = True):
        self.models = models
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.depth_weighting = depth_weighting
        self.crop_args = dict(scale=face_scale, vy=face_vy, rotate=rotate)

    def _autocast(self):
        # LivePortrait runs under fp16 autocast on the GPU; CPU stays in float32.
        enabled = self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=enabled)

    def _keypoints(self, x):
        info = self.models.motion_extractor(x)
        return transform_keypoints({k: v.float() for k, v in info.items()})

    @torch.no_grad()
    def maps(self, ref_rgb, ref_lm, drv_rgbs, drv_lms, map_size, face_masks, include_depth=False) -> np.ndarray:
        ref_face = face_crop_matrix(ref_lm, **self.crop_args)
        drv_faces = np.stack([face_crop_matrix(lm, **self.crop_args) for lm in drv_lms])
        with self._autocast():
            x_ref = to_input([cut_face_crop(ref_rgb, ref_face)], self.device)
            feature = self.models.appearance_feature_extractor(x_ref)
            kp_s = self._keypoints(x_ref)
        out = []
        dense = self.models.warping_module.dense_motion_network
        for start in range(0, len(drv_rgbs), self.batch_size):
            stop = min(start + self.batch_size, len(drv_rgbs))
            n = stop - start
            with self._autocast():
                x = to_input([cut_face_crop(drv_rgbs[i], drv_faces[i]) for i in range(start, stop)], self.device)
                kp_d = self._keypoints(x)
                feat = feature.expand(n, *feature.shape[1:])
                deformation = dense(feat, kp_driving=kp_d, kp_source=kp_s.expand(n, -1, -1))["deformation"]
                weights = occupancy_weights(feat, deformation) if self.depth_weighting == "occupancy" else None
            field = collapse_depth(deformation.float(), weights)
            out.append(field_to_maps(field, ref_face, drv_faces[start:stop], ref_rgb.shape[1], drv_rgbs[start].shape[1],
                                     map_size, face_masks[start:stop], include_depth))
        return np.concatenate(out)
