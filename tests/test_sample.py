"""Sampling: a tiny checkpoint animates a reference with a driving video into a playable mp4."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from manifests import tensors
from manifests.catalog import Catalog
from portrait_model import diffusion as diffusion_module
from portrait_model.model import build_model
from portrait_model.presets import get_preset
from portrait_model.sample import MotionInputs, generate_latents, resample_indices, sample_video
from portrait_model.train import TrainConfig, train

from model_shards import make_test_build

torch.set_num_threads(1)
CLIP = "d3-part0-0"


@pytest.fixture(scope="module")
def build(fixtures_dir, tmp_path_factory):
    return make_test_build(tmp_path_factory.mktemp("build"), n_frames=8, n_clips=1, with_image=False,
                           with_excluded=False)


def write_driving_video(build: Path, path: Path, rate: int = 15) -> int:
    """The clip's stored frames as an mp4 (the driving video); returns its frame count."""
    with Catalog(build, read_only=True) as cat:
        jpegs = (
            cat.query(f"SELECT jpeg FROM frames WHERE clip_id = '{CLIP}' ORDER BY frame_index").column(0).to_pylist()
        )
    import cv2

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width = stream.height = 128
        stream.pix_fmt = "yuv420p"
        for data in jpegs:
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            rgb = cv2.cvtColor(cv2.resize(bgr, (128, 128)), cv2.COLOR_BGR2RGB)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return len(jpegs)


def shard_motion_fn(build: Path):
    """Test stand-in for the pipeline: maps of the driving video's frames, read from the shards."""
    def motion(reference: Path, driving: Path) -> MotionInputs:
        with av.open(str(driving)) as c:
            fps = float(c.streams.video[0].average_rate)
            n = sum(1 for _ in c.decode(video=0))
        with Catalog(build, read_only=True) as cat:
            rows = cat.query(f"SELECT frame_index, latent, position_map FROM frames WHERE clip_id = '{CLIP}' "
                             f"AND view = 0 ORDER BY frame_index").to_pylist()
        maps = np.stack([tensors.decode(r["position_map"]) for r in rows[:n]])
        return MotionInputs(tensors.decode(rows[0]["latent"]), maps, fps)
    return motion


def pooled_rgb_decode(latents: torch.Tensor) -> np.ndarray:
    """Inverse of the test stand-in latents: channels 0..2 are pooled RGB in [-1, 1]."""
    rgb = torch.nn.functional.interpolate(latents[:, :3].float(), scale_factor=8, mode="nearest")
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def test_sample_writes_a_playable_mp4_of_the_driving_length(build, tmp_path):
    train(TrainConfig(data=str(build), run_dir=str(tmp_path / "run"), stage=2, frames=4, latent_size=8, steps=2,
                      batch_size=1, checkpoint_every=2, quiet=True))
    driving = tmp_path / "driving.mp4"
    n = write_driving_video(build, driving)
    reference = tmp_path / "reference.jpg"
    reference.write_bytes(b"")  # the test motion function reads the reference from the shards
    out = sample_video(tmp_path / "run" / "checkpoint-last.pt", reference, driving, tmp_path / "out.mp4",
                       shard_motion_fn(build), pooled_rgb_decode, steps=50, clip_frames=4, device="cpu")
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert float(stream.average_rate) == pytest.approx(15.0)
    assert len(frames) == n == 8
    assert frames[0].shape == (64, 64, 3)


def test_a_faster_driving_video_is_resampled_to_the_training_fps(build, tmp_path):
    """The clips were sampled at 15 fps; a 30 fps driving video is driven at 15 fps, same duration."""
    train(TrainConfig(data=str(build), run_dir=str(tmp_path / "run"), stage=2, frames=4, latent_size=8, steps=1,
                      batch_size=1, checkpoint_every=1, quiet=True))
    driving = tmp_path / "driving30.mp4"
    n = write_driving_video(build, driving, rate=30)
    reference = tmp_path / "reference.jpg"
    reference.write_bytes(b"")
    out = sample_video(tmp_path / "run" / "checkpoint-last.pt", reference, driving, tmp_path / "out.mp4",
                       shard_motion_fn(build), pooled_rgb_decode, steps=4, clip_frames=4, device="cpu",
                       scheduler="dpm++")
    with av.open(str(out)) as c:
        assert float(c.streams.video[0].average_rate) == pytest.approx(15.0)
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == n // 2 == 4


def test_resampling_keeps_the_duration_and_picks_the_nearest_frames():
    assert resample_indices(8, 30.0, 15.0).tolist() == [0, 2, 4, 6]
    assert resample_indices(10, 25.0, 12.5).tolist() == [0, 2, 4, 6, 8]
    assert resample_indices(4, 12.5, 12.5).tolist() == [0, 1, 2, 3]
    assert resample_indices(3, 10.0, 20.0).tolist() == [0, 0, 1, 2, 2, 2]  # slower: frames repeat


def test_each_clip_continues_from_the_previous_last_frame(monkeypatch):
    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).eval()
    calls = []
    original = diffusion_module.GaussianDiffusion.ddim_sample

    def spy(self, model, shape, reference, motion, cond_latents=None, x_mask=None, **kw):
        out = original(self, model, shape, reference, motion, cond_latents=cond_latents, x_mask=x_mask, **kw)
        calls.append((shape[2], cond_latents, x_mask, out))
        return out

    monkeypatch.setattr(diffusion_module.GaussianDiffusion, "ddim_sample", spy)
    maps = torch.rand(10, 3, 32, 32)
    latents = generate_latents(model, torch.randn(4, 4, 4), maps, clip_frames=4, steps=5)
    assert latents.shape == (10, 4, 4, 4)
    assert [c[0] for c in calls] == [4, 4, 4]  # 4 new frames, then 3 + 3 after the overlapping one
    assert calls[0][1] is None and calls[0][2].all()
    for prev, cur in zip(calls, calls[1:]):
        assert not cur[2][0, 0] and cur[2][0, 1:].all()
        assert torch.equal(cur[1][:, :, 0], prev[3][:, :, -1])
        assert torch.equal(cur[3][:, :, 0], prev[3][:, :, -1])
    torch.testing.assert_close(latents[3], calls[0][3][0, :, 3])
    torch.testing.assert_close(latents[4], calls[1][3][0, :, 1])
