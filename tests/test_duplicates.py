"""Duplicate detection: clip signatures (stages/signature.py) and the pair decision and grouping
(manifests/duplicates.py), on real fixture videos and their re-encoded, resized, cropped,
re-timed and cut copies made here with PyAV; crops are simply the centre square."""
from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from manifests import duplicates as dup
from stages.signature import clip_signature

SAMPLE_FPS = 12.5  # what the pipeline samples and stores (sampling.fps)
CROP = 256


def decode(path: Path, t0: float = 0.0, t1: float | None = None) -> tuple[list[np.ndarray], list[float]]:
    """RGB frames in [t0, t1) with their times (seconds, the file's own clock)."""
    frames, times = [], []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for f in c.decode(s):
            t = float(f.time)
            if t < t0 - 1e-6:
                continue
            if t1 is not None and t >= t1 - 1e-6:
                break
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(t)
    return frames, times


def clip_crops(frames: list[np.ndarray], times: list[float]) -> tuple[list[np.ndarray], list[float]]:
    """Sampled at 12.5 fps like the pipeline; crop = centre square resized to 256 px."""
    t = np.asarray(times)
    grid = np.arange(t[0], t[-1] + 1e-6, 1 / SAMPLE_FPS)
    picks = sorted({int(np.abs(t - g).argmin()) for g in grid})
    crops = []
    for k in picks:
        h, w = frames[k].shape[:2]
        side = min(h, w)
        y, x = (h - side) // 2, (w - side) // 2
        crops.append(cv2.resize(frames[k][y: y + side, x: x + side], (CROP, CROP), interpolation=cv2.INTER_AREA))
    return crops, [float(t[k]) for k in picks]


def signature(frames, times) -> bytes:
    return clip_signature(*clip_crops(frames, times))


def reencode(tmp: Path, frames, times, *, fps: float, scale: float = 1.0, crop: float = 0.0, bit_rate: int,
             t0: float = 0.0, t1: float | None = None) -> Path:
    """A copy as another dataset would publish it: the part [t0, t1) of the footage, ``crop``
    of each side removed, resized by ``scale``, resampled to ``fps``, H.264 at ``bit_rate``."""
    t = np.asarray(times)
    sel = (t >= t0 - 1e-6) & (t < (t1 if t1 is not None else np.inf) - 1e-6)
    src, st = [f for f, s in zip(frames, sel) if s], t[sel] - t0
    h, w = src[0].shape[:2]
    y0, x0 = int(round(h * crop)), int(round(w * crop))
    ow, oh = int((w - 2 * x0) * scale) // 2 * 2, int((h - 2 * y0) * scale) // 2 * 2
    path = tmp / f"copy_{fps}_{scale}_{crop}_{bit_rate}_{t0}.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt, s.bit_rate = ow, oh, "yuv420p", bit_rate
        s.options = {"preset": "veryfast"}
        for k in range(int((st[-1] + 1 / 25) * fps)):
            i = int(np.searchsorted(st, k / fps + 1e-6, side="right") - 1)
            img = cv2.resize(src[max(i, 0)][y0: h - y0, x0: w - x0], (ow, oh), interpolation=cv2.INTER_AREA)
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@pytest.fixture(scope="module")
def videos(fixtures_dir) -> dict[str, Path]:
    names = {"aoc": "media-extra/videos/sadtalker_aoc.mp4", "katie": "media-extra/videos/sadtalker_katiehill.mp4",
             "face4": "media-extra/videos/retalking_face4.mp4", "edtalk": "media-extra/videos/edtalk_posesrc2_60s.mp4"}
    return {k: fixtures_dir / v for k, v in names.items()}


@pytest.fixture(scope="module")
def aoc(videos):
    return decode(videos["aoc"], 0.0, 6.0)


def test_signature_is_compact_and_versioned(aoc):
    frames, times = aoc
    sig = signature(frames, times)
    key, words, start, flags = dup.unpack_signature(sig)
    assert len(sig) == 40 + 4 * words.size < 1024
    assert key.shape == (32,) and flags == 0 and start == pytest.approx(times[0])
    assert words.size == pytest.approx(10 * (times[-1] - times[0]), abs=2)  # one word per 0.1 s
    assert dup.is_duplicate(sig, sig)
    with pytest.raises(dup.SignatureError):
        dup.is_duplicate(bytes([99]) + sig[1:], sig)


def test_reencoded_resized_cropped_copy_is_a_duplicate(aoc, tmp_path):
    frames, times = aoc
    original = signature(frames, times)
    # 25 -> 30 fps, 8 % of each side cropped, 0.6x, 250 kbit/s.
    copy = reencode(tmp_path, frames, times, fps=30, scale=0.6, crop=0.08, bit_rate=250_000)
    assert dup.is_duplicate(original, signature(*decode(copy))), dup.explain(original, signature(*decode(copy)))
    # Upscaled 1.5x and re-encoded at a high bitrate, 5 % cropped.
    copy = reencode(tmp_path, frames, times, fps=25, scale=1.5, crop=0.05, bit_rate=2_000_000)
    assert dup.is_duplicate(signature(*decode(copy)), original)


