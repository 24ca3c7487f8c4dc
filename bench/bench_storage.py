"""Bytes per stored 512x512 frame, by feature, for a real build with the default settings
(prints figures; asserts nothing). Goal: <= 96 KB per frame, all features together.

Latents need a VAE: give --vae PATH for your SD1.5 VAE. Without it a small random VAE with
SD1.5's latent shape (4x64x64 float16) is used: the bytes are the same raw size, but random
latents compress worse than real ones, so the figure is an upper bound.

Usage: python bench/bench_storage.py [--media DIR] [--vae PATH]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FIXTURES = Path(os.environ.get("PORTRAIT_FIXTURES", REPO.parent / "shared" / "fixtures"))


def main() -> None:
    from pipeline.build import build
    from pipeline.config import load_config
    from pipeline.reporting.preview import storage_report
    from pipeline.sources import dataset_entries, discover
    from tests.small_models import save_small_vae

    ap = argparse.ArgumentParser()
    ap.add_argument("--media", type=Path, help="folder to build (default: d3.mp4 and s1.jpg of the fixtures)")
    ap.add_argument("--vae", help="your SD1.5 VAE (folder or .safetensors)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    media = args.media
    if media is None:
        media = work / "media"
        media.mkdir()
        shutil.copy(FIXTURES / "media" / "videos" / "d3.mp4", media)
        shutil.copy(FIXTURES / "media" / "images" / "s1.jpg", media)
    vae = args.vae or str(save_small_vae(work / "small_vae"))
    config = load_config(None, {"features.latents.weights": vae})
    t = time.perf_counter()
    stats = build(config, work / "out", discover(dataset_entries(config, [str(media)], [])), progress=False)
    seconds = time.perf_counter() - t
    report = storage_report(work / "out")
    print(f"built {stats.frames} frames in {seconds:.1f} s ({'your VAE' if args.vae else 'small random VAE'})")
    for row in report:
        print(f"{row['feature']:>14}: {row['bytes_per_frame'] / 1024:8.1f} KB/frame")
    total = report[-1]["bytes_per_frame"] / 1024
    print(f"{'goal':>14}: {96:8.1f} KB/frame -> {'met' if total <= 96 else 'NOT met'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
