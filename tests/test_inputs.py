"""Probe and decode on awkward real-world inputs: each one is read right or refused clearly."""
from __future__ import annotations

import numpy as np
import pytest

from stages.base import StageError
from stages.decode import VideoReader, choose_samples, read_image
from stages.probe import probe
from tests.media_makers import make_bad_inputs, read_frames


@pytest.fixture(scope="module")
def bad(tmp_path_factory, media_dir):
    return make_bad_inputs(tmp_path_factory.mktemp("bad"), media_dir)


@pytest.mark.parametrize("name,needle", [
    ("zero_byte", "empty file"),
    ("text_as_mp4", "not a readable video"),
    ("truncated_mp4", "not a readable video"),
])
def test_unreadable_files_fail_with_one_clear_line(bad, name, needle):
    with pytest.raises(StageError) as e:
        probe(str(bad[name]), "video")
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_real_video_probe(media_dir):
    r = probe(str(media_dir / "videos" / "d9.mp4"), "video")
    assert (r.width, r.height) == (512, 480)
    assert r.fps == pytest.approx(30.0)
    assert r.has_audio and r.codec == "h264" and not r.variable_fps
    assert r.duration_s == pytest.approx(19.6, abs=0.1)
    assert r.n_frames == 587
    assert probe(str(media_dir / "videos" / "d0.mp4"), "video").has_audio is False


@pytest.mark.parametrize("name", ["cmyk_jpeg", "png16_alpha", "huge_image"])
def test_odd_images_decode_to_rgb8(bad, name):
    info = probe(str(bad[name]), "image")
    rgb = read_image(str(bad[name]), max_side=4096)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert max(rgb.shape[:2]) <= 4096
    assert rgb.shape[1] / rgb.shape[0] == pytest.approx(info.width / info.height, rel=0.01)
    assert rgb.std() > 10  # real content, not a blank conversion


def test_cmyk_colours_survive(bad, media_dir):
    ref = read_image(str(media_dir / "images" / "s1.jpg"), 4096).astype(float)
    cmyk = read_image(str(bad["cmyk_jpeg"]), 4096).astype(float)
    assert np.abs(ref - cmyk).mean() < 12  # not inverted or channel-swapped


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_rotation_is_honoured(bad, media_dir, backend):
    info = probe(str(bad["rotated_video"]), "video")
    assert info.rotation == 270  # clockwise degrees to display upright
    upright, _ = read_frames(media_dir / "videos" / "d0.mp4", limit=1)
    frame = next(VideoReader(str(bad["rotated_video"]), info.rotation, backend=backend).frames(5.0)).rgb
    err_upright = np.abs(frame.astype(float) - upright[0]).mean()
    err_stored = np.abs(frame.astype(float) - np.rot90(upright[0], k=-1)).mean()
    assert err_upright < 10 < err_stored


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_variable_frame_rate_is_sampled_by_time(bad, backend):
    assert probe(str(bad["vfr_video"]), "video").variable_fps
    reader = VideoReader(str(bad["vfr_video"]), 0, backend=backend)
    frames = list(reader.frames(10.0))
    times = np.array([f.t for f in frames])
    # Each sample is the frame on screen at k/10 s: never later than that time, and at most one
    # source frame interval (80 ms here) earlier.
    targets = np.arange(len(times)) / 10.0  # frame intervals (20-80 ms) are all under 100 ms
    assert np.all(times <= targets + 1e-3)
    assert np.all(targets - times < 0.080 + 1e-3)
    assert len(frames) == int(np.floor(reader.times[-1] * 10.0 + 1e-3)) + 1


def test_choose_samples_is_by_time_not_index():
    times = np.array([0.0, 0.01, 0.02, 0.5, 1.0])
    assert choose_samples(times, fps=2.0).tolist() == [0, 3, 4]
    assert choose_samples(times, fps=2.0, start_s=0.4, end_s=1.0).tolist() == [3]


def test_decord_frames_are_its_own_pixels_and_outlive_the_reader(media_dir):
    # The frames are decord's buffer itself (no copy); they must hold the very bytes its copy
    # holds, stay valid after the reader and its batches are gone, and refuse writes (a stage
    # writing into a frame would change the frames around it in the same buffer).
    import gc

    import decord

    path = str(media_dir / "videos" / "d3.mp4")
    reader = VideoReader(path, 0, backend="decord")
    frames = list(reader.frames(5.0))
    del reader
    gc.collect()
    copies = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1).get_batch([f.index for f in frames]).asnumpy()
    assert len(frames) > 16  # more than one batch
    for f, c in zip(frames, copies):
        assert f.rgb.shape == c.shape and np.array_equal(f.rgb, c)
        assert not f.rgb.flags.writeable
