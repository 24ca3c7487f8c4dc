"""Motion position maps, mesh backend, on real fixture frames with real MediaPipe landmarks."""
from __future__ import annotations

import numpy as np
import pytest

from stages import mesh_raster
from stages.base import StageError
from stages.position_maps import PositionMapStage, choose_references, pose_scores
from tests.media_makers import frames_at

S = 512


def read_frames(path, indices) -> list[np.ndarray]:
    return frames_at(path, indices)


@pytest.fixture(scope="module", autouse=True)
def _release_face_mesh():
    yield
    if _MESH:
        _MESH.pop().close()


_MESH: list = []


def face_mesh(rgb: np.ndarray) -> np.ndarray:
    """(478, 3) MediaPipe landmarks (x, y, z) in pixels of ``rgb`` (each image on its own)."""
    import mediapipe as mp

    if not _MESH:
        _MESH.append(mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1))
    result = _MESH[0].process(rgb)
    assert result.multi_face_landmarks, "no face found in a fixture frame"
    h, w = rgb.shape[:2]
    return np.array([[p.x * w, p.y * h, p.z * w] for p in result.multi_face_landmarks[0].landmark])


def shift_image(rgb: np.ndarray, dx: float, dy: float) -> np.ndarray:
    import cv2

    m = np.float32([[1, 0, dx], [0, 1, dy]])  # a pure shift is the same in either pixel convention
    return cv2.warpAffine(rgb, m, (rgb.shape[1], rgb.shape[0]), flags=cv2.INTER_LINEAR)


def averaged_face_mesh(rgb: np.ndarray, offsets=(-8.0, -4.0, 0.0, 4.0, 8.0)) -> np.ndarray:
    """Landmarks averaged over a 5x5 grid of small known shifts (each shift removed again).

    MediaPipe's single-shot landmarks move ~1 px when an image is translated (its detector is
    not shift-equivariant), which is as large as the tolerance; averaging makes the fixture
    landmarks precise enough (~0.4 px) that the test measures the map, not the detector."""
    acc = []
    for dy in offsets:
        for dx in offsets:
            lm = face_mesh(shift_image(rgb, dx, dy))
            lm[:, :2] -= (dx, dy)
            acc.append(lm)
    return np.mean(acc, axis=0)


@pytest.fixture(scope="module")
def d3(media_dir):
    frames = read_frames(media_dir / "videos" / "d3.mp4", [0, 45, 90])
    assert frames[0].shape == (S, S, 3)
    return frames, [face_mesh(f) for f in frames]


def cell_centres(p: int, size: int = S) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(p) + 0.5) * (size / p)
    return np.meshgrid(c, c)


def test_identity_when_driving_is_reference(d3):
    frames, lms = d3
    stage = PositionMapStage(backend="mesh", map_size=64)
    (m,) = stage.compute(frames[0], lms[0][:, :2], [frames[0]], [lms[0][:, :2]])
    assert m.shape == (3, 64, 64) and m.dtype == np.float16
    valid = m[2] > 0
    assert 0.1 < valid.mean() < 0.6  # the face, not the whole crop and not nothing
    gx, gy = cell_centres(64)
    err = np.hypot(m[0].astype(float) * S - gx, m[1].astype(float) * S - gy)[valid]
    assert np.median(err) < 0.5
    assert np.all(m[:, ~valid] == 0)  # zero outside the face, all channels


def test_shift_is_recovered(d3):
    frames, _ = d3
    dx, dy = 12.0, -7.0
    ref, drv = frames[0], shift_image(frames[0], dx, dy)
    ref_lm, drv_lm = averaged_face_mesh(ref), averaged_face_mesh(drv)
    stage = PositionMapStage(backend="mesh", map_size=128)
    (m,) = stage.compute(ref, ref_lm[:, :2], [drv], [drv_lm[:, :2]])
    valid = m[2] > 0
    gx, gy = cell_centres(128)
    # The driving cell at c shows the reference content at c - shift.
    err = np.hypot(m[0].astype(float) * S - (gx - dx), m[1].astype(float) * S - (gy - dy))[valid]
    assert valid.sum() > 1000
    assert np.median(err) < 1.0


def test_real_motion_warps_reference_onto_driving(d3):
    """Sampling the reference at the map's positions reproduces the driving face better than
    the unwarped reference does (frames 1.5 s apart, the head moved)."""
    import cv2

    frames, lms = d3
    stage = PositionMapStage(backend="mesh", map_size=S)
    (m,) = stage.compute(frames[0], lms[0][:, :2], [frames[2]], [lms[2][:, :2]])
    valid = m[2] > 0
    mx = (m[0].astype(np.float32) * S - 0.5)  # OpenCV samples at pixel centres = integers
    my = (m[1].astype(np.float32) * S - 0.5)
    warped = cv2.remap(frames[0], mx, my, cv2.INTER_LINEAR)
    err_warp = np.abs(warped.astype(float) - frames[2]).mean(-1)[valid].mean()
    err_none = np.abs(frames[0].astype(float) - frames[2]).mean(-1)[valid].mean()
    assert err_warp < 0.6 * err_none


