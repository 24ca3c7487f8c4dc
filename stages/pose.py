"""Whole-body pose per frame in the 133-keypoint COCO-WholeBody layout, with scores.

Layout (rows of the (133, 3) float32 array: x, y in crop pixels, score; score 0 = absent):
  0-16 COCO-17 body, 17-22 feet (L big toe, L small toe, L heel, R big toe, R small toe,
  R heel), 23-90 face in iBUG-68 order, 91-111 left hand, 112-132 right hand (21 each: root,
  thumb 1-4, index 1-4, middle 1-4, ring 1-4, pinky 1-4). Left/right are the subject's.

Backends:
- ``mediapipe`` (default, weights ship with the pip package): Holistic(model_complexity=1) in
  tracking mode, forgetting the clip before at each clip, without its temporal smoothing (clip frames may be far apart
  in time; the filter made points lag a turning head). In a build, its graph runs without the
  face branch and face 68 comes from curation's 478-point mesh of the same frame; called
  without landmarks, from Holistic's own refined mesh; both through MESH_TO_IBUG68 below.
  Body from the 33 pose points, big toes from foot_index and heels from the heel points
  (small toes absent), hands as they are (MediaPipe's 21 hand points use the COCO-WholeBody
  hand order). In video clips the model runs on every ``every``-th frame (and every frame
  while a hand is in view); the frames between are interpolated. Scores: pose visibility for body and feet, 1.0 for
  detected face and hand points (those models give no per-point confidence).
- ``dwpose``: YOLOX-L person detector + DWPose RTMPose-L (yolox_l.onnx, dw-ll_ucoco_384.onnx)
  from local paths, run by rtmlib's YOLOX/RTMPose on onnxruntime (its letterbox, affine crop,
  normalisation and SimCC decoding). Frames are given to it as BGR, as DWPose expects. The
  largest person box is used; without one the whole crop is the box (the subject fills a
  portrait crop). Scores are rtmlib's (mean of the two SimCC maxima), negatives set to 0.
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from .base import Settings, WeightsMissing
from .library_imports import import_mediapipe, mediapipe_version

STAGE = "pose"
N_KEYPOINTS = 133
log = logging.getLogger(__name__)


class PoseConfig(Settings):
    """The ``features.pose:`` section of the build config."""

    backend: Literal["mediapipe", "dwpose", "none"] = "mediapipe"
    det_path: str | None = Field(None, description="dwpose: yolox_l.onnx")
    pose_path: str | None = Field(None, description="dwpose: dw-ll_ucoco_384.onnx")
    device: str = "auto"
    det_score_thr: float = Field(0.3, ge=0.05, le=1)
    every: int = Field(3, ge=1, le=12, description=(
        "the pose model runs on every N-th frame of a video clip, its last, and every frame "
        "while a hand is in view; the frames between take points interpolated linearly. "
        "1 = every frame. bench/bench_pose_rate.py measures the error against every frame"))

BODY = slice(0, 17)
FEET = slice(17, 23)
FACE = slice(23, 91)
LEFT_HAND = slice(91, 112)
RIGHT_HAND = slice(112, 133)

# MediaPipe Pose landmark index for each COCO-17 body point (nose, eyes, ears, shoulders,
# elbows, wrists, hips, knees, ankles; left before right, the subject's sides).
MP_POSE_TO_COCO17 = [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]
# Feet rows 17-22 -> MediaPipe Pose index, None where MediaPipe has no such point.
MP_POSE_TO_FEET = [31, None, 29, 32, None, 30]

# Face-mesh indices averaged for each iBUG-68 point. Our own table, APPROXIMATE: MediaPipe
# publishes no official mapping, and the mesh has no exact counterpart of the iBUG jaw
# contour, so the jaw points follow the mesh silhouette (234 ... 152 ... 454) at roughly the
# iBUG spacing. Checked by drawing it on fixture frames. "Left in image" = subject's right.
MESH_TO_IBUG68: list[tuple[int, ...]] = [
    # 0-16 jaw, image-left ear level -> chin (8) -> image-right ear level
    (234,), (93,), (132,), (58,), (172,), (136,), (150, 149), (176, 148), (152,),
    (377, 400), (379, 378), (365,), (397,), (288,), (361,), (323,), (454,),
    # 17-21 image-left brow outer -> inner, 22-26 image-right brow inner -> outer
    # (mean of the brow's upper and lower edge)
    (70, 46), (63, 53), (105, 52), (66, 65), (107, 55),
    (336, 285), (296, 295), (334, 282), (293, 283), (300, 276),
    # 27-30 nose bridge top -> tip, 31-35 nostril base image-left -> right (33 = subnasale)
    (168,), (197,), (5,), (1,), (98,), (97,), (2,), (326,), (327,),
    # 36-41 image-left eye: outer corner, upper lid x2, inner corner, lower lid x2
    (33,), (160,), (158,), (133,), (153,), (144,),
    # 42-47 image-right eye: inner corner, upper lid x2, outer corner, lower lid x2
    (362,), (385,), (387,), (263,), (373,), (380,),
    # 48-59 outer lips: image-left corner, upper lip -> right corner (54), lower lip back
    (61,), (40,), (37,), (0,), (267,), (270,), (291,), (321,), (405,), (17,), (181,), (91,),
    # 60-67 inner lips: image-left corner, upper -> right corner (64), lower back
    (78,), (80, 81), (13,), (311, 310), (308,), (318, 402), (14,), (178, 88),
]
assert len(MESH_TO_IBUG68) == 68 and all(len(ix) in (1, 2) for ix in MESH_TO_IBUG68)
# The table as two index arrays (a single point twice): every frame of every clip maps its mesh,
# and 68 small means a frame cost ~0.3 ms; (a + b) / 2 is what the mean of two gives, bit for bit.
_IBUG_A = np.array([ix[0] for ix in MESH_TO_IBUG68])
_IBUG_B = np.array([ix[-1] for ix in MESH_TO_IBUG68])


def mesh_to_ibug68(mesh: np.ndarray) -> np.ndarray:
    """(478|468, 2) face mesh -> (68, 2) float32 approximate iBUG-68 points: the mean of each
    point's mesh indices."""
    m = np.asarray(mesh, dtype=np.float32)
    return (m[_IBUG_A] + m[_IBUG_B]) * np.float32(0.5)