def test_clip_cut_from_a_longer_copy_is_a_duplicate(videos, tmp_path):
    frames, times = decode(videos["face4"])  # 6.6 s at 30 fps
    longer = signature(frames, times)
    cut = reencode(tmp_path, frames, times, fps=25, bit_rate=400_000, t0=1.3, t1=4.7)  # its own clock starts at 0
    short = signature(*decode(cut))
    assert dup.is_duplicate(short, longer) and dup.is_duplicate(longer, short)
    assert dup.match_details(longer, short)["offset_s"] == pytest.approx(-1.3, abs=0.15)


def test_a_different_video_is_not_a_duplicate(aoc, videos):
    original = signature(*aoc)
    for other in ("katie", "face4", "edtalk"):
        frames, times = decode(videos[other], 0.0, 6.0)
        assert not dup.is_duplicate(original, signature(frames, times)), other


def test_other_stretch_of_the_same_recording_is_not_a_duplicate(videos, tmp_path):
    # The same man in the same office, same framing: only the motion tells the stretches apart.
    frames, times = decode(videos["edtalk"], 4.0, 40.0)
    t = np.asarray(times)
    first = [(f, s) for f, s in zip(frames, times) if s < 12.0]
    later = [(f, s) for f, s in zip(frames, times) if 30.0 <= s < 38.0]
    a, b = signature(*zip(*first)), signature(*zip(*later))
    assert dup.key_distance(dup.unpack_signature(a)[0], dup.unpack_signature(b)[0]) <= dup.KEY_RADIUS  # look alike
    assert not dup.is_duplicate(a, b), dup.explain(a, b)
    # An overlapping cut of the long recording (other rate and size) is one: the check sees motion, not just looks.
    cut = reencode(tmp_path, frames, list(t), fps=30, scale=1.5, bit_rate=600_000, t0=6.1, t1=11.1)
    assert dup.is_duplicate(signature(*decode(cut)), a)
    assert not dup.is_duplicate(signature(*decode(cut)), b)


def _sig(key: np.ndarray, words: np.ndarray) -> bytes:
    return dup.pack_signature(key, words)


def _noisy(rng, words: np.ndarray, flip: float) -> np.ndarray:
    mask = (rng.random((words.size, 32)) < flip).astype(np.uint64) << np.arange(32, dtype=np.uint64)
    return words ^ mask.sum(1).astype(np.uint32)


def _near_key(rng, key: np.ndarray, n_bits: int) -> np.ndarray:
    bits = np.unpackbits(key)
    bits[rng.choice(256, n_bits, replace=False)] ^= 1
    return np.packbits(bits)


def test_grouping_is_transitive_and_independent_of_order():
    rng = np.random.default_rng(1)
    key = rng.integers(0, 256, 32, dtype=np.uint8)
    words = rng.integers(0, 2 ** 32, 100, dtype=np.uint32)
    sigs = {
        "c-full": _sig(key, words),  # a 10-s clip
        "a-head": _sig(_near_key(rng, key, 12), _noisy(rng, words[:60], 0.1)),  # its first 6 s, re-encoded
        "e-tail": _sig(_near_key(rng, key, 12), _noisy(rng, words[40:], 0.1)),  # its last 6 s
        "b-other": _sig(rng.integers(0, 256, 32, dtype=np.uint8), rng.integers(0, 2 ** 32, 80, dtype=np.uint32)),
        "d-none": None,
    }
    # head and tail share 2 s of 6: not duplicates of each other, yet one group through the full clip.
    assert not dup.is_duplicate(sigs["a-head"], sigs["e-tail"])
    assert dup.is_duplicate(sigs["a-head"], sigs["c-full"]) and dup.is_duplicate(sigs["e-tail"], sigs["c-full"])
    want = {"c-full": "a-head", "a-head": "a-head", "e-tail": "a-head", "b-other": "b-other", "d-none": None}
    names = list(sigs)
    for seed in range(6):
        random.Random(seed).shuffle(names)
        got = dup.group_duplicates(names, [sigs[n] for n in names])
        assert dict(zip(names, got)) == want


def test_planted_groups_among_random_signatures_are_recovered():
    rng = np.random.default_rng(7)
    n = 20_000
    ids = [f"clip{i:05d}" for i in range(n)]
    keys = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    words = [rng.integers(0, 2 ** 32, int(rng.integers(20, 101)), dtype=np.uint32) for _ in range(n)]
    perm = rng.permutation(n)
    planted = [sorted(perm[k: k + 3]) for k in range(0, 600, 3)]
    near = [sorted(perm[k: k + 3]) for k in range(600, 900, 3)]
    for g in planted:  # copies: key within ~14 bits, motion the same up to 10 % of bits, one a cut
        for m, part in zip(g[1:], (slice(None), slice(5, None))):
            keys[m], words[m] = _near_key(rng, keys[g[0]], 14), _noisy(rng, words[g[0]][part], 0.1)
    for g in near:  # other stretches of the same recording: a key as close, motion agreeing on only 60 %
        for m in g[1:]:
            keys[m], words[m] = _near_key(rng, keys[g[0]], 14), _noisy(rng, words[g[0]], 0.4)
    sigs = [_sig(k, w) for k, w in zip(keys, words)]
    got = dup.group_duplicates(ids, sigs)
    want = list(ids)
    for g in planted:
        for m in g:
            want[m] = ids[g[0]]
    assert got == want
    # The array path gives the same groups without a Python object per clip.
    k, w, off = dup.signature_arrays(sigs)
    roots = dup.group_arrays(k, w, off)
    assert [ids[r] for r in roots] == want
