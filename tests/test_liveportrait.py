"""LivePortrait backend: our F, M, W take LivePortrait-format checkpoints (full-size shapes,
random values, written by the test with torch.save of a state dict) and produce maps."""
from __future__ import annotations

import numpy as np
import pytest

from tests.media_makers import frames_at

torch = pytest.importorskip("torch")

from stages.base import WeightsMissing  # noqa: E402
from stages.liveportrait import (  # noqa: E402
    FILES,
    IncompatibleWeights,
    bins_to_degrees,
    build_modules,
    face_crop_matrix,
    field_to_maps,
    rotation_matrix,
    transform_keypoints,
)
from stages.mesh_raster import coverage  # noqa: E402
from stages.position_maps import PositionMapStage  # noqa: E402

SIZE = 256  # training crops of this test (small, for CPU speed); the networks see 256 face crops


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def read_frames(path, indices):
    return frames_at(path, indices)


def face_mesh(rgb):
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as fm:
        res = fm.process(rgb)
    assert res.multi_face_landmarks
    h, w = rgb.shape[:2]
    return np.array([[p.x * w, p.y * h] for p in res.multi_face_landmarks[0].landmark])


@pytest.fixture(scope="module")
def frames(media_dir):
    import cv2

    raw = read_frames(media_dir / "videos" / "d3.mp4", [0, 60])
    crops = [cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in raw]
    return crops, [face_mesh(c) for c in crops]


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """The three released file names, each a full-size state dict with random values."""
    folder = tmp_path_factory.mktemp("liveportrait") / "base_models"
    folder.mkdir()
    torch.manual_seed(0)
    for name, module in build_modules().items():
        torch.save(module.state_dict(), folder / FILES[name])
    return folder


def test_checkpoint_layout_matches_the_released_files():
    """Key names and shapes that LivePortrait's released checkpoints have (models.yaml sizes)."""
    mods = {n: m.state_dict() for n, m in build_modules().items()}
    expect = {
        "appearance_feature_extractor": {
            "first.conv.weight": (64, 3, 3, 3),
            "down_blocks.1.conv.weight": (256, 128, 3, 3),
            "second.weight": (512, 256, 1, 1),
            "resblocks_3d.3dr5.norm2.running_var": (32,),
        },
        "motion_extractor": {
            "detector.downsample_layers.0.0.weight": (96, 3, 4, 4),
            "detector.stages.2.8.grn.gamma": (1, 1, 1, 1536),
            "detector.fc_kp.weight": (63, 768),
            "detector.fc_exp.weight": (63, 768),
            "detector.fc_pitch.weight": (66, 768),
            "detector.fc_t.weight": (3, 768),
            "detector.fc_scale.weight": (1, 768),
        },
        "warping_module": {
            "dense_motion_network.hourglass.encoder.down_blocks.0.conv.weight": (64, 110, 3, 3, 3),
            "dense_motion_network.hourglass.encoder.down_blocks.4.conv.weight": (1024, 512, 3, 3, 3),
            "dense_motion_network.hourglass.decoder.conv.weight": (142, 142, 3, 3, 3),
            "dense_motion_network.mask.weight": (22, 142, 7, 7, 7),
            "dense_motion_network.compress.weight": (4, 32, 1, 1, 1),
            "dense_motion_network.occlusion.weight": (1, 142 * 16, 7, 7),
            "third.conv.weight": (256, 512, 3, 3),
            "fourth.weight": (256, 256, 1, 1),
        },
    }
    # Parameter counts of LivePortrait's own modules at these settings (BatchNorm counters excluded).
    counts = {"appearance_feature_extractor": 837_888, "motion_extractor": 28_118_728, "warping_module": 45_536_585}
    for name, keys in expect.items():
        for key, shape in keys.items():
            assert tuple(mods[name][key].shape) == shape, key
        n = sum(v.numel() for k, v in mods[name].items() if not k.endswith("num_batches_tracked"))
        assert n == counts[name], name
    assert not any("spade" in k for sd in mods.values() for k in sd)


def test_loaded_stage_produces_maps(weights_dir, frames):
    crops, lms = frames
    stage = PositionMapStage(backend="liveportrait", weights_dir=str(weights_dir.parent), map_size=32, device="cpu")
    stage.setup()
    info = stage.describe()
    assert info["random_weights"] is False and len(info["files"]) == 3
    assert all(len(h) == 64 for h in info["files"].values())  # sha256 of each file
    (m,) = stage.compute(crops[0], lms[0], [crops[1]], [lms[1]])
    assert m.shape == (3, 32, 32) and m.dtype == np.float16
    face = coverage(lms[1] * (32 / SIZE), 32, 32)
    valid = m[2] > 0
    assert face.sum() > 30 and valid.any()
    assert not valid[~face].any()  # nothing outside the driving face
    assert np.all(m[:, ~valid] == 0)
    xy = m[:2, valid].astype(float)
    assert np.all((xy >= 0) & (xy <= 1))