def test_map_size_is_configurable_and_consistent(d3):
    frames, lms = d3
    big = PositionMapStage(map_size=128).compute(None, lms[0][:, :2], None, [lms[1][:, :2]])[0]
    small = PositionMapStage(map_size=32).compute(None, lms[0][:, :2], None, [lms[1][:, :2]])[0]
    assert big.shape == (3, 128, 128) and small.shape == (3, 32, 32)
    # A 32-cell centre is the meeting point of four 128 cells: compare where all are valid.
    pooled = big.astype(float).reshape(3, 32, 4, 32, 4)[:, :, 1:3, :, 1:3].mean(axis=(2, 4))
    both = (small[2] > 0) & (big[2].reshape(32, 4, 32, 4).min(axis=(1, 3)) > 0)
    assert both.sum() > 50
    assert np.abs(pooled[:2][:, both] - small[:2][:, both].astype(float)).max() * S < 1.0


def test_mirrored_face_is_still_mapped(d3):
    """A horizontally flipped driving frame reverses every triangle's winding; the face must
    still be drawn (front faces are decided per frame, not by a fixed winding)."""
    frames, lms = d3
    flipped = lms[0][:, :2].copy()
    flipped[:, 0] = S - flipped[:, 0]
    (m,) = PositionMapStage(map_size=64).compute(None, lms[0][:, :2], None, [flipped])
    (m0,) = PositionMapStage(map_size=64).compute(None, lms[0][:, :2], None, [lms[0][:, :2]])
    assert abs(int((m[2] > 0).sum()) - int((m0[2] > 0).sum())) < 0.05 * (m0[2] > 0).sum()


def test_triangles_form_an_oriented_face_mesh():
    tris = mesh_raster.face_triangles()
    assert tris.shape[1] == 3 and 800 < len(tris) < 900
    assert tris.max() < 468
    directed = [(t[k], t[(k + 1) % 3]) for t in tris for k in range(3)]
    assert len(set(directed)) == len(directed)  # consistent winding: no edge twice in one direction


def test_rasterizer_interpolates_linear_attributes_exactly():
    rng = np.random.default_rng(0)
    # A real-looking mesh: a similarity of an arbitrary frame's landmarks is not needed; any
    # affine attribute must be reproduced exactly by barycentric interpolation.
    verts = rng.uniform(10, 54, size=(468, 2))
    attrs = verts @ np.array([[0.5, -0.2], [0.1, 0.9]]) + [3.0, -1.0]
    values, covered = mesh_raster.rasterize(verts, attrs, 64, 64, cull_back_faces=False)
    gx, gy = cell_centres(64, 64)
    expect = np.stack([gx, gy], -1) @ np.array([[0.5, -0.2], [0.1, 0.9]]) + [3.0, -1.0]
    assert covered.any()
    assert np.abs(values[covered] - expect[covered]).max() < 1e-9
    assert np.all(values[~covered] == 0)


def test_bad_landmarks_fail_with_a_clear_message():
    stage = PositionMapStage()
    good = np.zeros((478, 2))
    with pytest.raises(StageError, match=r"\(478, 2\) landmarks"):
        stage.compute(None, np.zeros((68, 2)), None, [good])
    bad = good.copy()
    bad[3] = np.nan
    with pytest.raises(StageError, match="not finite"):
        stage.compute(None, good, None, [bad])
    with pytest.raises(ValueError, match="features.position_map.backend"):
        PositionMapStage(backend="flow")


def test_describe_names_backend_and_convention():
    d = PositionMapStage(map_size=48).describe()
    assert d["backend"] == "mesh" and d["map_size"] == 48 and d["random_weights"] is False
    assert d["channels"] == ["x", "y", "valid"]


def test_reference_rule_prefers_frontal_neutral_frames(d3):
    _, lms = d3
    base = lms[0][:, :2]
    # Synthetic poses of a real face: roll by rotating the landmarks about the face centre.
    centre = base.mean(0)

    def rolled(deg):
        a = np.deg2rad(deg)
        r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        return (base - centre) @ r.T + centre

    frames = [rolled(25), rolled(12), rolled(0.0), rolled(-18), rolled(30)]
    assert choose_references(frames, 1, rule="frontal") == [2]
    scores = pose_scores(frames)
    assert np.argmin(np.abs(scores["roll"])) == 2
    # Several references spread over the clip; deterministic.
    two = choose_references(frames, 2, rule="frontal")
    assert len(two) == 2 and 2 in two and two == choose_references(frames, 2, rule="frontal")
    assert choose_references(frames, 1, rule="first") == [0]
    assert choose_references(frames, 1, rule="middle") == [2]
    # An open mouth loses to a closed one under the default rule.
    open_mouth = base.copy()
    open_mouth[14] += (0, 25.0)
    assert choose_references([open_mouth, base], 1) == [1]
    with pytest.raises(ValueError, match="reference_rule"):
        choose_references(frames, 1, rule="random")
