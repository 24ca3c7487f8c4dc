"""Intensities (HunyuanPortrait eq. 2-3) from real face-mesh landmarks and synthetic motions."""
from __future__ import annotations

import numpy as np
import pytest

from stages.intensity import (
    bin_edges,
    face_scale,
    five_points,
    intensities,
    to_levels,
    window_intensities,
)


@pytest.fixture(scope="module")
def real_landmarks(media_dir) -> np.ndarray:
    """(T, 478, 2) mesh of the first 40 frames of a real talking-head video (512x512)."""
    av = pytest.importorskip("av")
    import mediapipe as mp

    frames = []
    with av.open(str(media_dir / "videos" / "d3.mp4")) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == 40:
                break
    out = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True, max_num_faces=1) as fm:
        for rgb in frames:
            res = fm.process(rgb)
            assert res.multi_face_landmarks, "fixture frame without a face"
            h, w = rgb.shape[:2]
            out.append([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark])
    return np.asarray(out, dtype=np.float32)


def test_still_video_has_zero_intensities(real_landmarks):
    still = np.repeat(real_landmarks[:1], 25, axis=0)
    exp, head = intensities(still)
    assert exp == 0.0 and head == 0.0


def test_pure_translation_is_head_motion_only(real_landmarks):
    t = np.arange(25, dtype=np.float32)[:, None, None]
    moving = real_landmarks[:1] + t * np.array([3.0, -2.0], dtype=np.float32)
    exp, head = intensities(moving)
    assert exp == pytest.approx(0.0, abs=1e-6)
    # Mean distance of the nose from its average position, over the first frame's face scale.
    offsets = np.abs(np.arange(25) - 12.0) * np.hypot(3.0, -2.0)
    assert head == pytest.approx(offsets.mean() / face_scale(real_landmarks[0]), rel=1e-4)


def test_real_talking_head_has_both_intensities(real_landmarks):
    exp, head = intensities(real_landmarks)
    assert exp > 0 and head > 0
    # Normalised by face scale: the same clip at twice the crop size gives the same values.
    exp2, head2 = intensities(real_landmarks * 2.0)
    assert exp2 == pytest.approx(exp, rel=1e-6) and head2 == pytest.approx(head, rel=1e-6)


def test_expressive_point_set_sees_mouth_opening(real_landmarks):
    clip = np.repeat(real_landmarks[:1], 10, axis=0).copy()
    clip[5:, 14, 1] += 12.0  # the inner lower lip drops: the mouth opens, nothing else moves
    assert intensities(clip, "hunyuan5")[0] == 0.0  # the paper's 5 points cannot see it
    assert intensities(clip, "expressive")[0] > 0.0
    with pytest.raises(ValueError, match="unknown point set"):
        intensities(clip, "nose_only")


def test_five_points_are_in_arcface_order(real_landmarks):
    eye_l, eye_r, nose, mouth_l, mouth_r = five_points(real_landmarks[0])
    assert eye_l[0] < nose[0] < eye_r[0] and mouth_l[0] < nose[0] < mouth_r[0]
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])


def test_windows_follow_the_motion(real_landmarks):
    still = np.repeat(real_landmarks[:1], 20, axis=0)
    shift = np.arange(1, 21, dtype=np.float32)[:, None, None] * np.array([2.0, 0.0], dtype=np.float32)
    clip = np.concatenate([still, real_landmarks[:1] + shift])  # 20 still frames, then a pan
    starts, exp, head = window_intensities(clip, window=8, stride=4)
    assert list(starts) == list(range(0, 40 - 8 + 1, 4))
    assert np.all(head[starts + 8 <= 20] == 0) and np.all(head[starts >= 20] > 0)
    assert np.allclose(exp, 0, atol=1e-6)
    assert len(window_intensities(clip[:5], window=8)[0]) == 0


def test_bins_follow_the_dataset_and_clip_values_do_not(real_landmarks):
    rng = np.random.default_rng(0)
    clips = [real_landmarks[i : i + 10] + rng.normal(0, s, (10, 478, 2)) for i, s in enumerate([0.5, 1, 2, 3, 4])]
    values = np.array([intensities(c)[0] for c in clips])
    edges = bin_edges(values, d=4)
    assert len(edges) == 5 and np.all(np.diff(edges) >= 0)
    levels = to_levels(values, edges)
    assert levels.min() == 0 and levels.max() == 3 and np.all(np.diff(levels[np.argsort(values)]) >= 0)

    # The dataset grows with livelier clips: the edges move, the stored per-clip values (what
    # the shards and the clips table hold) stay as they were; only the levels are recomputed.
    more = [real_landmarks[:10] + rng.normal(0, 8, (10, 478, 2)) for _ in range(5)]
    values_after = np.array([intensities(c)[0] for c in clips])
    all_values = np.concatenate([values_after, [intensities(c)[0] for c in more]])
    new_edges = bin_edges(all_values, d=4)
    assert np.array_equal(values_after, values)
    assert not np.allclose(new_edges, edges)
    assert to_levels(values, new_edges).max() < levels.max()  # old clips now sit lower


def test_levels_edge_cases():
    values = np.r_[np.zeros(50), np.linspace(0.01, 1.0, 50)]  # half the clips are still
    edges = bin_edges(values, d=64)
    levels = to_levels(values, edges)
    assert len(edges) == 65 and levels.min() == 0 and levels.max() == 63
    assert np.all(levels[:50] == 0)  # still clips share the lowest level
    assert list(to_levels([np.nan, -1.0, 5.0], edges)) == [-1, 0, 63]
    with pytest.raises(ValueError, match="no finite values"):
        bin_edges([np.nan])
    with pytest.raises(ValueError, match="shape"):
        intensities(np.zeros((3, 10, 2)))
