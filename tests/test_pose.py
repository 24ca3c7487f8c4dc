"""Whole-body pose: MediaPipe default on real frames; dwpose backend on tiny ONNX models that
have the real YOLOX-L / DWPose input and output signatures."""
from __future__ import annotations

import numpy as np
import pytest

from stages.base import WeightsMissing
from stages.pose import (
    FACE,
    LEFT_HAND,
    MESH_TO_IBUG68,
    MP_POSE_TO_COCO17,
    MP_POSE_TO_FEET,
    RIGHT_HAND,
    PoseStage,
    interpolate_keyframes,
    mesh_to_ibug68,
    run_keyframes,
)
from tests.media_makers import frames_at

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

COCO17 = ["NOSE", "LEFT_EYE", "RIGHT_EYE", "LEFT_EAR", "RIGHT_EAR", "LEFT_SHOULDER", "RIGHT_SHOULDER",
          "LEFT_ELBOW", "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_HIP", "RIGHT_HIP", "LEFT_KNEE",
          "RIGHT_KNEE", "LEFT_ANKLE", "RIGHT_ANKLE"]


def read_frames(path, every: int, count: int, square_from_top: int = 0) -> list[np.ndarray]:
    """Every `every`-th frame as a 512x512 RGB crop (a square band for portrait videos)."""
    import cv2

    out = []
    for rgb in frames_at(path, range(0, every * count, every)):
        side = min(rgb.shape[:2])
        rgb = rgb[square_from_top : square_from_top + side, :side]
        out.append(cv2.resize(rgb, (512, 512), interpolation=cv2.INTER_AREA))
    return out


def test_mesh_to_ibug68_is_the_mean_of_each_points_mesh_indices():
    rng = np.random.default_rng(7)
    for mesh in (rng.uniform(-50, 1500, (478, 2)), rng.uniform(0, 1, (468, 2)).astype(np.float32)):
        m = mesh.astype(np.float32)
        expected = np.stack([m[list(ix)].mean(axis=0) for ix in MESH_TO_IBUG68])
        got = mesh_to_ibug68(mesh)
        assert got.dtype == np.float32 and got.shape == (68, 2)
        np.testing.assert_array_equal(got, expected)  # bit for bit: stored poses keep their bytes


# ---- MediaPipe default -------------------------------------------------------------------


def test_mediapipe_tables_match_mediapipe_enums():
    import mediapipe as mp

    pose_names = [lm.name for lm in mp.solutions.pose.PoseLandmark]
    assert [pose_names[i] for i in MP_POSE_TO_COCO17] == COCO17
    assert [None if i is None else pose_names[i] for i in MP_POSE_TO_FEET] == [
        "LEFT_FOOT_INDEX", None, "LEFT_HEEL", "RIGHT_FOOT_INDEX", None, "RIGHT_HEEL"]
    # COCO-WholeBody hands: root, then thumb, index, middle, ring, pinky from base to tip.
    hand_names = [lm.name for lm in mp.solutions.hands.HandLandmark]
    assert hand_names[0] == "WRIST"
    fingers = ["THUMB", "INDEX_FINGER", "MIDDLE_FINGER", "RING_FINGER", "PINKY"]
    assert [n.split("_")[0] for n in hand_names[1:]] == [f.split("_")[0] for f in fingers for _ in range(4)]
    assert [n.rsplit("_", 1)[-1] for n in hand_names[1:5]] == ["CMC", "MCP", "IP", "TIP"]
    assert all(n.endswith(("MCP", "PIP", "DIP", "TIP")) for n in hand_names[5:])