def empty_pose() -> np.ndarray:
    return np.zeros((N_KEYPOINTS, 3), dtype=np.float32)


def _landmarks_px(landmark_list, width: int, height: int) -> np.ndarray:
    return np.array([(p.x * width, p.y * height) for p in landmark_list.landmark], dtype=np.float32)


def holistic_to_wholebody(result, width: int, height: int) -> np.ndarray:
    """A MediaPipe Holistic result -> (133, 3) COCO-WholeBody array (absent points score 0)."""
    out = empty_pose()
    if result.pose_landmarks is not None:
        xy = _landmarks_px(result.pose_landmarks, width, height)
        vis = np.array([p.visibility for p in result.pose_landmarks.landmark], dtype=np.float32)
        out[BODY, :2] = xy[MP_POSE_TO_COCO17]
        out[BODY, 2] = vis[MP_POSE_TO_COCO17]
        for row, idx in enumerate(MP_POSE_TO_FEET, start=FEET.start):
            if idx is not None:
                out[row, :2] = xy[idx]
                out[row, 2] = vis[idx]
    face = getattr(result, "face_landmarks", None)  # absent from the graph without a face branch
    if face is not None:
        out[FACE, :2] = mesh_to_ibug68(_landmarks_px(face, width, height))
        out[FACE, 2] = 1.0
    for part, hand in ((LEFT_HAND, result.left_hand_landmarks), (RIGHT_HAND, result.right_hand_landmarks)):
        if hand is not None:
            out[part, :2] = _landmarks_px(hand, width, height)
            out[part, 2] = 1.0
    return out


