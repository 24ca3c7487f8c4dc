"""What the face-detection and background-motion rates cost and change (prints figures; asserts
nothing): the measurement behind ``sampling.detect_every`` and ``sampling.motion_every``.

Curation (the build's own CurateStage, features off) runs over the fixture videos once per
setting; each rate is compared with the same stage at rate 1 (detection on every sampled frame;
motion between every two consecutive sampled frames):
- CPU milliseconds of curation per sampled frame (this process, all its threads);
- frames kept: sampled frames whose kept/rejected status equals the reference's, and how many
  sources change status;
- landmarks (detect_every): on frames kept by both, the distance of the 478 points to the
  reference's, in % of the face box side (median, 95th percentile, max): between detection
  frames the mesh follows its own previous landmarks instead of a new detection box;
- background motion (motion_every): per clip of the same span in both, the clip's bg_motion
  score against the reference's (median and largest absolute difference), and clips on the
  other side of ``thresholds.max_bg_motion``.

Usage: python bench/bench_rates.py [--videos DIR ...] [--detect 1 2 3 4 6] [--motion 1 2 4 8]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FIXTURES = REPO.parent / "shared" / "fixtures"


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def curate_all(videos: list[Path], overrides: dict) -> dict:
    """Each video curated with the default settings plus ``overrides``: per source its status,
    kept frames (timestamp -> landmarks), clips (span -> bg_motion), and the CPU it took."""
    import numpy as np

    from manifests import tensors
    from manifests.adapters.base import SourceSpec
    from pipeline.build import stage_steps
    from pipeline.config import load_config
    from stages.base import SourceWork
    from stages.curate import CurateStage

    config = load_config(None, {"features.enabled": False, **overrides})
    stage = CurateStage(**stage_steps(config)[0][2])
    stage.setup()
    out = {"cpu_s": 0.0, "frames": 0, "max_bg_motion": config.thresholds.max_bg_motion, "sources": {}}
    for video in videos:
        spec = SourceSpec(dataset="bench", path=str(video), rel_path=video.name, media_type="video")
        c0 = _cpu_s()
        work = stage.process(SourceWork.start(spec, "bench"))
        out["cpu_s"] += _cpu_s() - c0
        out["frames"] += sum(c.n_frames for c in work.clips)
        out["sources"][video.name] = {
            "status": work.source.status,
            "kept": {round(r.timestamp_s, 3): tensors.decode(r.landmarks).astype(np.float64)
                     for r in work.frames if r.view == 0},
            "boxes": {round(r.timestamp_s, 3): r.face_box for r in work.frames if r.view == 0},
            "clips": {(round(c.start_s, 3), round(c.end_s, 3)): c.bg_motion for c in work.clips},
        }
    return out


def compare(run: dict, ref: dict) -> dict:
    import numpy as np

    same_frames = total_frames = 0
    status_changes, lm_err, motion_diff, crossed = [], [], [], 0
    limit = ref["max_bg_motion"]
    for name, r in ref["sources"].items():
        c = run["sources"][name]
        if c["status"] != r["status"]:
            status_changes.append(name)
        stamps = set(r["kept"]) | set(c["kept"])
        total_frames += len(stamps)
        same_frames += len(set(r["kept"]) & set(c["kept"]))
        for t in set(r["kept"]) & set(c["kept"]):
            box = r["boxes"][t]
            side = max(box[2] - box[0], box[3] - box[1])
            lm_err.append(np.linalg.norm(c["kept"][t] - r["kept"][t], axis=1).max() / side * 100)
        for span, m_ref in r["clips"].items():
            m = c["clips"].get(span)
            if m is None or m_ref is None or np.isnan(m) or np.isnan(m_ref):
                continue
            motion_diff.append(abs(m - m_ref))
            crossed += (m > limit) != (m_ref > limit)
    lm = np.array(lm_err) if lm_err else np.zeros(1)
    md = np.array(motion_diff) if motion_diff else np.zeros(1)
    return {
        "ms_per_frame": 1000 * run["cpu_s"] / max(run["frames"], 1),
        "frames_same": f"{same_frames}/{total_frames}",
        "sources_changed": ", ".join(status_changes) or "none",
        "landmarks_pct": f"{np.median(lm):.2f} / {np.percentile(lm, 95):.2f} / {lm.max():.2f}",
        "bg_motion_diff": f"{np.median(md):.2f} / {md.max():.2f} ({len(motion_diff)} clips)",
        "bg_motion_crossed": crossed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", nargs="+", type=Path,
                    default=[FIXTURES / "media" / "videos", FIXTURES / "media-extra" / "videos"])
    ap.add_argument("--detect", nargs="+", type=int, default=[1, 2, 3, 4, 6])
    ap.add_argument("--motion", nargs="+", type=int, default=[1, 2, 4, 8])
    args = ap.parse_args()
    videos = sorted(p for d in args.videos for p in d.glob("*.mp4"))
    print(f"{len(videos)} videos")
    print(f"{'setting':<22}{'ms/frame':>9}  {'frames kept alike':>17}  {'landmarks % face (med/p95/max)':>31}  "
          f"{'bg_motion |diff| (med/max)':>27}  crossed  sources changed")
    for key, rates, other in (("detect_every", args.detect, ("motion_every", 2)),
                              ("motion_every", args.motion, ("detect_every", 3))):
        ref = curate_all(videos, {f"sampling.{key}": 1, f"sampling.{other[0]}": other[1]})
        for rate in rates:
            run = ref if rate == 1 else curate_all(videos, {f"sampling.{key}": rate,
                                                            f"sampling.{other[0]}": other[1]})
            f = compare(run, ref)
            print(f"{key + ' ' + str(rate):<22}{f['ms_per_frame']:>9.1f}  {f['frames_same']:>17}  "
                  f"{f['landmarks_pct']:>31}  {f['bg_motion_diff']:>27}  {f['bg_motion_crossed']:>7}  "
                  f"{f['sources_changed']}", flush=True)


if __name__ == "__main__":
    main()