def test_mediapipe_face_and_body_agree_on_real_frames(media_dir):
    frames = read_frames(media_dir / "videos" / "d3.mp4", every=20, count=4)
    poses = PoseStage().estimate(frames)
    assert len(poses) == 4
    for p in poses:
        assert p.shape == (133, 3) and p.dtype == np.float32
        face = p[FACE]
        assert np.all(face[:, 2] == 1.0)
        assert p[0, 2] > 0.5  # the nose is visible
        # Face-68 from the mesh and the body model agree: nose tip, and each eye on its side
        # (COCO left eye = subject's left = image right = iBUG 42-47).
        face_width = np.linalg.norm(face[16, :2] - face[0, :2])
        assert np.linalg.norm(face[30, :2] - p[0, :2]) < 0.15 * face_width
        eye_image_left, eye_image_right = face[36:42, :2].mean(0), face[42:48, :2].mean(0)
        pairs = ((p[1, :2], eye_image_right, eye_image_left), (p[2, :2], eye_image_left, eye_image_right))
        for body_eye, same, other in pairs:
            assert np.linalg.norm(body_eye - same) < np.linalg.norm(body_eye - other)
        # iBUG order: jaw runs image-left -> right through the chin, chin below the mouth.
        assert face[0, 0] < face[8, 0] < face[16, 0] and face[8, 1] > face[57, 1] > face[33, 1]
        assert p[18, 2] == 0 and p[21, 2] == 0  # small toes: MediaPipe has none


def test_mediapipe_hands_are_on_the_right_wrists(media_dir):
    # A half-body video where both hands are in view; the crop is a square band at the chest.
    frames = read_frames(media_dir / "videos" / "s20.mp4", every=30, count=10, square_from_top=200)[3:]
    seen = 0
    for p in PoseStage().estimate(frames):
        for hand, wrist, other in ((LEFT_HAND, 9, 10), (RIGHT_HAND, 10, 9)):
            if p[hand.start, 2] > 0 and min(p[wrist, 2], p[other, 2]) > 0.5:
                root = p[hand.start, :2]
                assert np.linalg.norm(root - p[wrist, :2]) < np.linalg.norm(root - p[other, :2])
                seen += 1
    assert seen >= 4, "expected both hands in several frames of s20.mp4"


def test_a_clip_pose_does_not_depend_on_the_clip_before(media_dir):
    """The stage keeps one Holistic graph and resets it per clip: a clip's poses are those of a
    fresh stage, whatever ran before."""
    other = read_frames(media_dir / "videos" / "s20.mp4", every=30, count=4)
    frames = read_frames(media_dir / "videos" / "d3.mp4", every=3, count=6)
    stage = PoseStage()
    stage.estimate(other)
    after_other = stage.estimate(frames)
    for a, b in zip(after_other, PoseStage().estimate(frames)):
        np.testing.assert_array_equal(a, b)


def test_keyframes_and_interpolation_between_them():
    def model_at(hands_at):
        def model(i):
            p = np.zeros((133, 3), np.float32)
            p[0, 2] = 1
            if i in hands_at:
                p[LEFT_HAND.start, 2] = 1
            return p
        return model

    assert run_keyframes(10, 3, model_at(()))[0] == [0, 3, 6, 9]
    assert run_keyframes(8, 3, model_at(()))[0] == [0, 3, 6, 7] and run_keyframes(1, 3, model_at(()))[0] == [0]
    # A hand in view at frames 3-5: every frame from the one it is found at until it is gone.
    assert run_keyframes(12, 3, model_at({3, 4, 5}))[0] == [0, 3, 4, 5, 6, 9, 11]
    a, b = np.zeros((133, 3), np.float32), np.zeros((133, 3), np.float32)
    a[0], b[0] = (10, 20, 0.9), (40, 50, 0.6)  # seen at both keyframes: moves linearly
    a[91] = (100, 100, 1.0)  # a hand seen at the first keyframe only
    b[112] = (200, 200, 1.0)  # another seen at the second only
    out = interpolate_keyframes([0, 3], [a, b], 4)
    assert out[0] is a and out[3] is b
    np.testing.assert_allclose(out[1][0], (20, 30, 0.8), atol=1e-5)
    np.testing.assert_allclose(out[2][0], (30, 40, 0.7), atol=1e-5)
    # Nearer keyframe's value for points one side lacks: no point dragged in from (0, 0).
    assert tuple(out[1][91]) == (100, 100, 1.0) and out[1][112, 2] == 0
    assert out[2][91, 2] == 0 and tuple(out[2][112]) == (200, 200, 1.0)


