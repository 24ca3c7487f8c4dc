"""Crops and pose of two commits side by side (prints figures; asserts nothing).

Curates each video at both commits (each in a fresh process, the base from a temporary git
worktree; this checkout is not touched) and compares the kept clips' 512-px crops and mesh
landmarks (in crop pixels) frame by frame: mean absolute difference and PSNR of the crops,
sharpness (variance of the Laplacian), the largest landmark difference. Then the default pose
stage runs on both crop sets; printed: how far bodies (points scored >= 0.5) and hands moved,
in crop pixels (median / 95th percentile), and how many hands were found again. For a change
of how crops are resampled: landmarks must not move, pose should stay within the model's floor
(bench/bench_pose_rate.py).

Usage: python bench/bench_crops.py [--base REV] [--videos FILE ...]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
DEFAULT_VIDEOS = [FIXTURES / "media" / "videos" / "s18.mp4", FIXTURES / "media" / "videos" / "d3.mp4",
                  FIXTURES / "media-extra" / "videos" / "latentsync_demo1.mp4",
                  FIXTURES / "media-extra" / "videos" / "wan_tvhost.mp4"]

# Run inside each tree: the kept clips' crops and landmarks as a build stores them, as plain
# arrays (an .npz read without pickle: key "v/c/crops" and "v/c/landmarks", video v, clip c).
_DUMP = """
import sys
import numpy as np
from pathlib import Path
sys.path.insert(0, "bench")
from bench_pose_rate import curated_clips
from pipeline.config import load_config
from pipeline.steps import stage_steps
from stages.base import use_cpu_threads
use_cpu_threads(1)
_, factory, kwargs = stage_steps(load_config(None, {"features.enabled": False}))[0]
curate = factory(**kwargs)
curate.setup()
arrays = {}
for v, video in enumerate(sys.argv[2:]):
    for c, (crops, landmarks) in enumerate(curated_clips(Path(video), curate, 10000)):
        arrays[f"{v}/{c}/crops"], arrays[f"{v}/{c}/landmarks"] = np.stack(crops), np.stack(landmarks)
np.savez(sys.argv[1], **arrays)
"""


def curated(tree: Path, videos: list[str], out: Path) -> dict[str, list[tuple[list, list]]]:
    """video -> its kept clips' (crops, landmarks), curated by the code in ``tree``."""
    import numpy as np

    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOG_minloglevel": "2", "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-c", _DUMP, str(out), *videos], cwd=tree, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clips: dict[str, list[tuple[list, list]]] = {v: [] for v in videos}
    with np.load(out, allow_pickle=False) as z:
        for v, video in enumerate(videos):
            c = 0
            while f"{v}/{c}/crops" in z:
                clips[video].append((list(z[f"{v}/{c}/crops"]), list(z[f"{v}/{c}/landmarks"])))
                c += 1
    return clips


def main() -> int:
    import cv2
    import numpy as np

    sys.path.insert(0, str(REPO))
    from bench_commits import checkout

    from stages.pose import BODY, LEFT_HAND, RIGHT_HAND, PoseStage

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="973f5b8", help="the commit to compare this working tree with")
    ap.add_argument("--videos", nargs="+", default=[str(v) for v in DEFAULT_VIDEOS])
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-crops-") as tmp:
        base_tree = Path(tmp) / "base"
        checkout(args.base, base_tree)
        try:
            old = curated(base_tree, args.videos, Path(tmp) / "base.npz")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_tree)],
                           capture_output=True)
        new = curated(REPO, args.videos, Path(tmp) / "head.npz")

    def sharpness(crop):
        return cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()

    print(f"base {args.base} against this working tree; crops of kept clips")
    print(f"{'video':28s} {'frames':>6s} {'mean |d|':>9s} {'PSNR min/med':>13s} {'sharpness old/new':>18s} "
          f"{'landmarks max d':>15s}")
    body, hands, found, found_new = [], [], [0, 0], 0
    pose = PoseStage()
    for video in args.videos:
        a, b = old[video], new[video]
        if [len(c[0]) for c in a] != [len(c[0]) for c in b]:
            print(f"{Path(video).name:28s} DIFFERENT clips: {[len(c[0]) for c in a]} vs {[len(c[0]) for c in b]}")
            continue
        ca = [x for clip in a for x in clip[0]]
        cb = [x for clip in b for x in clip[0]]
        d = [np.abs(x.astype(np.float64) - y.astype(np.float64)) for x, y in zip(ca, cb)]
        psnr = [10 * np.log10(255 ** 2 / max(float((e ** 2).mean()), 1e-10)) for e in d]
        lm = max((float(np.abs(x - y).max()) for clip_a, clip_b in zip(a, b) for x, y in zip(clip_a[1], clip_b[1])),
                 default=0.0)
        print(f"{Path(video).name:28s} {len(ca):6d} {np.mean([e.mean() for e in d]):9.3f} "
              f"{min(psnr):6.1f}/{np.median(psnr):<6.1f} {np.mean([sharpness(x) for x in ca]):8.1f}/"
              f"{np.mean([sharpness(x) for x in cb]):<9.1f} {lm:15.3g}")
        for (crops_a, lms_a), (crops_b, lms_b) in zip(a, b):
            for pa, pb in zip(pose.estimate(crops_a, lms_a, video=True), pose.estimate(crops_b, lms_b, video=True)):
                seen = pa[BODY, 2] >= 0.5
                body.extend(np.linalg.norm(pa[BODY][seen, :2] - pb[BODY][seen, :2], axis=1))
                for part in (LEFT_HAND, RIGHT_HAND):
                    found_new += int(pb[part.start, 2] > 0)
                    if pa[part.start, 2] > 0:
                        found[1] += 1
                        if pb[part.start, 2] > 0:
                            found[0] += 1
                            hands.extend(np.linalg.norm(pa[part, :2] - pb[part, :2], axis=1))

    def stats(v):
        return "-" if not v else f"{np.median(v):.2f} / {np.percentile(v, 95):.2f}"

    print(f"pose on the new crops against the old, px (median / p95): bodies {stats(body)}, "
          f"hands {stats(hands)} ({found[0]} of {found[1]} hands found again; {found_new} found on the new crops)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
