"""Stage-1 image views: seeded albumentations crops whose recorded transform is exact."""
from __future__ import annotations

import json

import numpy as np
import pytest

from stages.base import StageError
from stages.image_views import inverse_crop_position_map, make_views
from stages.position_maps import PositionMapStage

S = 512


@pytest.fixture(scope="module")
def photo(media_dir):
    """A real photograph (s1.jpg, square), resized to the training crop, with its face mesh."""
    import cv2
    import mediapipe as mp
    from PIL import Image

    rgb = np.asarray(Image.open(media_dir / "images" / "s1.jpg").convert("RGB"))
    side = min(rgb.shape[:2])
    rgb = cv2.resize(rgb[:side, :side], (S, S), interpolation=cv2.INTER_AREA)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as fm:
        res = fm.process(rgb)
    assert res.multi_face_landmarks
    lm = np.array([[p.x * S, p.y * S] for p in res.multi_face_landmarks[0].landmark])
    return rgb, lm


def test_view_map_is_the_analytic_inverse_crop(photo):
    rgb, lm = photo
    views = make_views(rgb, lm, k=3, seed=11, map_size=64)
    assert [v.index for v in views] == [1, 2, 3]
    c = (np.arange(64) + 0.5) * (S / 64)
    gx, gy = np.meshgrid(c, c)
    for v in views:
        m = v.position_map
        assert m.shape == (3, 64, 64) and m.dtype == np.float16
        valid = m[2] > 0
        assert valid.sum() > 200
        inv = np.linalg.inv(v.matrix)
        ex = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
        ey = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
        err = np.hypot(m[0].astype(float) * S - ex, m[1].astype(float) * S - ey)[valid]
        assert err.max() < 0.5
        assert np.all(m[:, ~valid] == 0)


def test_recorded_matrix_matches_the_pixels_albumentations_made():
    """Bright blobs at known sub-pixel positions land where the recorded matrix says."""
    yy, xx = np.mgrid[0:S, 0:S] + 0.5
    pts = np.array([[200.3, 180.7], [320.6, 260.2], [250.0, 340.5]])
    blob = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2)) for x, y in pts)
    img = np.repeat(np.clip(blob * 255, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    # Landmarks only steer the "keep the face in view" check here: put them around the blobs.
    lm = np.tile(pts, (160, 1))[:478]
    for v in make_views(img, lm, k=4, seed=5):
        g = v.image[..., 0].astype(float)
        for x, y in pts @ v.matrix[:2, :2].T + v.matrix[:2, 2]:
            x0, y0 = int(x), int(y)
            win = g[y0 - 10 : y0 + 11, x0 - 10 : x0 + 11]
            wy, wx = np.mgrid[y0 - 10 : y0 + 11, x0 - 10 : x0 + 11] + 0.5
            centroid = np.array([(win * wx).sum(), (win * wy).sum()]) / win.sum()
            assert np.hypot(*(centroid - (x, y))) < 0.06  # sub-pixel: catches half-pixel slips


def test_views_are_seeded_and_params_recorded(photo):
    rgb, lm = photo
    a = make_views(rgb, lm, k=2, seed=3)
    b = make_views(rgb, lm, k=2, seed=3)
    c = make_views(rgb, lm, k=2, seed=4)
    assert all(np.array_equal(x.image, y.image) and x.params == y.params for x, y in zip(a, b))
    assert not np.allclose(a[0].matrix, c[0].matrix)
    p = json.loads(a[0].params_json())
    assert p["seed"] == 3 and p["view"] == 1
    assert set(p["albumentations"]) == {"RandomResizedCrop", "Affine"}
    assert np.allclose(np.array(p["matrix"]), a[0].matrix)
    # The views keep the face: landmarks move with the view and stay mostly inside.
    for v in a:
        assert ((v.landmarks >= 0) & (v.landmarks <= S)).all(axis=1).mean() >= 0.95
        assert not np.allclose(v.landmarks, lm)


def test_view_map_agrees_with_the_mesh_backend(photo):
    """The view's landmarks are the image's, transformed: the mesh backend on (image, view)
    must give the same map as the analytic inverse crop (same face region, same positions)."""
    rgb, lm = photo
    (v,) = make_views(rgb, lm, k=1, seed=9)
    (mesh,) = PositionMapStage(map_size=64).compute(rgb, lm, [v.image], [v.landmarks.astype(np.float64)])
    both = (mesh[2] > 0) & (v.position_map[2] > 0)
    assert both.sum() > 0.95 * (v.position_map[2] > 0).sum()
    diff = np.abs(mesh[:2, both].astype(float) - v.position_map[:2, both].astype(float)) * S
    assert diff.max() < 0.5


def test_identity_matrix_gives_identity_map(photo):
    _, lm = photo
    m = inverse_crop_position_map(np.eye(3), lm, S, S, 32)
    c = (np.arange(32) + 0.5) / 32
    valid = m[2] > 0
    assert np.allclose(m[0][valid], np.meshgrid(c, c)[0][valid])


def test_bad_image_is_rejected():
    with pytest.raises(StageError, match="square"):
        make_views(np.zeros((100, 120, 3), np.uint8), np.zeros((478, 2)), 1, 0)


def test_views_import_albumentations_without_torch():
    # A worker that makes views of a photo must not pay for importing torch (1.7 CPU s), which
    # albumentations would import for helpers a build never uses; torch still imports after.
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, numpy as np\n"
            "from stages.image_views import build_augmenter\n"
            "view = build_augmenter(64, seed=0)(image=np.full((128, 128, 3), 120, np.uint8))['image']\n"
            "assert view.shape == (64, 64, 3), view.shape\n"
            "print('torch' in sys.modules)\n"
            "import albumentations.pytorch\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
