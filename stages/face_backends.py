"""Optional heavyweight face backends that load the user's own weights from a local path.

- ``ScrfdDetector``: insightface's SCRFD detector (e.g. ``det_10g.onnx`` from ``buffalo_l``) on
  onnxruntime's CPU provider, through insightface's own ``SCRFD`` class (its letterbox resize,
  normalisation, anchor decoding and NMS). Chosen with ``faces.detector: scrfd`` and
  ``faces.detector_path``.
- ``FaceAlignmentLandmarks``: the face-alignment library's 2D FAN (68 iBUG points) from a
  ``2DFAN4-*.pth.tar`` state_dict, run on boxes we give it (its own crop and heatmap decoding).
  Chosen with ``faces.landmarks: face_alignment`` and ``faces.landmarks_path``.

Neither downloads anything: a missing or unusable file is ``WeightsMissing`` with one line that
names the setting. Both take RGB uint8 frames and answer in frame pixels.
"""
from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import numpy as np

from .base import WeightsMissing, onnx_session_options, resolve_device

DETECTOR_SETTING = "faces.detector_path"
LANDMARKS_SETTING = "faces.landmarks_path"

# Output counts insightface's SCRFD knows how to decode: 3 strides x (score, bbox[, kps]) with
# 2 anchors, or 5 strides x (score, bbox[, kps]) with 1 anchor.
_SCRFD_OUTPUTS = (6, 9, 10, 15)
# face-alignment's crop scale for a box is (w + h) / reference_scale. Its S3FD boxes are loose
# (195); for the tight boxes of SCRFD, RetinaFace and YuNet it uses 165, and BlazeFace boxes are
# tight too, so 165 suits both of this project's detectors.
_TIGHT_BOX_REFERENCE_SCALE = 165.0


def _weights_file(setting: str, value: str | None, what: str) -> Path:
    if value in (None, ""):
        raise WeightsMissing(f"{setting} is not set (this backend needs {what})")
    path = Path(value).expanduser()
    if not path.is_file():
        raise WeightsMissing(f"{setting}: file not found: {path}")
    return path


def _check_rgb(rgb: np.ndarray, who: str) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise ValueError(f"{who}: expected an (H, W, 3) uint8 RGB frame, got shape {shape} dtype {dtype}")


