"""Faces with the embedded default: mediapipe face detection + 478-point face mesh.

Per frame: every face is detected with the full-range BlazeFace model (it finds the small faces
of half-body shots that the mesh's own short-range detector misses), the primary face is chosen
(the one continuing the previous frame's track, else the largest confident one), and the mesh
runs on a square crop around it, so landmarks are as good for a small face in a 4K frame as for a
selfie. Landmarks come back in frame pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .crop import cv2_affine

N_LANDMARKS = 478
_MESH_INPUT = 256  # side of the square face crop fed to the mesh
_MESH_CONTEXT = 2.2  # crop side / detected box side: the mesh detector needs some context


@dataclass
class FaceObs:
    """What one frame shows: every detection, and the primary face's mesh."""

    boxes: np.ndarray  # (n, 4) x0, y0, x1, y1 frame pixels
    scores: np.ndarray  # (n,)
    primary: int | None = None  # index into boxes
    landmarks: np.ndarray | None = None  # (478, 2) frame pixels, primary face

    @property
    def n_faces(self) -> int:
        return len(self.scores)

    def significant_faces(self, min_rel_size: float = 1 / 3) -> int:
        """Faces at least ``min_rel_size`` of the primary's size (background faces don't count)."""
        if self.primary is None:
            return 0
        sizes = np.maximum(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1])
        return int(np.sum(sizes >= min_rel_size * sizes[self.primary]))

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


@dataclass
class FaceAnalyzer:
    min_confidence: float = 0.5
    _detector: object = field(default=None, repr=False)
    _mesh: object = field(default=None, repr=False)

    def setup(self) -> None:
        import mediapipe as mp

        # model_selection=1: the full-range model (faces up to ~5 m), bundled in the wheel.
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=self.min_confidence
        )
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.3
        )

    def describe(self) -> dict:
        return {"backend": "mediapipe", "detector": "face_detection full-range", "mesh": "face_mesh 478 (refined)"}

    def close(self) -> None:
        for m in (self._detector, self._mesh):
            if m is not None:
                m.close()

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = rgb.shape[:2]
        res = self._detector.process(rgb)
        boxes, scores = [], []
        for d in res.detections or []:
            rb = d.location_data.relative_bounding_box
            x0, y0 = rb.xmin * w, rb.ymin * h
            boxes.append([x0, y0, x0 + rb.width * w, y0 + rb.height * h])
            scores.append(d.score[0])
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(scores, dtype=np.float64)

    def analyze(self, rgb: np.ndarray, previous: np.ndarray | None = None, seed: np.ndarray | None = None,
                track: FaceObs | None = None) -> FaceObs:
        """Detect faces, pick the primary (continuing ``previous`` or matching ``seed``), mesh it.

        With ``track`` (the previous frame's result), detection is skipped: the mesh runs around
        the previous landmarks, and the other faces of that detection are carried over. If the
        mesh loses the face there, this frame is detected after all.
        """
        if track is not None and track.landmarks is not None:
            landmarks = self.mesh(rgb, track.face_box)
            if landmarks is not None:
                boxes = track.boxes.copy()
                lo, hi = landmarks.min(0), landmarks.max(0)
                boxes[track.primary] = [lo[0], lo[1], hi[0], hi[1]]
                return FaceObs(boxes, track.scores, track.primary, landmarks)
        boxes, scores = self.detect(rgb)
        obs = FaceObs(boxes, scores)
        if len(scores) == 0:
            return obs
        obs.primary = self._choose_primary(boxes, scores, previous if previous is not None else seed)
        obs.landmarks = self.mesh(rgb, boxes[obs.primary])
        return obs

    @staticmethod
    def _choose_primary(boxes: np.ndarray, scores: np.ndarray, anchor: np.ndarray | None) -> int:
        sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        if anchor is not None:
            overlaps = np.array([box_iou(b, anchor) for b in boxes])
            if overlaps.max() > 0.1:
                return int(np.argmax(overlaps))
        return int(np.argmax(sizes * scores))

    def mesh(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """478 landmarks (frame pixels) of the face in ``box``, from a square crop around it."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = _MESH_CONTEXT * max(box[2] - box[0], box[3] - box[1])
        s = _MESH_INPUT / side
        # Affine map frame -> crop (continuous coordinates); border pixels are replicated so edge faces keep context.
        m = np.array([[s, 0, _MESH_INPUT / 2 - s * cx], [0, s, _MESH_INPUT / 2 - s * cy]], dtype=np.float64)
        # Only the region around the face is resampled (not the whole frame).
        h, w = rgb.shape[:2]
        x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
        x1, y1 = min(w, int(np.ceil(cx + side / 2))), min(h, int(np.ceil(cy + side / 2)))
        src, fx, fy = rgb[y0:y1, x0:x1], 1.0, 1.0
        if s < 0.5 and src.size:
            # warpAffine cannot area-average: shrink first (INTER_AREA), then warp near 1:1.
            rw, rh = src.shape[1], src.shape[0]
            src = cv2.resize(src, (max(1, round(rw * s)), max(1, round(rh * s))), interpolation=cv2.INTER_AREA)
            fx, fy = src.shape[1] / rw, src.shape[0] / rh
        # Continuous coordinates: region pixel q = (p - (x0, y0)) * f, so p = q / f + (x0, y0).
        warp = np.array([[s / fx, 0, m[0, 2] + s * x0], [0, s / fy, m[1, 2] + s * y0]], dtype=np.float64)
        crop = cv2.warpAffine(np.ascontiguousarray(src), cv2_affine(warp), (_MESH_INPUT, _MESH_INPUT),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        res = self._mesh.process(crop)
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        pts = np.array([(p.x, p.y) for p in lm], dtype=np.float64) * _MESH_INPUT
        return (pts - m[:, 2]) / s
