"""Faces with the embedded default: mediapipe face detection + 478-point face mesh.

Per frame: every face is detected with the full-range BlazeFace model (small faces of half-body
shots, up to ~5 m); where it finds none, the short-range model looks for a close-up (which the
full-range model misses: a clear 390-px face can go unseen). The primary face is chosen (the
one continuing the previous frame's track, else the largest confident one), and the mesh runs on
a square crop around it, so landmarks are as good for a small face in a 4K frame as for a selfie.
Landmarks come back in frame pixels.

Two checks on the primary face run on the same square crop, on detection frames only:
- ``human``: BlazeFace and the mesh fire on animal faces, cartoons of animals and round objects;
  the selfie segmentation model (trained to find people, paintings and statues included) does
  not. The score is its mean person probability inside the mesh's face oval (humans ~1, animals
  ~0); clips whose face is not human are rejected ``no_face``.
- ``hands``: mediapipe Hands' landmarks of any hand in the crop; the occlusion scorer measures
  how much of the mouth and eyes a hand covers.

The BlazePose person model (bundled, trained on people only; it finds painted and sculpted
people too) looks at square crops 3x and, if it finds no one there, 4x the face (head and
shoulders; then more of the body; with other faces in view, 2x first): if it finds a person
whose face keypoints fall on this face, the mean visibility of those keypoints (~0.97-1.0 on
people, covered or not) is that face's ``person`` score; animals, even those the segmenter takes
for people on a busy background, give none (0). It is asked on every 4th detection frame of a
track while BlazeFace is unsure of the face (score below ``SURE_SCORE``), and, for a face it is
sure of, once the face's mouth or eyes stop looking like a person's (``ask_person``, from the
curation stage, which scores them: an animal's, or a covered person's), carried along the track
from then on (a face does not change species). BlazeFace's confidence drops
when part of a face is covered (a hand or a patch over the mouth: 0.53-0.6 on a statue), to
where cartoon animals sit (0.50-0.59): for those faces the face's score is the larger of the
two, and stays what ``face_conf`` stores, so SQL re-thresholds it as before. ``person`` itself
is stored per clip as ``face_person`` (reason ``no_face`` under ``min_face_person``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from .base import Settings
from .face_geometry import FACE_OVAL, crop_affine, warp_square
from .library_imports import import_mediapipe

N_LANDMARKS = 478
_MESH_INPUT = 256  # side of the square face crop fed to the mesh
_MESH_CONTEXT = 2.2  # crop side / detected box side: the mesh detector needs some context
SIGNIFICANT_SIZE = 1 / 3  # other faces this share of the primary's size count as more people
SURE_SCORE = 0.75  # a primary face BlazeFace scores below this is shown to the pose model too
_POSE_FACE = list(range(11))  # BlazePose keypoints of the face: nose, eyes, ears, mouth corners
# The pose model's crop side / face side, tried in turn until it finds the person: head and
# shoulders (a close-up has little more), then more of the body (a covered face leaves it that).
# Where other faces are in view (a group), a tighter crop first: in a wider one the model may
# pick a neighbour, whose keypoints then miss this face. Not alone: a crop of a face and little
# else lets it take an animal's face for a person's.
_POSE_CONTEXTS = (3.0, 4.0)
_POSE_CONTEXTS_GROUP = (2.0, 3.0, 4.0)
# Cut-offs that shape n_faces, face_human and face_conf (named once, here):
_SAME_FACE_IOU = 0.3  # above this box IoU a detection frame's face is the carried one (its checks may carry over)
_TRACK_IOU = 0.1  # a face overlapping the track's (or the dataset's seed) box above this continues it
_MIN_OTHER_HUMAN = 0.5  # another face counts as a person from this person probability (animals score ~0)
_OTHER_FACE_AXES = 0.35  # half-axes of the ellipse read on another face, share of its box sides: its skin only


class FacesConfig(Settings):
    """The ``faces:`` section of the build config."""

    detector: Literal["mediapipe", "scrfd"] = Field(
        "mediapipe", description="mediapipe: both BlazeFace ranges (embedded); scrfd: insightface SCRFD"
    )
    detector_path: str | None = Field(None, description="scrfd: the detection ONNX, e.g. det_10g.onnx from buffalo_l")
    min_confidence: float = Field(0.5, gt=0, lt=1, description="detection score below which a face is not counted")
    hands: bool = Field(True, description="look for hands over the mouth and eyes (mediapipe Hands)")


@dataclass
class FaceObs:
    """What one frame shows: every detection, and the primary face's mesh."""

    boxes: np.ndarray  # (n, 4) x0, y0, x1, y1 frame pixels
    scores: np.ndarray  # (n,)
    primary: int | None = None  # index into boxes
    landmarks: np.ndarray | None = None  # (478, 2) frame pixels, primary face
    human: float | None = None  # person probability inside the face oval (0..1)
    hands: list[np.ndarray] = field(default_factory=list)  # (21, 2) frame pixels per hand near the face
    others_human: dict[int, float] = field(default_factory=dict)  # box index -> person probability, other large faces
    person: float | None = None  # BlazePose's face-keypoint visibility on this face (faces scored < SURE_SCORE only)

    @property
    def n_faces(self) -> int:
        return len(self.scores)

    def significant_faces(self, min_rel_size: float = SIGNIFICANT_SIZE, min_human: float = _MIN_OTHER_HUMAN) -> int:
        """Human faces at least ``min_rel_size`` of the primary's size (background faces, and
        the cat in a painting, don't count)."""
        if self.primary is None:
            return 0
        sizes = np.maximum(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1])
        big = np.flatnonzero(sizes >= min_rel_size * sizes[self.primary])
        return int(sum(i == self.primary or self.others_human.get(int(i), 1.0) >= min_human for i in big))

    @property
    def face_box(self) -> np.ndarray | None:
        """Tight box of the primary face's landmarks (more stable than the detector box)."""
        if self.landmarks is None:
            return None
        lo, hi = self.landmarks.min(0), self.landmarks.max(0)
        return np.array([lo[0], lo[1], hi[0], hi[1]], dtype=np.float64)

    @property
    def face_score(self) -> float | None:
        return None if self.primary is None else float(self.scores[self.primary])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