def interpolate_keyframes(keys: list[int], poses: list[np.ndarray], n: int) -> list[np.ndarray]:
    """Poses at frames ``keys`` (ascending, 0 and n-1 among them) -> poses of all n frames.

    A point seen at both neighbouring keyframes moves linearly between them (score too); a
    point seen at one only takes the nearer keyframe's value (a hand entering the picture
    appears at the midpoint rather than being dragged in from nowhere).
    """
    out: list[np.ndarray | None] = [None] * n
    for k, p in zip(keys, poses):
        out[k] = p
    for a, b, pa, pb in zip(keys, keys[1:], poses, poses[1:]):
        both = (pa[:, 2] > 0) & (pb[:, 2] > 0)
        for i in range(a + 1, b):
            t = (i - a) / (b - a)
            p = (pa if t < 0.5 else pb).copy()
            p[both] = ((1 - t) * pa[both] + t * pb[both]).astype(np.float32)
            out[i] = p
    return out


def has_hand(pose: np.ndarray) -> bool:
    return bool(pose[LEFT_HAND.start, 2] > 0 or pose[RIGHT_HAND.start, 2] > 0)


def run_keyframes(n: int, every: int, model_at) -> tuple[list[int], list[np.ndarray]]:
    """The model (``model_at(i)`` -> pose of frame i, called in frame order) on frame 0, then on
    every ``every``-th frame, and on every frame while a hand is in view, and on the last.

    Hands move fast: between keyframes 3 apart (0.24 s at 12.5 fps) interpolated hands lie
    farther from the model's own hands than two runs of the model lie apart, bodies and faces
    do not (bench/bench_pose_rate.py). A hand entering between two keyframes is found at the
    second.
    """
    keys: list[int] = []
    poses: list[np.ndarray] = []
    i = 0
    while i < n:
        poses.append(model_at(i))
        keys.append(i)
        if i == n - 1:
            break
        i = min(i + (1 if has_hand(poses[-1]) else max(1, every)), n - 1)
    return keys, poses


_HOLISTIC_GRAPH = "modules/holistic_landmark/holistic_landmark_cpu.binarypb"
_FACE_NODES = ("SplitNormalizedLandmarkListCalculator", "FaceLandmarksFromPoseCpu")


def _holistic_graph(face: bool):
    """MediaPipe Holistic (full pose model, tracking, no smoothing) as the wheel builds it, or,
    without ``face``, the wheel's own Holistic graph with its face branch removed: the same
    pose and hand subgraphs, settings and outputs for them (identical points, checked by
    tests/test_pose.py), ~6 ms a frame less on a CPU. The face branch only re-runs the face
    mesh that curation already ran on the same frame."""
    mp = import_mediapipe()
    from mediapipe.python.solution_base import SolutionBase

    if face:
        return mp.solutions.holistic.Holistic(
            static_image_mode=False, model_complexity=1, refine_face_landmarks=True, smooth_landmarks=False
        )
    from mediapipe.framework import calculator_pb2

    config = calculator_pb2.CalculatorGraphConfig()
    config.ParseFromString((Path(mp.__file__).parent / _HOLISTIC_GRAPH).read_bytes())
    nodes = [n for n in config.node if n.calculator not in _FACE_NODES]
    outputs = [o for o in config.output_stream if not o.startswith("FACE_LANDMARKS:")]
    side = [s for s in config.input_side_packet if not s.startswith("REFINE_FACE_LANDMARKS:")]
    del config.node[:], config.output_stream[:], config.input_side_packet[:]
    config.node.extend(nodes)
    config.output_stream.extend(outputs)
    config.input_side_packet.extend(side)
    return SolutionBase(
        graph_config=config,
        side_inputs={"model_complexity": 1, "smooth_landmarks": False, "enable_segmentation": False,
                     "smooth_segmentation": False, "use_prev_landmarks": True},
        # Holistic's own thresholds (mediapipe/python/solutions/holistic.py).
        calculator_params={
            "poselandmarkcpu__posedetectioncpu__TensorsToDetectionsCalculator.min_score_thresh": 0.5,
            "poselandmarkcpu__poselandmarkbyroicpu__tensorstoposelandmarksandsegmentation__"
            "ThresholdingCalculator.threshold": 0.5,
        },
        outputs=["pose_landmarks", "left_hand_landmarks", "right_hand_landmarks"],
    )


