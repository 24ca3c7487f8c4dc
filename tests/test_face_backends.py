"""Optional face backends on small models the tests build in the real formats:

- an SCRFD ONNX with det_10g's layout (input.1 [1,3,?,?]; score/bbox/kps for strides 8, 16, 32
  with 2 anchors, in that output order) whose stride-32 head fires on a red cell, run through
  insightface's SCRFD class;
- a face-alignment FAN state_dict from face-alignment's own FAN class (one hourglass instead
  of four) whose weights pass the image's red channel through to every heatmap, so the 68
  points must come back on a bright spot, in frame pixels, loaded through FaceAlignment.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from stages.base import CPU_THREADS_ENV, WeightsMissing
from stages.face_backends import FaceAlignmentLandmarks, ScrfdDetector

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("insightface")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# ---- SCRFD -------------------------------------------------------------------------------

STRIDES = (8, 16, 32)
SCORE = 0.9  # what the stride-32 head gives a cell that is pure red
# Box sides as distances from the anchor point, in stride units (left, top, right, bottom):
# anchors sit at the cell's top-left corner, so this centres a 4x4-cell box on the cell.
DIST = np.array([1.5, 1.5, 2.5, 2.5], np.float32)
KPS = np.array([1.0, 1.2, 2.0, 1.2, 1.5, 1.6, 1.1, 2.0, 1.9, 2.0], np.float32)  # five (dx, dy)


def save_scrfd(path, n_outputs: int = 9) -> None:
    """det_10g.onnx signature. Each stride: average-pool the normalised frame to its grid, a
    1x1 conv per head, then NHWC and flatten to (cells * 2 anchors, k) as SCRFD exports do.
    Only the stride-32 score head looks at the image: logit = 20 * R - b, R the cell's mean
    red channel as the network sees it ((v - 127.5) / 128, channels RGB after insightface's
    swap), b set so that a pure red cell scores SCORE and any other cell ~0."""
    w_red = 20.0
    r_full = (255 - 127.5) / 128
    bias = float(np.log(SCORE / (1 - SCORE)) - w_red * r_full)
    nodes, inits, outputs = [], [], {"score": [], "bbox": [], "kps": []}
    for s in STRIDES:
        nodes.append(helper.make_node("AveragePool", ["input.1"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s]))
        for head, k in (("score", 1), ("bbox", 4), ("kps", 10)):
            w = np.zeros((2 * k, 3, 1, 1), np.float32)
            if head == "score":
                b = np.full(2, -20.0, np.float32)
                if s == 32:
                    w[:, 0] = w_red
                    b[:] = bias
            else:
                b = np.tile(DIST if head == "bbox" else KPS, 2)
            inits += [numpy_helper.from_array(w, f"{head}{s}_w"), numpy_helper.from_array(b, f"{head}{s}_b")]
            nodes += [
                helper.make_node("Conv", [f"pool{s}", f"{head}{s}_w", f"{head}{s}_b"], [f"{head}{s}_c"]),
                helper.make_node("Transpose", [f"{head}{s}_c"], [f"{head}{s}_t"], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", [f"{head}{s}_t", f"shape{k}"], [f"{head}{s}_r"]),
            ]
            out = f"{head}_{s}"
            nodes.append(helper.make_node("Sigmoid" if head == "score" else "Identity", [f"{head}{s}_r"], [out]))
            outputs[head].append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [f"n{s}", k]))
    inits += [numpy_helper.from_array(np.array([-1, k], np.int64), f"shape{k}") for k in (1, 4, 10)]
    graph = helper.make_graph(
        nodes, "scrfd_tiny",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])],
        (outputs["score"] + outputs["bbox"] + outputs["kps"])[:n_outputs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def det_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("scrfd") / "det_10g.onnx"
    save_scrfd(path)
    return path


def frame_with_squares(*corners, color=(255, 0, 0), h=240, w=320):
    """Black RGB frame with 32-px squares at the given (x0, y0). A 320x240 frame is letterboxed
    2x into 640x640, so a square at (152, 104) fully covers the stride-32 cell (10, 7)."""
    rgb = np.zeros((h, w, 3), np.uint8)
    for x0, y0 in corners:
        rgb[y0 : y0 + 32, x0 : x0 + 32] = color
    return rgb


def expected_box(x0, y0):
    """The box the model gives for a square at (x0, y0): the anchor of the cell it covers,
    DIST strides out, scaled back by the letterbox factor 2."""
    ax, ay = (x0 + 16) * 2 // 32 * 32, (y0 + 16) * 2 // 32 * 32
    return np.array([ax - DIST[0] * 32, ay - DIST[1] * 32, ax + DIST[2] * 32, ay + DIST[3] * 32]) / 2


def test_scrfd_finds_the_faces_where_the_model_puts_them(det_path):
    det = ScrfdDetector(str(det_path))
    boxes, scores = det.detect(frame_with_squares((152, 104), (56, 104)))
    assert boxes.dtype == np.float64 and scores.dtype == np.float64
    assert boxes.shape == (2, 4) and scores.shape == (2,)
    order = np.argsort(boxes[:, 0])
    np.testing.assert_allclose(boxes[order], [expected_box(56, 104), expected_box(152, 104)], atol=1e-3)
    np.testing.assert_allclose(boxes[order[1]], [136, 88, 200, 152], atol=1e-3)  # centred on the square
    np.testing.assert_allclose(scores, SCORE, atol=1e-3)

    boxes, scores, kps = det.detect_with_keypoints(frame_with_squares((152, 104)))
    assert boxes.shape == (1, 4) and kps.shape == (1, 5, 2)
    np.testing.assert_allclose(kps[0], (np.array([320, 224]) + KPS.reshape(5, 2) * 32) / 2, atol=1e-3)
    det.close()


def test_scrfd_is_given_bgr_and_honours_min_confidence(det_path):
    det = ScrfdDetector(str(det_path))
    # The head reads the red channel: a blue square only fires if channels arrive swapped.
    boxes, scores = det.detect(frame_with_squares((152, 104), color=(0, 0, 255)))
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    strict = ScrfdDetector(str(det_path), min_confidence=0.95)
    boxes, scores = strict.detect(frame_with_squares((152, 104)))
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    with pytest.raises(ValueError, match="uint8 RGB"):
        det.detect(np.zeros((240, 320), np.uint8))


def test_scrfd_describe_records_the_weights(det_path):
    det = ScrfdDetector(str(det_path), det_size=(320, 320))
    assert "sha256" not in det.describe() and det.model is None  # the driver's record loads nothing
    det.setup()
    info = det.describe()
    assert info["backend"] == "insightface_scrfd"
    assert info["model_path"] == str(det_path)
    assert info["sha256"] == hashlib.sha256(det_path.read_bytes()).hexdigest()
    assert info["det_size"] == [320, 320] and info["min_confidence"] == 0.5
    assert info["random_weights"] is False


def test_scrfd_survives_pickling_after_setup(det_path):
    # Ray ships stages to workers by pickling; deepcopy goes through the same __getstate__ /
    # __setstate__ without unpickling bytes.
    import copy as copying

    det = ScrfdDetector(str(det_path))
    det.setup()
    copy = copying.deepcopy(det)
    boxes, _ = copy.detect(frame_with_squares((152, 104)))
    np.testing.assert_allclose(boxes, [expected_box(152, 104)], atol=1e-3)


def test_scrfd_weights_errors_are_one_line_naming_the_setting(tmp_path):
    not_scrfd = tmp_path / "w600k_r50.onnx"
    save_scrfd(not_scrfd, n_outputs=1)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx file")
    for path, words in ((tmp_path / "det_10g.onnx", "file not found"), (not_scrfd, "not an SCRFD"),
                        (garbage, "not a readable ONNX"), ("", "is not set")):
        with pytest.raises(WeightsMissing) as e:
            ScrfdDetector(str(path)).setup()
        msg = str(e.value)
        assert msg.startswith("faces.detector_path") and words in msg and "\n" not in msg
    with pytest.raises(ValueError, match="multiples of 32"):
        ScrfdDetector(str(not_scrfd), det_size=(600, 600))


# ---- face-alignment FAN ------------------------------------------------------------------


def pass_through_fan():
    """face-alignment's FAN(1) with every convolution zeroed except a channel-0 path: conv1
    takes the red channel's centre tap, the channel-changing residual 1x1 convs and conv_last
    copy channel 0, batch norms are identities (so same-width ConvBlocks are identities and
    the hourglass sums the map with its coarser averages), and l0 copies channel 0 into all
    68 heatmaps. Every heatmap then peaks where the crop is brightest."""
    torch = pytest.importorskip("torch")
    from face_alignment.models import FAN

    net = FAN(1)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.running_var.fill_(1.0)
        net.conv1.weight[0, 0, 3, 3] = 1.0
        net.conv2.downsample[2].weight[0, 0] = 1.0
        net.conv4.downsample[2].weight[0, 0] = 1.0
        net.conv_last0.weight[0, 0] = 1.0
        net.l0.weight[:, 0] = 1.0
    return net.state_dict()


@pytest.fixture(scope="module")
def fan_state():
    pytest.importorskip("face_alignment")
    return pass_through_fan()


@pytest.fixture(scope="module")
def fan_path(tmp_path_factory, fan_state):
    import torch

    path = tmp_path_factory.mktemp("fan") / "2DFAN4-11f355bf06.pth.tar"
    torch.save(fan_state, path)
    return path


@pytest.fixture
def uncompiled_decoding(monkeypatch):
    """face-alignment decodes heatmaps with two numba functions whose first call compiles for
    ~15 s of CPU; the test runs the same functions uncompiled (numba's py_func) to stay fast.
    A real worker pays the compile once, on its first face."""
    from face_alignment import utils

    for name in ("_get_preds_fromhm", "transform_np"):
        fn = getattr(utils, name)
        monkeypatch.setattr(utils, name, getattr(fn, "py_func", fn))


def test_fan_points_come_back_on_the_spot_in_frame_pixels(fan_path, uncompiled_decoding):
    lm = FaceAlignmentLandmarks(str(fan_path))
    # Two boxes in different places and sizes on a non-square frame, a bright 8-px spot inside
    # each: every point must land on the spot, so the crop-to-frame mapping is right.
    for box, spot in (([100.0, 60.0, 200.0, 170.0], (170, 90)), ([20.0, 130.0, 90.0, 230.0], (45, 200))):
        rgb = np.zeros((240, 320, 3), np.uint8)
        rgb[spot[1] - 4 : spot[1] + 4, spot[0] - 4 : spot[0] + 4] = 255
        pts = lm.landmarks68(rgb, np.array(box, np.float32))  # float32 boxes are converted
        assert pts is not None and pts.shape == (68, 2) and pts.dtype == np.float64
        assert np.all(pts[:, 0] >= box[0]) and np.all(pts[:, 0] <= box[2])
        assert np.all(pts[:, 1] >= box[1]) and np.all(pts[:, 1] <= box[3])
        assert np.abs(pts - np.array(spot)).max() <= 6, (box, spot, pts.min(0), pts.max(0))
    assert lm.landmarks68(rgb, [50, 50, 50, 80]) is None  # empty box
    assert lm.landmarks68(rgb, [np.nan, 0, 10, 10]) is None
    info = lm.describe()
    assert info["backend"] == "face_alignment_fan" and info["num_modules"] == 1
    assert info["sha256"] == hashlib.sha256(fan_path.read_bytes()).hexdigest()
    assert info["flip_input"] is False and info["random_weights"] is False
    import copy

    assert copy.deepcopy(lm)._fa is None  # a copy (as Ray's pickling makes) loads its own network
    lm.close()


def test_fan_weights_errors_are_one_line_naming_the_setting(tmp_path, fan_state):
    import torch

    partial = tmp_path / "partial.pth.tar"
    torch.save({k: v for k, v in fan_state.items() if not k.startswith("l0.")}, partial)
    not_fan = tmp_path / "s3fd.pth"
    torch.save({"conv1_1.weight": torch.zeros(1)}, not_fan)
    pickled = tmp_path / "pickled.pth.tar"
    torch.save({"net": torch.nn.Identity()}, pickled)  # a pickled module, not weights
    for path, words in ((tmp_path / "2DFAN4.pth.tar", "file not found"), (partial, "does not match"),
                        (not_fan, "not a face-alignment FAN"), (pickled, "weights_only=True"), ("", "is not set")):
        with pytest.raises(WeightsMissing) as e:
            FaceAlignmentLandmarks(str(path)).setup()
        msg = str(e.value)
        assert msg.startswith("faces.landmarks_path") and words in msg and "\n" not in msg


# -- wired into the face stage and the build config ----------------------------------------------

def test_face_stage_detects_with_scrfd_when_configured(det_path):
    from stages.faces import FaceAnalyzer

    fa = FaceAnalyzer(detector="scrfd", detector_path=str(det_path), check_hands=False)
    fa.setup()
    try:
        boxes, scores = fa.detect(frame_with_squares((152, 104)))
        np.testing.assert_allclose(boxes, [expected_box(152, 104)], atol=1e-3)
        assert fa.describe()["detector"]["backend"] == ScrfdDetector(str(det_path)).describe()["backend"]
    finally:
        fa.close()


def test_build_with_scrfd_and_no_weights_is_one_line(tmp_path, capsys):
    from pipeline.cli import main as portrait

    (tmp_path / "in").mkdir()
    code = portrait(
        ["build", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--set", "faces.detector=scrfd"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "faces.detector_path" in err[0], err


def test_scrfd_session_uses_the_cpus_its_actor_reserved(det_path, monkeypatch):
    # onnxruntime's default is a thread per core of the node; a Ray actor sets its share.
    monkeypatch.setenv(CPU_THREADS_ENV, "1")
    held = ScrfdDetector(str(det_path))
    held.setup()
    assert held.model.session.get_session_options().intra_op_num_threads == 1
    monkeypatch.delenv(CPU_THREADS_ENV)
    free = ScrfdDetector(str(det_path))
    free.setup()
    assert free.model.session.get_session_options().intra_op_num_threads == 0  # onnxruntime's own choice
