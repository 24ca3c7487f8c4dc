"""Position maps on CPU: frames per second of the mesh backend (and, with ``--liveportrait``,
of the full-size LivePortrait backend with random weights, a few frames only).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_position_maps.py [--frames 60] [--sizes 64 128]

Frames come from a fixture video (512x512 talking head); MediaPipe landmarks are computed first
and are not part of the timing. Also prints the stored size of one float16 map. Prints only.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.position_maps import PositionMapStage  # noqa: E402


def fixture_video() -> Path:
    root = Path(os.environ.get("PORTRAIT_FIXTURES", REPO.parent / "shared" / "fixtures"))
    return root / "media" / "videos" / "d3.mp4"


def frames_and_landmarks(n: int):
    import av
    import mediapipe as mp

    frames, lms = [], []
    with av.open(str(fixture_video())) as container, mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False, refine_landmarks=True, max_num_faces=1
    ) as fm:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            res = fm.process(rgb)
            if not res.multi_face_landmarks:
                continue
            h, w = rgb.shape[:2]
            frames.append(rgb)
            lms.append(np.array([[p.x * w, p.y * h] for p in res.multi_face_landmarks[0].landmark]))
            if len(frames) == n:
                break
    return frames, lms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--liveportrait", action="store_true", help="also time LivePortrait (random weights)")
    ap.add_argument("--lp-frames", type=int, default=2)
    args = ap.parse_args()

    frames, lms = frames_and_landmarks(args.frames)
    print(f"{len(frames)} frames of {fixture_video().name}, {frames[0].shape[1]}x{frames[0].shape[0]}")
    for p in args.sizes:
        stage = PositionMapStage(backend="mesh", map_size=p)
        stage.compute(None, lms[0], None, lms[:2])  # warm-up: builds the triangle list once
        t = time.perf_counter()
        maps = stage.compute(None, lms[0], None, lms)
        dt = time.perf_counter() - t
        print(f"mesh  P={p:4d}: {len(maps) / dt:8.1f} frames/s  ({maps[0].nbytes / 1024:.1f} KiB a map, float16)")

    if args.liveportrait:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        stage = PositionMapStage(backend="liveportrait", allow_random_weights=True, device="auto", map_size=64)
        stage.setup()
        n = min(args.lp_frames, len(frames))
        t = time.perf_counter()
        stage.compute(frames[0], lms[0], frames[1 : n + 1], lms[1 : n + 1])
        dt = time.perf_counter() - t
        print(f"liveportrait (random weights, {stage.describe().get('device')}): {n / dt:.3f} frames/s")


if __name__ == "__main__":
    main()