def test_identity_motion_gives_identity_map(frames):
    """The deformation -> map conversion alone: a deformation that reads every voxel from its own
    place (align_corners=False centres) maps each driving cell to itself when the driving frame
    is the reference, through rotated face crops and the paste-back."""
    _, lms = frames
    p, n = 64, 64
    ref_face = face_crop_matrix(lms[0])
    c = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    field = torch.stack([xx, yy, torch.zeros_like(xx)], -1)[None]
    face = coverage(lms[0] * (p / SIZE), p, p)[None]
    (m,) = field_to_maps(field, ref_face, ref_face[None], SIZE, SIZE, p, face)
    valid = m[2] > 0
    assert valid.sum() > 0.9 * face.sum()
    g = (np.arange(p) + 0.5) / p
    gx, gy = np.meshgrid(g, g)
    err = np.hypot(m[0] - gx, m[1] - gy)[valid] * 512
    assert np.median(err) < 0.5

    # A shift of the whole motion by one face-crop voxel moves every position by the same
    # amount in the reference training crop (the face crop's similarity, undone).
    shifted = field.clone()
    shifted[..., 0] += 2.0 / n
    (m2,) = field_to_maps(shifted, ref_face, ref_face[None], SIZE, SIZE, p, face)
    inv = np.linalg.inv(ref_face)
    step = inv[:2, :2] @ np.array([256.0 / n, 0.0]) / SIZE  # one voxel = 4 face-crop pixels
    both = valid & (m2[2] > 0)
    got = np.stack([m2[0] - m[0], m2[1] - m[1]])[:, both]
    assert np.allclose(got.mean(axis=1), step, atol=1e-4)


def test_keypoint_transform_follows_liveportrait():
    # Bins -> degrees: uniform logits are 0 degrees; two equal peaks at bins 62, 63 are 90.
    assert torch.allclose(bins_to_degrees(torch.zeros(1, 66)), torch.zeros(1), atol=1e-4)
    peak = torch.full((1, 66), -1e4)
    peak[0, 62] = peak[0, 63] = 0.0
    assert torch.allclose(bins_to_degrees(peak), torch.tensor([90.0]), atol=1e-3)
    # Pitch 90 about x: y goes to z. Then scale 2, add tx, ty (tz dropped).
    kp = torch.zeros(1, 21, 3)
    kp[0, 0] = torch.tensor([0.0, 1.0, 0.0])
    info = {"kp": kp.reshape(1, 63), "exp": torch.zeros(1, 63), "pitch": peak, "yaw": torch.zeros(1, 66),
            "roll": torch.zeros(1, 66), "scale": torch.tensor([[2.0]]), "t": torch.tensor([[0.1, 0.2, 0.3]])}
    out = transform_keypoints(info)
    assert torch.allclose(out[0, 0], torch.tensor([0.1, 0.2, 2.0]), atol=1e-3)
    assert torch.allclose(out[0, 1], torch.tensor([0.1, 0.2, 0.0]), atol=1e-5)
    # Roll 90 about z applied to row vectors: x goes to y.
    r = rotation_matrix(torch.zeros(1), torch.zeros(1), torch.tensor([90.0]))
    assert torch.allclose(torch.tensor([[1.0, 0.0, 0.0]]) @ r[0], torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-6)


def test_missing_weights_fail_with_one_clear_line(tmp_path):
    with pytest.raises(WeightsMissing) as err:
        PositionMapStage(backend="liveportrait", weights_dir=None, device="cpu").setup()
    assert "features.position_map.weights_dir" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / FILES["appearance_feature_extractor"]).write_bytes(b"")
    with pytest.raises(WeightsMissing) as err:
        PositionMapStage(backend="liveportrait", weights_dir=str(tmp_path), device="cpu").setup()
    msg = str(err.value)
    assert "features.position_map.weights_dir" in msg and "motion_extractor.pth" in msg and "\n" not in msg


def test_wrong_checkpoint_fails_with_one_clear_line(tmp_path):
    module = build_modules()["appearance_feature_extractor"]
    state = module.state_dict()
    state["first.convolution.weight"] = state.pop("first.conv.weight")
    torch.save(state, tmp_path / FILES["appearance_feature_extractor"])
    for name in ("motion_extractor", "warping_module"):
        (tmp_path / FILES[name]).write_bytes(b"not read")
    with pytest.raises(IncompatibleWeights) as err:
        PositionMapStage(backend="liveportrait", weights_dir=str(tmp_path), device="cpu").setup()
    msg = str(err.value)
    assert "first.conv.weight" in msg and "features.position_map.weights_dir" in msg and "\n" not in msg


def test_random_weights_only_when_asked():
    stage = PositionMapStage(backend="liveportrait", allow_random_weights=True, device="cpu")
    stage.setup()
    assert stage.describe()["random_weights"] is True