def test_pose_every_third_frame_with_the_curation_mesh_face(media_dir):
    """The default: the model on frames 0, 3, 6, 9 of ten consecutive sampled frames, the rest
    interpolated, face-68 from the mesh landmarks given; body within the tolerance measured by
    bench/bench_pose_rate.py of the model run on every frame."""
    import mediapipe as mp

    frames = read_frames(media_dir / "videos" / "d3.mp4", every=2, count=10)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        lms = [np.array([(q.x * 512, q.y * 512) for q in mesh.process(f).multi_face_landmarks[0].landmark],
                        np.float32) for f in frames]
    every_frame = PoseStage(every=1).estimate(frames)
    stage = PoseStage(every=3)
    calls = []
    make = stage._mediapipe_model

    def counted(face):
        assert not face  # with the mesh's landmarks, the graph without Holistic's face branch
        model = make(face)
        calls.append(0)
        return lambda crop: calls.__setitem__(-1, calls[-1] + 1) or model(crop)

    stage._mediapipe_model = lambda face=True: counted(face)
    got = stage.estimate(frames, lms, video=True)
    assert not any(r[LEFT_HAND.start, 2] or r[RIGHT_HAND.start, 2] for r in every_frame)  # no hand: keyframes only
    assert calls == [4] and len(got) == 10
    for p, lm in zip(got, lms):
        np.testing.assert_array_equal(p[FACE, :2], mesh_to_ibug68(lm))
        assert np.all(p[FACE, 2] == 1.0)
    seen = np.stack([r[:17, 2] >= 0.5 for r in every_frame])
    err = np.linalg.norm(np.stack([g[:17, :2] for g in got]) - np.stack([r[:17, :2] for r in every_frame]), axis=2)
    assert seen.sum() >= 40 and np.median(err[seen]) < 10, np.median(err[seen])
    # Holistic's graph without its face branch gives the very same body and hand points.
    holistic = PoseStage(every=3).estimate(frames, video=True)
    for a, b in zip(got, holistic):
        np.testing.assert_array_equal(np.delete(a, np.r_[FACE], axis=0), np.delete(b, np.r_[FACE], axis=0))
    # Images' views are separate pictures: every one goes through the model.
    calls.clear()
    stage.estimate(frames[:5], lms[:5])
    assert calls == [5]


# ---- dwpose backend on tiny ONNX models ---------------------------------------------------


def _constant_plus_image_mean(name_in, shape_in, outputs):
    """A graph: output_i = bias_i + 1e-6 * mean(input). Real names and shapes, tiny compute."""
    nodes = [helper.make_node("ReduceMean", [name_in], ["m"], keepdims=1, axes=[1, 2, 3], name="mean")]
    inits, outs = [], []
    for name, bias in outputs:
        nodes += [
            helper.make_node("Reshape", ["m", "shape3"], [f"{name}_m"], name=f"{name}_reshape"),
            helper.make_node("Mul", [f"{name}_m", "tiny"], [f"{name}_s"], name=f"{name}_scale"),
            helper.make_node("Add", [f"{name}_s", f"{name}_bias"], [name], name=f"{name}_add"),
        ]
        inits.append(numpy_helper.from_array(bias.astype(np.float32), f"{name}_bias"))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(bias.shape)))
    inits += [numpy_helper.from_array(np.array([1, 1, 1], np.int64), "shape3"),
              numpy_helper.from_array(np.array(1e-6, np.float32), "tiny")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(name_in, TensorProto.FLOAT, shape_in)],
                              outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


PERSON_BOX = (192.0, 96.0, 448.0, 480.0)  # in the 640x640 detector input


def tiny_yolox(path, with_person: bool = True):
    """yolox_l.onnx signature: images [1,3,640,640] -> output [1,8400,85] (cx,cy,w,h,obj,80 cls)."""
    bias = np.zeros((1, 8400, 85), np.float32)

    def plant(grid_x, grid_y, box, cls):
        # Stride-32 cell: index after the 80x80 and 40x40 grids; output is decoded as
        # (offset + grid) * stride and exp(wh) * stride.
        i = 80 * 80 + 40 * 40 + grid_y * 20 + grid_x
        x0, y0, x1, y1 = box
        bias[0, i, :4] = [(x0 + x1) / 2 / 32 - grid_x, (y0 + y1) / 2 / 32 - grid_y,
                          np.log((x1 - x0) / 32), np.log((y1 - y0) / 32)]
        bias[0, i, 4] = 0.95
        bias[0, i, 5 + cls] = 0.95

    if with_person:
        plant(10, 9, PERSON_BOX, cls=0)
    plant(3, 3, (0.0, 0.0, 600.0, 600.0), cls=2)  # a larger "car": must be ignored
    onnx.save(_constant_plus_image_mean("images", [1, 3, 640, 640], [("output", bias)]), str(path))


