"""Stage-1 image data: K random-crop driving views per image, each with its exact transform.

RealPortrait trains stage 1 on images by treating a random crop of the image as the driving
frame and the image itself as the reference. Each view is drawn by albumentations (a square
``RandomResizedCrop`` then an ``Affine`` with small rotation, scale and shift), seeded, and its
parameters recorded. From albumentations' own applied parameters we rebuild the view transform
as a 3x3 matrix in continuous pixel coordinates (pixel i covers [i, i+1)), original crop ->
view, so the view's landmarks and position map are exact: the position map of a view is the
inverse transform evaluated at the view's cell centres, normalised over the original crop
(``x_norm = (u + 0.5) / S``), inside the view's face region (the face mesh, as for video).
Views that would cut the face (fewer than ``min_face_inside`` of the landmarks inside) are
redrawn, up to ``max_tries`` times, from the same seeded generator.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from . import mesh_raster
from .base import Settings, StageError
from .library_imports import import_albumentations


class ImageViewsConfig(Settings):
    """The ``features.image_views:`` section of the build config."""

    k: int = Field(2, ge=0, description="random-crop driving views per image (stage-1 image data)")
    seed: int = 0

STAGE = "image_views"


@dataclass
class View:
    index: int  # 1..k (0 is the image itself)
    image: np.ndarray  # S x S x 3 uint8, as albumentations produced it
    landmarks: np.ndarray  # (478, 2) float32, view crop pixels
    matrix: np.ndarray  # 3x3 float64, original crop -> view, continuous pixel coordinates
    params: dict  # JSON-able: what albumentations drew, and the matrix
    position_map: np.ndarray  # (3, P, P) float16, positions in the original crop

    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True)


def _half_pixel(m_cv: np.ndarray) -> np.ndarray:
    """An OpenCV matrix (pixel centres at integers) -> continuous coordinates (centres at +0.5)."""
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    return shift @ m_cv @ unshift


def crop_resize_matrix(crop_coords, out_w: int, out_h: int) -> np.ndarray:
    """Crop box (x0, y0, x1, y1) resized to out size, continuous coordinates (cv2.resize's own
    convention: the box edges map onto the output edges)."""
    x0, y0, x1, y1 = (float(v) for v in crop_coords)
    sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
    return np.array([[sx, 0, -sx * x0], [0, sy, -sy * y0], [0, 0, 1.0]])


def view_matrix(applied: list, out_w: int, out_h: int) -> np.ndarray:
    """Compose albumentations' applied transforms into one 3x3 continuous-coordinate matrix."""
    m = np.eye(3)
    for name, p in applied:
        if name == "RandomResizedCrop":
            m = crop_resize_matrix(p["crop_coords"], out_w, out_h) @ m
        elif name == "Affine":
            m = _half_pixel(np.asarray(p["matrix"], dtype=np.float64)) @ m
        else:
            raise StageError(STAGE, f"no exact matrix for albumentations transform {name}")
    return m


def inverse_crop_position_map(matrix: np.ndarray, view_landmarks: np.ndarray, view_size: int, ref_size: int,
                              map_size: int = 64) -> np.ndarray:
    """(3, P, P) float32: for each view cell centre inside the face, its position in the original
    crop (inverse of ``matrix``), normalised by ``ref_size``; validity; zero elsewhere."""
    p = map_size
    c = (np.arange(p) + 0.5) * (view_size / p)
    gx, gy = np.meshgrid(c, c)
    inv = np.linalg.inv(np.asarray(matrix, dtype=np.float64))
    x = (inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]) / ref_size
    y = (inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]) / ref_size
    face = mesh_raster.coverage(np.asarray(view_landmarks, dtype=np.float64)[:, :2] * (p / view_size), p, p)
    valid = face & (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)
    return np.stack([x, y, np.ones_like(x)]).astype(np.float32) * valid


def build_augmenter(size: int, seed: int, crop_scale=(0.5, 1.0), rotate=(-15.0, 15.0), scale=(0.9, 1.1),
                    translate=(-0.05, 0.05)):
    A = import_albumentations()
    return A.Compose(
        [
            A.RandomResizedCrop(size=(size, size), scale=tuple(crop_scale), ratio=(1.0, 1.0), p=1.0),
            A.Affine(rotate=tuple(rotate), scale=tuple(scale), keep_ratio=True, translate_percent=tuple(translate),
                     border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
        ],
        seed=seed,
        save_applied_params=True,
    )


def make_views(
    image_crop_rgb: np.ndarray,
    landmarks: np.ndarray,
    k: int,
    seed: int,
    map_size: int = 64,
    crop_scale=(0.5, 1.0),
    rotate=(-15.0, 15.0),
    scale=(0.9, 1.1),
    translate=(-0.05, 0.05),
    min_face_inside: float = 0.95,
    max_tries: int = 20,
) -> list[View]:
    """K views of one image crop (S x S x 3 uint8) with its (478, 2) landmarks in crop pixels."""
    img = np.asarray(image_crop_rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] != img.shape[1] or img.dtype != np.uint8:
        raise StageError(STAGE, f"expected a square HxWx3 uint8 crop, got {img.shape} {img.dtype}")
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[1] < 2 or not np.isfinite(lm[:, :2]).all():
        raise StageError(STAGE, f"expected (478, 2) finite landmarks, got {lm.shape}")
    lm = lm[:, :2]
    size = img.shape[0]
    aug = build_augmenter(size, seed, crop_scale, rotate, scale, translate)
    views = []
    for index in range(1, k + 1):
        for attempt in range(max_tries):  # noqa: B007 - read after the loop (tries used)
            out = aug(image=img)
            m = view_matrix(out["applied_transforms"], size, size)
            vlm = lm @ m[:2, :2].T + m[:2, 2]
            inside = ((vlm >= 0) & (vlm <= size)).all(axis=1).mean()
            if inside >= min_face_inside:
                break
        params = _params(out["applied_transforms"], m, seed, index, attempt)
        pmap = inverse_crop_position_map(m, vlm, size, size, map_size).astype(np.float16)
        views.append(View(index, out["image"], vlm.astype(np.float32), m, params, pmap))
    return views


def _params(applied: list, matrix: np.ndarray, seed: int, index: int, attempt: int) -> dict:
    def plain(v):
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        return v

    drawn = {}
    for name, p in applied:
        keep = {key: plain(val) for key, val in p.items() if key not in ("shape", "bbox_matrix", "fill_mask")}
        drawn[name] = keep
    return {
        "seed": seed,
        "view": index,
        "redraws": attempt,
        "albumentations": drawn,
        "matrix": plain(matrix),  # original crop -> view, continuous pixel coordinates
        "convention": "continuous pixels: pixel i covers [i, i+1)",
    }