def _onnx_device(device: str) -> str:
    if device != "auto":
        return device
    import onnxruntime as ort

    return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"


class PoseStage:
    name = STAGE

    def __init__(
        self,
        backend: str = "mediapipe",
        det_path: str | None = None,
        pose_path: str | None = None,
        device: str = "auto",
        det_score_thr: float = 0.3,
        every: int = 3,
    ):
        if backend not in ("mediapipe", "dwpose"):
            raise ValueError(f"features.pose.backend must be 'mediapipe' or 'dwpose', got {backend!r}")
        # rtmlib's per-class NMS over 8400x80 candidates effectively never ends near 0.
        if not 0.05 <= det_score_thr < 1:
            raise ValueError(f"features.pose.det_score_thr must be in [0.05, 1), got {det_score_thr}")
        self.backend = backend
        self.det_path = det_path
        self.pose_path = pose_path
        self.device = device
        self.det_score_thr = det_score_thr
        self.every = int(every)
        self._det = self._pose = None
        self._holistic: dict[bool, object] = {}  # with the face branch or not -> its graph
        self._device = None

    @classmethod
    def from_settings(cls, settings: PoseConfig) -> PoseStage:
        return cls(backend=settings.backend, det_path=settings.det_path, pose_path=settings.pose_path,
                   device=settings.device, det_score_thr=settings.det_score_thr, every=settings.every)

    @staticmethod
    def weight_files(settings: PoseConfig) -> dict[str, str]:
        if settings.backend != "dwpose":
            return {}
        return {"features.pose.det_path": settings.det_path or "", "features.pose.pose_path": settings.pose_path or ""}

    def _check_paths(self) -> None:
        settings = (("features.pose.det_path", self.det_path), ("features.pose.pose_path", self.pose_path))
        for setting, value in settings:
            if not value:
                raise WeightsMissing(
                    f"{setting} is not set (the dwpose backend needs yolox_l.onnx and dw-ll_ucoco_384.onnx)"
                )
            if not Path(value).expanduser().is_file():
                raise WeightsMissing(f"{setting}: file not found: {value}")

    def setup(self) -> None:
        if self.backend != "dwpose" or self._pose is not None:
            return
        # Check first: rtmlib treats any path it cannot find as a URL to download.
        self._check_paths()
        from rtmlib import YOLOX, RTMPose

        self._device = _onnx_device(self.device)
        with contextlib.redirect_stdout(io.StringIO()):  # rtmlib prints a line per model
            self._det = YOLOX(
                str(Path(self.det_path).expanduser()),
                model_input_size=(640, 640),
                det_mode="multiclass",
                nms_thr=0.45,
                score_thr=self.det_score_thr,
                backend="onnxruntime",
                device=self._device,
            )
            self._pose = RTMPose(
                str(Path(self.pose_path).expanduser()),
                model_input_size=(288, 384),  # (W, H)
                backend="onnxruntime",
                device=self._device,
            )

    def estimate(self, crops: list[np.ndarray], landmarks: list[np.ndarray] | None = None,
                 video: bool = False) -> list[np.ndarray]:
        """RGB uint8 crops of one clip, in order -> one (133, 3) float32 array per frame.

        ``video``: the crops are a video clip's consecutive frames, so the model runs on every
        ``every``-th one (every one while a hand is in view) and the rest are interpolated
        (image views are separate pictures: all run). ``landmarks``: the curation mesh's
        (478, 2) points per crop (crop pixels); with the mediapipe backend the face-68 points
        come from them, for every frame, instead of from Holistic's own second run of the same
        mesh model.
        """
        for c in crops:
            if c.dtype != np.uint8 or c.ndim != 3 or c.shape[2] != 3:
                raise ValueError(f"pose: expected RGB uint8 crops, got {c.shape} {c.dtype}")
        mesh_face = landmarks is not None and self.backend == "mediapipe"
        if self.backend == "mediapipe":
            model = self._mediapipe_model(face=not mesh_face)
        else:
            self.setup()
            model = self._estimate_dwpose
        keys, poses = run_keyframes(len(crops), self.every if video else 1, lambda i: model(crops[i]))
        out = interpolate_keyframes(keys, poses, len(crops)) if len(keys) < len(crops) else poses
        if mesh_face:
            for p, lm in zip(out, landmarks):
                p[FACE, :2] = mesh_to_ibug68(lm)
                p[FACE, 2] = 1.0
        return out

    def _mediapipe_model(self, face: bool = True):
        """A Holistic graph as a per-frame function, with nothing carried over from the clip
        before (call once per clip, then on its frames in order). Without ``face``: Holistic's
        graph without its face branch (the face-68 points then come from curation's mesh)."""
        # Tracking mode reuses the last ROI (faster). One graph per stage, and nothing carries
        # over from the clip before: a frame without a person drops every tracked region, so
        # the next frame is detected afresh, as on a new graph (tests/test_pose.py checks the
        # poses are identical). That frame costs ~19 ms; a new graph ~0.24 s of model loading
        # and ``reset()`` ~0.16 s, against clips of a few dozen frames and images of one.
        graph = self._holistic.get(face)
        if graph is None:
            graph = self._holistic[face] = _holistic_graph(face)
        else:
            graph.process(np.zeros((64, 64, 3), np.uint8))

        def model(crop: np.ndarray) -> np.ndarray:
            h, w = crop.shape[:2]
            return holistic_to_wholebody(graph.process(np.ascontiguousarray(crop)), w, h)

        return model

    def _estimate_dwpose(self, crop: np.ndarray) -> np.ndarray:
        bgr = np.ascontiguousarray(crop[..., ::-1])
        h, w = crop.shape[:2]
        boxes, classes = self._det(bgr)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        persons = boxes[np.asarray(classes).reshape(-1) == 0]
        if len(persons):
            area = (persons[:, 2] - persons[:, 0]) * (persons[:, 3] - persons[:, 1])
            box = persons[int(np.argmax(area))]
        else:
            box = np.array([0.0, 0.0, w, h])
        keypoints, scores = self._pose(bgr, bboxes=[box.tolist()])
        out = empty_pose()
        out[:, :2] = keypoints[0]
        out[:, 2] = np.clip(scores[0], 0.0, None)
        out[out[:, 2] <= 0, :2] = 0.0  # no location where the model found nothing
        return out

    def describe(self) -> dict:
        if self.backend == "mediapipe":
            return {
                "stage": STAGE,
                "backend": "mediapipe",
                "model": "holistic(model_complexity=1)",
                "version": mediapipe_version(),  # the driver calls this: no import
                "layout": "coco_wholebody_133",
                "every": self.every,  # and every frame while a hand is in view
                "face68": "curation's face mesh (478, refined) through the approximate mesh->iBUG-68 table",
                "absent": "small toes (score 0)",
                "random_weights": False,
            }
        from manifests.shards import sha256_of

        self._check_paths()
        return {
            "stage": STAGE,
            "backend": "dwpose",
            "det_path": str(self.det_path),
            "pose_path": str(self.pose_path),
            "sha256": {str(p): sha256_of(Path(p).expanduser()) for p in (self.det_path, self.pose_path)},
            "device": self._device or _onnx_device(self.device),
            "layout": "coco_wholebody_133",
            "every": self.every,  # and every frame while a hand is in view
            "random_weights": False,
        }
