"""Identity embeddings: an ONNX model with ArcFace's signature through insightface, on faces
aligned from the real face mesh of fixture frames."""
from __future__ import annotations

import numpy as np
import pytest

from stages.base import CPU_THREADS_ENV, WeightsMissing
from stages.identity import IdentityStage, align, pick_frames
from stages.intensity import five_points

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# insightface's ArcFace template (112x112): eyes, nose, mouth corners.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def frames_with_mesh(path, every: int, count: int):
    """RGB frames (512x512 crops) and their 478-point meshes in crop pixels."""
    av = pytest.importorskip("av")
    import mediapipe as mp

    frames, meshes = [], []
    with av.open(str(path)) as container, mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=1
    ) as fm:
        for i, frame in enumerate(container.decode(video=0)):
            if i % every:
                continue
            rgb = frame.to_ndarray(format="rgb24")[:512, :512]
            res = fm.process(rgb)
            assert res.multi_face_landmarks, "fixture frame without a face"
            h, w = rgb.shape[:2]
            frames.append(np.ascontiguousarray(rgb))
            meshes.append(np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark], np.float32))
            if len(frames) == count:
                break
    return frames, meshes


@pytest.fixture(scope="module")
def clip(media_dir):
    return frames_with_mesh(media_dir / "videos" / "d3.mp4", every=10, count=6)


@pytest.fixture(scope="module")
def other_person(media_dir):
    return frames_with_mesh(media_dir / "videos" / "d9.mp4", every=10, count=2)


@pytest.fixture(scope="module")
def arcface_path(tmp_path_factory):
    """w600k_r50.onnx signature: input.1 [N,3,112,112] -> 683 [N,512]; a strided conv and a
    linear layer with fixed random weights stand in for the ResNet."""
    rng = np.random.default_rng(0)
    conv = rng.normal(0, 0.1, (4, 3, 8, 8)).astype(np.float32)
    fc = rng.normal(0, 0.05, (4 * 14 * 14, 512)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input.1", "conv_w"], ["c"], strides=[8, 8], name="conv"),
        helper.make_node("Flatten", ["c"], ["f"], axis=1, name="flatten"),
        helper.make_node("MatMul", ["f", "fc_w"], ["683"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "arcface_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", 512])],
        [numpy_helper.from_array(conv, "conv_w"), numpy_helper.from_array(fc, "fc_w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("arcface") / "w600k_r50.onnx"
    onnx.save(model, str(path))
    return path


def test_mesh_five_points_fit_the_arcface_template(clip):
    from skimage.transform import SimilarityTransform

    for mesh in clip[1]:
        kps = five_points(mesh)
        tf = SimilarityTransform.from_estimate(kps, ARCFACE_TEMPLATE)
        residual = np.linalg.norm(tf(kps) - ARCFACE_TEMPLATE, axis=1)
        # Pixels in the 112 crop. A turned head leaves a few; a wrong point or order, tens.
        assert residual.max() < 8.0, residual


def test_embedding_matches_the_model_on_aligned_faces(clip, arcface_path):
    frames, meshes = clip
    emb = IdentityStage(str(arcface_path), n_frames=4).embed(frames, meshes)
    assert emb.shape == (512,) and emb.dtype == np.float32
    assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)

    # The same thing by hand: aligned RGB faces scaled to [-1, 1], per-frame unit vectors averaged.
    chosen = pick_frames(len(frames), 4)
    assert chosen == [0, 2, 3, 5]
    x = np.stack([align(frames[i], meshes[i]) for i in chosen]).astype(np.float32)
    x = ((x - 127.5) / 127.5).transpose(0, 3, 1, 2)
    session = ort.InferenceSession(str(arcface_path), providers=["CPUExecutionProvider"])
    feats = session.run(None, {"input.1": x})[0]
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    expected = feats.mean(0) / np.linalg.norm(feats.mean(0))
    np.testing.assert_allclose(emb, expected, atol=1e-4)


def test_alignment_makes_the_embedding_follow_the_face_not_the_crop(clip, other_person, arcface_path):
    import cv2

    stage = IdentityStage(str(arcface_path), n_frames=2)
    frames, meshes = clip[0][:2], clip[1][:2]
    base = stage.embed(frames, meshes)
    # The same faces moved 30 px right and 20 px up inside the crop.
    shift = np.float32([[1, 0, 30], [0, 1, -20]])
    moved = [cv2.warpAffine(f, shift, (512, 512), borderMode=cv2.BORDER_REFLECT) for f in frames]
    moved_meshes = [m + np.float32([30, -20]) for m in meshes]
    same = float(base @ stage.embed(moved, moved_meshes))
    other = float(base @ stage.embed(*other_person))
    assert same > 0.99 and other < same


def test_frames_without_landmarks_are_skipped(clip, arcface_path):
    frames, meshes = clip
    stage = IdentityStage(str(arcface_path), n_frames=1)
    only_last = stage.embed(frames, [None] * (len(frames) - 1) + [meshes[-1]])
    np.testing.assert_allclose(only_last, stage.embed(frames[-1:], meshes[-1:]), atol=1e-6)
    assert stage.embed(frames, [None] * len(frames)) is None


def test_without_a_model_the_embedding_is_null_with_a_reason(clip):
    stage = IdentityStage()
    assert stage.embed(*clip) is None
    info = stage.describe()
    assert info["backend"] == "none" and "features.identity.model_path" in info["reason"]


def test_missing_model_fails_with_one_line(tmp_path, arcface_path):
    with pytest.raises(WeightsMissing, match="features.identity.model_path: file not found") as err:
        IdentityStage(str(tmp_path / "w600k_r50.onnx")).setup()
    assert "\n" not in str(err.value)
    stage = IdentityStage(str(arcface_path))
    before = stage.describe()  # what the driver records: no model loaded
    assert before["backend"] == "insightface_arcface" and stage.model is None and "sha256" not in before
    stage.setup()
    info = stage.describe()
    assert info["backend"] == "insightface_arcface" and len(info["sha256"]) == 64
    assert info["input_mean"] == 127.5 and info["random_weights"] is False


def test_arcface_session_uses_the_cpus_its_actor_reserved(arcface_path, monkeypatch):
    # onnxruntime's default is a thread per core of the node; a Ray actor sets its share.
    monkeypatch.setenv(CPU_THREADS_ENV, "2")
    stage = IdentityStage(str(arcface_path))
    stage.setup()
    assert stage.model.session.get_session_options().intra_op_num_threads == 2
