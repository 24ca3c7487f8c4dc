"""Where each millisecond of the default build goes, per scorer and per model (prints a table;
asserts nothing).

Runs one source through the stages of a default build in this process (curate, duplicate keys,
features with the embedded defaults; no Ray), once to warm up and once measured, with a timer
around every model call and scorer. Timers nest (face_quality holds the occlusion, lighting,
sharpness and 4x-detail scorers): children are indented under their parent, and "self" is what
a parent spends outside its children. One core: OMP_NUM_THREADS=1, and mediapipe's own graph
threads run where the OS puts them (use `taskset -c 0` for a strict one-core figure).

Usage: taskset -c 0 python bench/bench_profile.py [--video PATH] [--no-features] [--json OUT]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_VIDEO = REPO.parent / "shared" / "fixtures" / "media" / "videos" / "d3.mp4"

# (module, attribute path, label, parent label or None). Module-level functions are patched in
# the module that calls them (curate imports face_quality by name, so it is patched there).
PROBES = [
    ("stages.decode", "VideoReader.frames", "decode (sampled frames)", None),
    ("stages.faces", "FaceAnalyzer.detect", "face detection (BlazeFace)", None),
    ("stages.faces", "FaceAnalyzer.mesh", "face mesh (478, refined)", None),
    ("stages.faces", "FaceAnalyzer._human", "human check (selfie segmentation)", None),
    ("stages.faces", "FaceAnalyzer._others_human", "other faces' human check", None),
    ("stages.faces", "FaceAnalyzer._hands_in", "hands (lite)", None),
    ("stages.faces", "FaceAnalyzer._person", "person check (pose)", None),
    ("stages.curate", "face_quality", "face_quality (all face scorers)", None),
    ("stages.quality", "_normalised_face", "normalised face warp", "face_quality (all face scorers)"),
    ("stages.quality", "occlusion_of", "occlusion", "face_quality (all face scorers)"),
    ("stages.quality", "_lighting", "lighting", "face_quality (all face scorers)"),
    ("stages.quality", "_sharpness", "sharpness", "face_quality (all face scorers)"),
    ("stages.quality", "detail_4x_score", "detail_4x", "face_quality (all face scorers)"),
    ("stages.quality", "BackgroundMotion.update", "background motion (segmentation + flow)", None),
    ("stages.curate", "picture_sharpness", "picture sharpness (faceless frames)", None),
    ("stages.curate", "crop_image", "crop warp", None),
    ("stages.curate", "encode_jpeg", "JPEG encode (crops, thumbnails)", None),
    ("stages.duplicate_keys", "clip_signature", "duplicate signature", None),
    ("stages.base", "SourceWork.crop", "JPEG decode (features)", None),
    ("stages.position_maps", "PositionMapStage.compute", "position maps", None),
    ("stages.pose", "PoseStage.estimate", "pose (holistic)", None),
    ("stages.identity", "IdentityStage.embed", "identity", None),
    ("stages.features", "ClipFeatureStage._intensities", "intensities", None),
    ("stages.features", "ClipFeatureStage._views", "image views", None),
]

TOTALS: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def _timed(fn, label):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            TOTALS[label] += time.perf_counter() - t
            CALLS[label] += 1
    return wrapper


def _timed_iter(fn, label):
    """A generator's time is spent in next(): time each step, not the call."""
    @functools.wraps(fn)
    def wrapper(*a, **k):
        it = fn(*a, **k)
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                TOTALS[label] += time.perf_counter() - t
                return
            TOTALS[label] += time.perf_counter() - t
            CALLS[label] += 1
            yield item
    return wrapper


def instrument() -> list[tuple[str, str | None]]:
    import importlib
    import inspect

    found = []
    for module, path, label, parent in PROBES:
        try:
            owner = importlib.import_module(module)
        except ImportError:
            continue
        *outer, name = path.split(".")
        for part in outer:
            owner = getattr(owner, part, None)
        fn = getattr(owner, name, None) if owner is not None else None
        if fn is None:
            continue
        wrap = _timed_iter if inspect.isgeneratorfunction(fn) else _timed
        setattr(owner, name, wrap(fn, label))
        found.append((label, parent))
    return found


def run(video: Path, features: bool) -> tuple[float, int]:
    from manifests.adapters.base import SourceSpec
    from pipeline.config import load_config
    from pipeline.steps import stage_steps
    from stages.base import SourceWork, use_cpu_threads

    use_cpu_threads(1)  # as a 1-CPU actor, and as an inline build, runs
    config = load_config(None, {} if features else {"features.enabled": False})
    stages = [factory(**kwargs) for _, factory, kwargs in stage_steps(config)]
    for s in stages:
        s.setup()
    spec = SourceSpec(dataset="bench", path=str(video), rel_path=video.name, media_type="video")

    def once() -> SourceWork:
        work = SourceWork.start(spec, "bench")
        for s in stages:
            work = s.process(work)
        return work

    once()  # warm-up: first-call costs of the models
    TOTALS.clear()
    CALLS.clear()
    t = time.perf_counter()
    work = once()
    wall = time.perf_counter() - t
    sampled = CALLS.get("decode (sampled frames)", 0)
    return wall, sampled or sum(c.n_frames for c in work.clips)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--no-features", action="store_true", help="curation only")
    ap.add_argument("--json", help="also write the figures as JSON")
    args = ap.parse_args()
    probes = instrument()
    wall, frames = run(Path(args.video), not args.no_features)
    children: dict[str, list[str]] = defaultdict(list)
    for label, parent in probes:
        if parent:
            children[parent].append(label)
    print(f"{Path(args.video).name}: {frames} sampled frames, {wall:.2f} s, "
          f"{frames / wall:.1f} frames/s on one process ({'curation only' if args.no_features else 'features on'})")
    print(f"{'component':44s} {'calls':>6s} {'ms':>9s} {'ms/frame':>9s} {'share':>6s}")
    rows = []
    accounted = 0.0
    for label, parent in probes:
        if parent or label not in TOTALS:
            continue
        total = TOTALS[label]
        accounted += total
        rows.append((label, CALLS[label], total, 0))
        kids = [k for k in children.get(label, []) if k in TOTALS]
        for k in kids:
            rows.append((k, CALLS[k], TOTALS[k], 1))
        if kids:
            rows.append(("(self)", CALLS[label], total - sum(TOTALS[k] for k in kids), 1))
    rows.append(("rest (clip logic, records, tracking)", 0, wall - accounted, 0))
    for label, calls, total, depth in rows:
        name = ("  " * depth + label)[:44]
        print(f"{name:44s} {calls:6d} {1000 * total:9.1f} {1000 * total / max(frames, 1):9.2f} "
              f"{100 * total / wall:5.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"video": Path(args.video).name, "frames": frames, "wall_s": wall,
                                               "rows": [dict(component=r[0], calls=r[1], ms=1000 * r[2], depth=r[3])
                                                        for r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
