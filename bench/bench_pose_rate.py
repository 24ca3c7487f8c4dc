"""How far the default pose (model on every N-th frame, face from the curation mesh) lies from
the pose model run on every frame (prints figures; asserts nothing).

Each video is curated as a build curates it (kept clips, their 512-px crops and mesh
landmarks); then, per kept clip, the reference is MediaPipe Holistic on every frame with its own
refined face mesh (the pose stage before `features.pose.every`), and each candidate rate N runs
the model on every N-th frame, interpolates the rest and takes face-68 from the curation mesh.
Errors are in crop pixels (512 px side):
- body: COCO-17 points the reference scores >= 0.5 (median, 95th percentile, max);
- hands: points of hands the reference finds (error where both find them; share of them the
  candidate also finds);
- face: the 68 points;
plus the pose stage's milliseconds per frame.

Row "every 0" is the floor: the same model on each frame alone, without tracking, against the
same reference. Usage: python bench/bench_pose_rate.py [--videos DIR ...] [--rates 0 1 2 3 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FIXTURES = REPO.parent / "shared" / "fixtures"


def curated_clips(video: Path, stage, max_frames: int):
    """(crops, landmarks) of each kept clip of one video, as the build stores them."""
    import numpy as np

    from manifests import tensors
    from manifests.adapters.base import SourceSpec
    from manifests.schemas import KEPT
    from stages.base import SourceWork

    spec = SourceSpec(dataset="bench", path=str(video), rel_path=video.name, media_type="video")
    work = stage.process(SourceWork.start(spec, "bench"))
    by_clip = work.frames_by_clip()
    for clip in work.clips:
        rows = by_clip.get(clip.clip_id, [])[:max_frames]
        if clip.verdict == KEPT and len(rows) > 1:
            yield ([work.crop(r) for r in rows],
                   [tensors.decode(r.landmarks).astype(np.float32) for r in rows])


def static_holistic(crops):
    """The same model on each frame alone (no tracking): how far two legitimate runs of it lie
    apart, the floor any rate is compared with."""
    import mediapipe as mp
    import numpy as np

    from stages.pose import holistic_to_wholebody

    with mp.solutions.holistic.Holistic(static_image_mode=True, model_complexity=1,
                                        refine_face_landmarks=True) as holistic:
        return [holistic_to_wholebody(holistic.process(np.ascontiguousarray(c)), c.shape[1], c.shape[0])
                for c in crops]


def main() -> int:
    import numpy as np

    from pipeline.config import load_config
    from pipeline.steps import stage_steps
    from stages.pose import BODY, FACE, LEFT_HAND, RIGHT_HAND, PoseStage

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", nargs="+",
                    default=[str(FIXTURES / "media" / "videos"), str(FIXTURES / "media-extra" / "videos")])
    ap.add_argument("--rates", nargs="+", type=int, default=[0, 1, 2, 3, 4],
                    help="0: the model on each frame alone, without tracking (the floor)")
    ap.add_argument("--max-frames", type=int, default=150, help="frames per clip at most")
    args = ap.parse_args()

    config = load_config(None, {"features.enabled": False})
    _, factory, kwargs = stage_steps(config)[0]
    curate = factory(**kwargs)
    curate.setup()
    files = [p for d in args.videos for p in sorted(Path(d).glob("*.mp4"))]
    body = {n: [] for n in args.rates}
    hand_err = {n: [] for n in args.rates}
    hand_found = {n: [0, 0] for n in args.rates}
    face = {n: [] for n in args.rates}
    seconds = {n: 0.0 for n in ["reference", *args.rates]}
    frames = 0
    for f in files:
        for crops, lms in curated_clips(f, curate, args.max_frames):
            t = time.perf_counter()
            ref = PoseStage(every=1).estimate(crops)
            seconds["reference"] += time.perf_counter() - t
            frames += len(crops)
            for n in args.rates:
                t = time.perf_counter()
                got = (PoseStage(every=n).estimate(crops, lms, video=True) if n
                       else static_holistic(crops))
                seconds[n] += time.perf_counter() - t
                for r, g in zip(ref, got):
                    seen = r[BODY, 2] >= 0.5
                    body[n].extend(np.linalg.norm(r[BODY][seen, :2] - g[BODY][seen, :2], axis=1))
                    for part in (LEFT_HAND, RIGHT_HAND):
                        if r[part.start, 2] > 0:
                            hand_found[n][1] += 1
                            if g[part.start, 2] > 0:
                                hand_found[n][0] += 1
                                hand_err[n].extend(np.linalg.norm(r[part, :2] - g[part, :2], axis=1))
                    if r[FACE.start, 2] > 0:
                        face[n].extend(np.linalg.norm(r[FACE, :2] - g[FACE, :2], axis=1))
        print(f"{f.name}: done ({frames} frames so far)", file=sys.stderr)

    def stats(v):
        v = np.asarray(v, dtype=np.float64)
        return "-" if not len(v) else f"{np.median(v):5.2f} {np.percentile(v, 95):6.2f} {v.max():6.1f}"

    print(f"{len(files)} videos, {frames} frames of kept clips; errors in px of the 512-px crop "
          "(median, p95, max)")
    print(f"reference (Holistic every frame): {1000 * seconds['reference'] / max(frames, 1):.1f} ms/frame")
    print(f"{'every':>5s} {'ms/frame':>9s} {'body (med p95 max)':>20s} {'hands (med p95 max)':>21s} "
          f"{'hands found':>11s} {'face (med p95 max)':>20s}")
    for n in args.rates:
        found, total = hand_found[n]
        print(f"{n:5d} {1000 * seconds[n] / max(frames, 1):9.1f} {stats(body[n]):>20s} {stats(hand_err[n]):>21s} "
              f"{found:5d}/{total:<5d} {stats(face[n]):>20s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