class ScrfdDetector:
    """Face boxes and scores from insightface's SCRFD on a user-supplied ONNX file."""

    backend = "insightface_scrfd"

    def __init__(self, model_path: str, det_size=(640, 640), min_confidence: float = 0.5):
        size = tuple(int(v) for v in det_size)
        # insightface builds each anchor grid as size // stride; it only matches the network's
        # outputs when the size divides by the coarsest stride (32 for det_10g).
        if len(size) != 2 or any(v <= 0 or v % 32 for v in size):
            raise ValueError(f"scrfd det_size must be two positive multiples of 32 (width, height), got {det_size}")
        if not 0.0 < float(min_confidence) <= 1.0:
            raise ValueError(f"scrfd min_confidence must be in (0, 1], got {min_confidence}")
        self.model_path = None if model_path in (None, "") else str(model_path)
        self.det_size = size
        self.min_confidence = float(min_confidence)
        self.model = None
        self._sha256: str | None = None

    def setup(self) -> None:
        if self.model is not None:
            return
        path = _weights_file(DETECTOR_SETTING, self.model_path, "an SCRFD ONNX such as det_10g.onnx")
        import onnxruntime
        from insightface.model_zoo.scrfd import SCRFD

        from manifests.shards import sha256_of

        try:
            # Our own CPU session rather than model_zoo.get_model: get_model only takes paths
            # ending in .onnx (anything else is looked up as a model-pack name under
            # ~/.insightface) and routes by shape silently; here any file name works and a
            # wrong file gets a clear line.
            session = onnxruntime.InferenceSession(str(path), sess_options=onnx_session_options(),
                                                   providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise WeightsMissing(
                f"{DETECTOR_SETTING}: {path.name} is not a readable ONNX model ({type(e).__name__})"
            ) from None
        n_out = len(session.get_outputs())
        if n_out not in _SCRFD_OUTPUTS or len(session.get_inputs()[0].shape) != 4:
            raise WeightsMissing(
                f"{DETECTOR_SETTING}: {path.name} is not an SCRFD detection model "
                f"({n_out} outputs; SCRFD has 6, 9, 10 or 15 and an NCHW input)"
            )
        extra = {}
        if "static_shape_sessions" in inspect.signature(SCRFD).parameters:
            # insightface 2.x would otherwise build a second, fixed-shape session per detection
            # size next to this one; one dynamic session is how det_10g ran in 0.7 and halves
            # the memory per worker.
            extra["static_shape_sessions"] = False
        model = SCRFD(model_file=str(path), session=session, **extra)
        # ctx_id=-1: CPU. det_size is passed explicitly because insightface 2.x otherwise
        # detects at both 128 and 640 and merges the results. The threshold is set here
        # (0.7.3's detect() has no det_thresh argument).
        model.prepare(-1, input_size=self.det_size, det_thresh=self.min_confidence)
        self._sha256 = sha256_of(path)
        self.model = model

    def describe(self) -> dict:
        """What the settings say; once loaded (in a worker: the driver loads no model), also
        the weights' sha256 and what insightface made of them."""
        info = {
            "backend": self.backend,
            "model_path": self.model_path,
            "det_size": list(self.det_size),
            "min_confidence": self.min_confidence,
            "random_weights": False,
        }
        if self.model is not None:
            import insightface

            info.update(sha256=self._sha256, det_size=list(self.model.input_size),
                        nms_iou=float(self.model.nms_thresh), insightface_version=insightface.__version__)
        return info

    def close(self) -> None:
        self.model = None

    def __getstate__(self) -> dict:
        # Ray may ship a set-up instance to another process: the session stays behind and the
        # copy loads its own on first use.
        return {**self.__dict__, "model": None}

    def detect_with_keypoints(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Like ``detect``, plus SCRFD's five points (n, 5, 2) in frame pixels (None for models
        without them): eyes, nose tip, mouth corners, image-left first."""
        _check_rgb(rgb, "scrfd")
        self.setup()
        # insightface expects OpenCV's BGR (its blob swaps back to RGB for the network).
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        det, kps = self.model.detect(bgr, input_size=self.det_size)
        det = np.asarray(det, dtype=np.float64).reshape(-1, 5)
        if kps is not None:
            kps = np.asarray(kps, dtype=np.float64).reshape(-1, 5, 2)
        return det[:, :4].copy(), det[:, 4].copy(), kps

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 frame -> (boxes (n, 4) x0, y0, x1, y1 in frame pixels, scores (n,)), both
        float64, best first, after SCRFD's NMS. Boxes are not clipped to the frame (like the
        MediaPipe detector's): a face cut by the border keeps its full extent."""
        boxes, scores, _ = self.detect_with_keypoints(rgb)
        return boxes, scores


def _fan_state_dict(path: Path) -> tuple[dict, int]:
    """The FAN state_dict in ``path`` and its number of stacked hourglasses (4 for 2DFAN4)."""
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors are multi-line; their type is enough here
        raise WeightsMissing(f"{LANDMARKS_SETTING}: {path.name} does not load as torch weights with "
                             f"weights_only=True ({type(e).__name__})") from None
    # The released files are plain state_dicts; also accept a training checkpoint around one.
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise WeightsMissing(f"{LANDMARKS_SETTING}: {path.name} is not a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    modules = {int(m.group(1)) for k in state if (m := re.match(r"m(\d+)\.", k))}
    if not modules:
        raise WeightsMissing(
            f"{LANDMARKS_SETTING}: {path.name} is not a face-alignment FAN state_dict (no hourglass m0.*)"
        )
    return state, max(modules) + 1


class FaceAlignmentLandmarks:
    """68 iBUG landmarks of a face in a given box, from face-alignment's 2D FAN."""

    backend = "face_alignment_fan"

    def __init__(self, weights_path: str, device: str = "cpu", *, reference_scale: float = _TIGHT_BOX_REFERENCE_SCALE):
        self.weights_path = None if weights_path in (None, "") else str(weights_path)
        self.device = device
        self.reference_scale = float(reference_scale)
        self.num_modules: int | None = None
        self._fa = None
        self._sha256: str | None = None

    def setup(self) -> None:
        if self._fa is not None:
            return
        path = _weights_file(
            LANDMARKS_SETTING, self.weights_path, "a 2D FAN state_dict such as 2DFAN4-11f355bf06.pth.tar"
        )
        import torch
        from face_alignment import FaceAlignment, LandmarksType
        from face_alignment.models import FAN

        from manifests.shards import sha256_of

        state, n_modules = _fan_state_dict(path)
        net = FAN(n_modules)
        result = net.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise WeightsMissing(
                f"{LANDMARKS_SETTING}: {path.name} does not match face-alignment's FAN({n_modules}) "
                f"({len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected keys)"
            )
        device = resolve_device(self.device)
        net.to(device, dtype=torch.float32).eval()

        # FaceAlignment has no argument for a local FAN file: it fetches models_urls['2DFAN-4']
        # into torch.hub's cache. Rather than pointing torch.hub.set_dir (process-wide, shared
        # with rtmlib and others) at a folder holding a renamed copy, a subclass hands it the
        # network built above through the hook its __init__ calls, so nothing is looked up or
        # downloaded, any file name works, and the FaceAlignment crop/decoding code runs as is.
        if not callable(getattr(FaceAlignment, "_load_native", None)):
            import face_alignment

            # 1.4 and older load TorchScript archives and have no such hook.
            raise RuntimeError(f"face_alignment {face_alignment.__version__} cannot load local FAN weights here; "
                               "install face-alignment>=1.5")

        class _LocalFan(FaceAlignment):
            def _load_native(self, network_name, network_size, device, dtype):
                return net

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fa = _LocalFan(
                LandmarksType.TWO_D,
                device=device,
                # 'folder' loads no detector weights; boxes are always passed in.
                face_detector="folder",
                # compile=True costs minutes of torch.compile on a CPU; flip_input doubles the
                # cost for a small gain.
                compile=False,
                flip_input=False,
            )
        # The crop around a box follows the box's convention (see _TIGHT_BOX_REFERENCE_SCALE);
        # get_landmarks_from_image only reads reference_scale from its detector.
        fa.face_detector = _GivenBoxes(self.reference_scale)
        self._sha256 = sha256_of(path)
        self.num_modules = n_modules
        self._fa = fa

    def describe(self) -> dict:
        self.setup()
        import face_alignment

        return {
            "backend": self.backend,
            "weights_path": self.weights_path,
            "sha256": self._sha256,
            "landmarks": "68 iBUG, 2D",
            "num_modules": self.num_modules,
            "device": resolve_device(self.device),
            "flip_input": False,
            "reference_scale": self.reference_scale,
            "face_alignment_version": face_alignment.__version__,
            "random_weights": False,
        }

    def close(self) -> None:
        self._fa = None

    def __getstate__(self) -> dict:
        # The loaded network (a local FaceAlignment subclass) does not pickle; a copy sent to
        # another process loads its own on first use.
        return {**self.__dict__, "_fa": None}

    def landmarks68(self, rgb: np.ndarray, box) -> np.ndarray | None:
        """RGB uint8 frame + face box (x0, y0, x1, y1 frame pixels) -> (68, 2) float64 points in
        frame pixels, or None for an empty or non-finite box."""
        _check_rgb(rgb, "face_alignment")
        # float64: torch 2.13 refuses to assign numpy float32 scalars into its tensors inside
        # face-alignment's crop transform.
        b = np.asarray(box, dtype=np.float64).reshape(-1)
        if b.size != 4 or not np.all(np.isfinite(b)) or b[2] <= b[0] or b[3] <= b[1]:
            return None
        self.setup()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self._fa.get_landmarks_from_image(rgb, detected_faces=[b])
        if not out:
            return None
        pts = np.asarray(out[0], dtype=np.float64)[:, :2]
        return pts if pts.shape == (68, 2) and np.all(np.isfinite(pts)) else None


class _GivenBoxes:
    """Stands in for face-alignment's detector when the boxes come from ours."""

    def __init__(self, reference_scale: float):
        self.reference_scale = reference_scale

    def detect_from_image(self, image):
        raise RuntimeError("face_alignment landmarks need a box from the project's detector")
