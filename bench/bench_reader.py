"""Clips per second the shard reader delivers from local shards (what a GPU would be fed).

    .venv/bin/python bench/bench_reader.py --data OUT --stage 2 --batch-size 4 --workers 8
    .venv/bin/python bench/bench_reader.py --test-build   # a small build from the fixtures

Counts samples (stage 1: reference/driving pairs; stage 2: 16-frame clips) leaving the
DataLoader, after a warm-up batch, for ``--seconds``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portrait_model.reader import ShardReader  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="build output folder (catalog.duckdb + shards/)")
    ap.add_argument("--test-build", action="store_true", help="write a small build from the fixture media first")
    ap.add_argument("--stage", type=int, choices=(1, 2), default=2)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--shuffle-window", type=int, default=128)
    args = ap.parse_args()
    data = args.data
    if args.test_build:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from model_shards import make_test_build

        data = str(make_test_build(Path(tempfile.mkdtemp(prefix="bench_reader_")), n_frames=32, n_clips=4))
    if not data:
        ap.error("give --data OUT or --test-build")
    reader = ShardReader(data, args.stage, args.batch_size, frames=args.frames, shuffle_window=args.shuffle_window,
                         samples_per_clip=8)
    loader = torch.utils.data.DataLoader(reader, batch_size=None, num_workers=args.workers,
                                         persistent_workers=args.workers > 0)
    it = iter(loader)
    next(it)  # start-up: worker processes, index, first row groups
    start, clips, frames = time.perf_counter(), 0, 0
    while time.perf_counter() - start < args.seconds:
        batch = next(it)
        clips += batch["latents"].shape[0]
        frames += batch["latents"].shape[0] * batch["latents"].shape[2]
    elapsed = time.perf_counter() - start
    print(f"stage {args.stage}: {clips / elapsed:.1f} clips/s ({frames / elapsed:.0f} frames/s) "
          f"from {len(reader.clips)} clips, {args.workers} workers, batch {args.batch_size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
