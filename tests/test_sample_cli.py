"""`portrait sample` end to end: a tiny checkpoint trained on real pipeline shards, the pipeline's
motion extractor on a real reference photo and driving video, the VAE decode, a playable mp4."""
from __future__ import annotations

import av
import pytest
import torch

from pipeline.cli import main as portrait
from portrait_model.train import TrainConfig, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def driving(media_dir, tmp_path_factory):
    """The first 20 frames of d0.mp4 (a short driving video keeps the CPU test quick)."""
    from tests.media_makers import read_frames, write_video

    frames, fps = read_frames(media_dir / "videos" / "d0.mp4", limit=20)
    return write_video(tmp_path_factory.mktemp("driving") / "drive.mp4", frames, fps), len(frames), fps


def test_sample_command_writes_a_playable_mp4_of_the_driving_length(feature_build, small_vae_dir, media_dir,
                                                                     driving, tmp_path):
    run = train(TrainConfig(data=str(feature_build), run_dir=str(tmp_path / "run"), stage=2, frames=4,
                            steps=2, batch_size=1, log_every=1, checkpoint_every=2, quiet=True))
    video, n_frames, fps = driving
    out = tmp_path / "out.mp4"
    code = portrait(["sample", "--checkpoint", run.checkpoint, "--reference", str(media_dir / "images" / "s1.jpg"),
                     "--driving", str(video), "--vae", str(small_vae_dir), "--out", str(out),
                     "--steps", "2", "--clip-frames", "8", "--device", "cpu"])
    assert code == 0
    # The build sampled its clips at 12.5 fps: the driving video is resampled to that rate.
    assert run.model is not None
    from portrait_model.sample import resample_indices

    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        decoded = [f for f in c.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(12.5, rel=0.01)
    assert len(decoded) == len(resample_indices(n_frames, fps, 12.5)) < n_frames
    assert decoded[0].width == decoded[0].height == 512


def test_sample_without_vae_fails_with_one_line(feature_build, media_dir, driving, tmp_path, capsys):
    code = portrait(
        [
            "sample",
            "--checkpoint",
            str(tmp_path / "none.pt"),
            "--reference",
            str(media_dir / "images" / "s1.jpg"),
            "--driving",
            str(driving[0]),
            "--out",
            str(tmp_path / "o.mp4"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--vae" in err[0]