def tiny_dwpose(path, peaks_x, peaks_y):
    """dw-ll_ucoco_384.onnx signature: input [1,3,384,288] -> simcc_x [1,133,576], simcc_y [1,133,768]."""
    sx = np.zeros((1, 133, 576), np.float32)
    sy = np.zeros((1, 133, 768), np.float32)
    for k in range(133):
        if k == 5:
            continue  # one keypoint with no response at all
        sx[0, k, peaks_x[k]] = 0.8
        sy[0, k, peaks_y[k]] = 0.6
    onnx.save(_constant_plus_image_mean("input", [1, 3, 384, 288], [("simcc_x", sx), ("simcc_y", sy)]), str(path))


def expected_keypoints(box, peaks_x, peaks_y):
    """SimCC bins -> crop pixels for a person box (x0,y0,x1,y1): 1.25 padding, 3:4 aspect."""
    x0, y0, x1, y1 = box
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    w, h = (x1 - x0) * 1.25, (y1 - y0) * 1.25
    w, h = (h * 0.75, h) if w < h * 0.75 else (w, w / 0.75)
    return np.stack([peaks_x / 2 / 288 * w + center[0] - w / 2, peaks_y / 2 / 384 * h + center[1] - h / 2], 1)


@pytest.fixture()
def peaks():
    rng = np.random.default_rng(0)
    return rng.integers(0, 576, 133), rng.integers(0, 768, 133)


@pytest.mark.parametrize("with_person", [True, False])
def test_dwpose_backend_runs_the_onnx_pair(tmp_path, media_dir, peaks, with_person):
    det, pose = tmp_path / "yolox_l.onnx", tmp_path / "dw-ll_ucoco_384.onnx"
    tiny_yolox(det, with_person)
    tiny_dwpose(pose, *peaks)
    frame = read_frames(media_dir / "videos" / "d3.mp4", every=1, count=1)[0]
    stage = PoseStage(backend="dwpose", det_path=str(det), pose_path=str(pose), device="cpu")
    (out,) = stage.estimate([frame])
    assert out.shape == (133, 3) and out.dtype == np.float32

    # The detector sees a 640 letterbox of the 512 crop: its box comes back scaled by 512/640.
    box = np.array(PERSON_BOX) * 512 / 640 if with_person else np.array([0, 0, 512, 512])
    expected = expected_keypoints(box, *peaks)
    found = np.arange(133) != 5
    np.testing.assert_allclose(out[found, :2], expected[found], atol=0.05)
    np.testing.assert_allclose(out[found, 2], 0.7, atol=1e-4)
    assert out[5, 2] == 0 and np.all(out[5, :2] == 0)

    info = stage.describe()
    assert info["backend"] == "dwpose" and info["random_weights"] is False and len(info["sha256"]) == 2


def test_dwpose_missing_weights_fail_before_any_download(tmp_path, monkeypatch):
    import rtmlib.tools.base as rtm_base

    def no_download(*args, **kwargs):
        raise AssertionError("rtmlib tried to download")

    monkeypatch.setattr(rtm_base, "download_checkpoint", no_download)
    det = tmp_path / "yolox_l.onnx"
    tiny_yolox(det)
    cases = [
        (dict(det_path=str(tmp_path / "absent.onnx"), pose_path=str(det)), "features.pose.det_path"),
        (dict(det_path=str(det), pose_path=str(tmp_path / "dw-ll_ucoco_384.onnx")), "features.pose.pose_path"),
        (dict(det_path=str(det)), "features.pose.pose_path is not set"),
    ]
    for kwargs, setting in cases:
        stage = PoseStage(backend="dwpose", **kwargs)
        with pytest.raises(WeightsMissing, match=setting) as err:
            stage.estimate([np.zeros((512, 512, 3), np.uint8)])
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="det_score_thr"):
        PoseStage(backend="dwpose", det_score_thr=0.0)