_CHECK_INPUT = 256  # side of the square crop the human and hand checks see
_CHECK_EVERY = 4  # in a video track, each check runs on every 4th detection frame (~1 s at defaults)
_CHECK_CONTEXT = 3.0  # its side / face side: shoulders and hands near the face are in


def _face_visibility(landmarks) -> float:
    """Mean visibility (clipped to 0..1) of a BlazePose result's face keypoints."""
    return float(np.mean([min(max(landmarks[i].visibility, 0.0), 1.0) for i in _POSE_FACE]))


@dataclass
class FaceAnalyzer:
    min_confidence: float = 0.5
    check_hands: bool = True
    detector: str = "mediapipe"  # or "scrfd" (insightface, user-supplied weights: stages/face_backends.py)
    detector_path: str | None = None
    _detectors: list = field(default_factory=list, repr=False)
    _scrfd: object = field(default=None, repr=False)
    _mesh: object = field(default=None, repr=False)
    _segmenter: object = field(default=None, repr=False)
    _hands: object = field(default=None, repr=False)
    _pose: object = field(default=None, repr=False)
    _n_checked: int = field(default=0, repr=False)

    def start_source(self) -> None:
        """The checks take turns by a count of detection frames: counted from each source's
        start, so a source's results never depend on what this worker analysed before it."""
        self._n_checked = 0

    def setup(self) -> None:
        mp = import_mediapipe()

        if self.detector == "scrfd":
            from .face_backends import ScrfdDetector

            self._scrfd = ScrfdDetector(self.detector_path or "", min_confidence=self.min_confidence)
            self._scrfd.setup()
        else:
            # Both BlazeFace models bundled in the wheel: 1 = full range (far), 0 = short range (close-ups).
            self._detectors = [
                mp.solutions.face_detection.FaceDetection(
                    model_selection=m, min_detection_confidence=self.min_confidence
                )
                for m in (1, 0)
            ]
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.3
        )
        # model_selection=0: the general (square 256) model, which suits the square face crop.
        self._segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        if self.check_hands:
            self._hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=0,
                                                   min_detection_confidence=0.5)
        # model_complexity=1: the full landmark model, the one the wheel bundles.
        self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, min_detection_confidence=0.5)

    def describe(self) -> dict:
        if self.detector == "scrfd":
            from .face_backends import ScrfdDetector

            detector = ScrfdDetector(self.detector_path or "", min_confidence=self.min_confidence).describe()
        else:
            detector = "mediapipe face_detection full-range + short-range"
        return {"backend": "mediapipe", "detector": detector, "mesh": "face_mesh 478 (refined)",
                "human_check": "selfie_segmentation (general) on the face crop",
                "hands": "hands (lite)" if self.check_hands else None,
                "person_check": f"pose (full) on {_POSE_CONTEXTS}x face crops, faces scored < {SURE_SCORE}"}

    def close(self) -> None:
        for m in (*self._detectors, self._scrfd, self._mesh, self._segmenter, self._hands, self._pose):
            if m is not None:
                m.close()

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._scrfd is not None:
            return self._scrfd.detect(rgb)
        h, w = rgb.shape[:2]
        boxes, scores = [], []
        for detector in self._detectors:
            if boxes:
                break  # the short-range model only looks for the close-up the full-range one missed
            for d in detector.process(rgb).detections or []:
                rb = d.location_data.relative_bounding_box
                x0, y0 = rb.xmin * w, rb.ymin * h
                boxes.append([x0, y0, x0 + rb.width * w, y0 + rb.height * h])
                scores.append(d.score[0])
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(scores, dtype=np.float64)

    def analyze(self, rgb: np.ndarray, previous: np.ndarray | None = None, seed: np.ndarray | None = None,
                track: FaceObs | None = None, carry: FaceObs | None = None) -> FaceObs:
        """Detect faces, pick the primary (continuing ``previous`` or matching ``seed``), mesh it.

        With ``track`` (the previous frame's result), detection is skipped: the mesh runs around
        the previous landmarks, and the other faces of that detection are carried over. If the
        mesh loses the face there, this frame is detected after all.

        ``carry``: the previous frame's result on a detection frame of a video. The two checks
        then run on every ``_CHECK_EVERY``-th detection frame of a track, taking turns (their
        results carry over in between): hands cost ~30 ms a call on a CPU, a face does not
        change species, and a hand over the mouth for a second is still seen.
        """
        if track is not None and track.landmarks is not None:
            landmarks = self.mesh(rgb, track.face_box)
            if landmarks is not None:
                boxes = track.boxes.copy()
                lo, hi = landmarks.min(0), landmarks.max(0)
                boxes[track.primary] = [lo[0], lo[1], hi[0], hi[1]]
                # The checks run on detection frames only (every few sampled frames); their
                # results carry over while the mesh tracks.
                return FaceObs(boxes, track.scores, track.primary, landmarks, human=track.human, hands=track.hands,
                               others_human=track.others_human, person=track.person)
        boxes, scores = self.detect(rgb)
        obs = FaceObs(boxes, scores)
        if len(scores) == 0:
            return obs
        obs.primary = self._choose_primary(boxes, scores, previous if previous is not None else seed)
        obs.landmarks = self.mesh(rgb, boxes[obs.primary])
        if obs.landmarks is not None:
            crop, m = self._check_crop(rgb, obs.landmarks)
            self._n_checked += 1
            same = (carry is not None and carry.landmarks is not None and carry.human is not None
                    and box_iou(carry.face_box, obs.face_box) > _SAME_FACE_IOU)
            if same and self._n_checked % _CHECK_EVERY != 0:
                obs.human, obs.others_human = carry.human, carry.others_human
            else:
                obs.human = self._human(crop, obs.landmarks * m[0, 0] + m[:, 2])
                obs.others_human = self._others_human(rgb, boxes, obs.primary)
            if same and self._n_checked % _CHECK_EVERY != _CHECK_EVERY // 2:
                obs.hands = carry.hands
            else:
                obs.hands = self._hands_in(crop, m) if self.check_hands else []
            if scores[obs.primary] < SURE_SCORE:
                # The pose model's turn is a third one (cost spread over the detection frames).
                if same and carry.person is not None and self._n_checked % _CHECK_EVERY != 1:
                    obs.person = carry.person
                else:
                    obs.person = self._person(rgb, obs.landmarks, group=len(boxes) > 1)
                obs.scores = scores.copy()
                obs.scores[obs.primary] = max(float(scores[obs.primary]), obs.person)
            elif same:
                obs.person = carry.person  # a sure face: asked by the caller where it looks covered (ask_person)
        return obs

    def _person(self, rgb: np.ndarray, landmarks: np.ndarray, group: bool = False) -> float:
        """BlazePose on square crops ``_POSE_CONTEXTS`` (``_POSE_CONTEXTS_GROUP`` with other faces
        in view) times the face, in turn: the mean visibility of the face keypoints of the first
        person found whose keypoints' median lies inside this face's landmark box (none: 0)."""
        lo, hi = landmarks.min(0), landmarks.max(0)
        c = (lo + hi) / 2
        for context in _POSE_CONTEXTS_GROUP if group else _POSE_CONTEXTS:
            side = context * float(max(hi - lo))
            m = crop_affine(c, max(side, 1.0), _CHECK_INPUT)
            res = self._pose.process(warp_square(rgb, m, c, side, _CHECK_INPUT, border=cv2.BORDER_CONSTANT))
            if res.pose_landmarks is None:
                continue
            lm = res.pose_landmarks.landmark
            kp = (np.array([(lm[i].x, lm[i].y) for i in _POSE_FACE], dtype=np.float64) * _CHECK_INPUT - m[:, 2])
            kp /= m[0, 0]  # back to frame pixels
            x, y = np.median(kp, axis=0)
            if lo[0] <= x <= hi[0] and lo[1] <= y <= hi[1]:
                return _face_visibility(lm)
        return 0.0

    def ask_person(self, rgb: np.ndarray, obs: FaceObs) -> float:
        """The pose model's opinion of the primary face of a detection frame, asked by the caller
        for a face BlazeFace is sure of when its mouth or eyes do not look like a person's (an
        animal's, or a person's under an occluder); stored in ``obs.person`` and carried along
        the track from then on (a face does not change species)."""
        obs.person = self._person(rgb, obs.landmarks, group=len(obs.boxes) > 1)
        return obs.person

    def person_in(self, rgb: np.ndarray, side: int = _CHECK_INPUT) -> float:
        """Whether a person is in a whole picture (one where no face, or no human face, was
        found): BlazePose on the picture reduced to ``side`` (padded square), the mean visibility
        of the face keypoints of the person it finds (none: 0). A picture too blurred for the face
        detector still shows a person to it (0.9-1.0); scenes without people give 0 on most frames."""
        h, w = rgb.shape[:2]
        s = side / max(h, w)
        small = cv2.resize(rgb, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
        square = np.zeros((side, side, 3), np.uint8)
        square[: small.shape[0], : small.shape[1]] = small
        res = self._pose.process(square)
        if res.pose_landmarks is None:
            return 0.0
        lm = res.pose_landmarks.landmark
        return _face_visibility(lm)

    def _others_human(self, rgb: np.ndarray, boxes: np.ndarray, primary: int) -> dict[int, float]:
        """The human check for the other faces large enough to count (no mesh on them: the
        person probability inside an ellipse inscribed in the detector's box)."""
        sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        out = {}
        for i in np.flatnonzero(sizes >= SIGNIFICANT_SIZE * sizes[primary]):
            if i == primary:
                continue
            b = boxes[i]
            c = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
            side = _CHECK_CONTEXT * float(sizes[i])
            m = crop_affine(c, max(side, 1.0), _CHECK_INPUT)
            s = m[0, 0]
            crop = warp_square(rgb, m, c, side, _CHECK_INPUT, border=cv2.BORDER_CONSTANT)
            prob = self._segmenter.process(crop).segmentation_mask
            ell = np.zeros(prob.shape, np.uint8)
            half = _OTHER_FACE_AXES * s
            axes = (max(1, int(half * (b[2] - b[0]))), max(1, int(half * (b[3] - b[1]))))
            cv2.ellipse(ell, (_CHECK_INPUT // 2, _CHECK_INPUT // 2), axes, 0, 0, 360, 1, -1)
            out[int(i)] = float(prob[ell.astype(bool)].mean())
        return out

    # -- checks on a square crop around the face ----------------------------------------------
    @staticmethod
    def _check_crop(rgb: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = landmarks.min(0), landmarks.max(0)
        c, side = (lo + hi) / 2, _CHECK_CONTEXT * float(max(hi - lo))
        m = crop_affine(c, max(side, 1.0), _CHECK_INPUT)
        # Black outside the frame: replicated border pixels read as a person to the segmenter.
        crop = warp_square(rgb, m, c, side, _CHECK_INPUT, border=cv2.BORDER_CONSTANT)
        return crop, m

    def _human(self, crop: np.ndarray, pts: np.ndarray) -> float:
        """Mean person probability inside the (slightly eroded) face oval of the crop."""
        prob = self._segmenter.process(crop).segmentation_mask
        oval = np.zeros(prob.shape, np.uint8)
        cv2.fillPoly(oval, [np.round(pts[FACE_OVAL]).astype(np.int32)], 1)
        inner = cv2.erode(oval, np.ones((5, 5), np.uint8)).astype(bool)
        region = inner if inner.sum() >= 20 else oval.astype(bool)
        return float(prob[region].mean()) if region.any() else 0.0

    def _hands_in(self, crop: np.ndarray, m: np.ndarray) -> list[np.ndarray]:
        res = self._hands.process(crop)
        out = []
        for hand in res.multi_hand_landmarks or []:
            pts = np.array([(p.x, p.y) for p in hand.landmark], dtype=np.float64) * _CHECK_INPUT
            out.append((pts - m[:, 2]) / m[0, 0])  # back to frame pixels
        return out


    @staticmethod
    def _choose_primary(boxes: np.ndarray, scores: np.ndarray, anchor: np.ndarray | None) -> int:
        sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        if anchor is not None:
            overlaps = np.array([box_iou(b, anchor) for b in boxes])
            if overlaps.max() > _TRACK_IOU:
                return int(np.argmax(overlaps))
        return int(np.argmax(sizes * scores))

    def mesh(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """478 landmarks (frame pixels) of the face in ``box``, from a square crop around it."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = _MESH_CONTEXT * max(box[2] - box[0], box[3] - box[1])
        # Affine map frame -> crop (continuous coordinates); border pixels are replicated so edge faces keep context.
        m = crop_affine((cx, cy), side, _MESH_INPUT)
        crop = warp_square(rgb, m, (cx, cy), side, _MESH_INPUT)
        res = self._mesh.process(crop)
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        pts = np.array([(p.x, p.y) for p in lm], dtype=np.float64) * _MESH_INPUT
        return (pts - m[:, 2]) / m[0, 0]

