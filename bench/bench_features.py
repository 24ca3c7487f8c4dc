"""Feature stages on CPU: frames per second, and stored bytes per frame of each feature array.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_features.py [--frames 50] [--sd15] [--threads 1]

Frames come from a fixture video (512x512 talking head). Latents use a small random VAE
(4 blocks of 8 channels, same 4x64x64 output as SD1.5); ``--sd15`` adds the full SD1.5 VAE
architecture with random weights (about 6 s a frame on a 2-core CPU, so it encodes only 2
frames). Random-weight latents compress differently from real ones: treat their size as a
rough figure. Sizes are measured in a Parquet file of all frames, zstd-compressed, from the
column chunk sizes of each array column. Prints only; no thresholds.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from manifests import tensors  # noqa: E402
from stages import intensity  # noqa: E402
from stages.latents import SD15_VAE_CONFIG, LatentStage  # noqa: E402
from stages.pose import PoseStage  # noqa: E402
from tests.small_models import SMALL_VAE  # noqa: E402


def read_frames(path: Path, count: int) -> list[np.ndarray]:
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24")[:512, :512])
            if len(frames) == count:
                break
    return frames


def face_meshes(frames: list[np.ndarray]) -> list[np.ndarray]:
    import mediapipe as mp

    out = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True) as fm:
        for rgb in frames:
            res = fm.process(rgb)
            lm = res.multi_face_landmarks[0].landmark if res.multi_face_landmarks else None
            out.append(None if lm is None else np.array([(p.x * 512, p.y * 512) for p in lm], np.float32))
    return out


def timed(label: str, n: int, fn):
    t0 = time.perf_counter()
    result = fn()
    dt = time.perf_counter() - t0
    print(f"{label:<42s} {n / dt:9.2f} frames/s   ({dt:.2f} s for {n})")
    return result


def config_dir(config: dict, root: str) -> str:
    """A folder with a diffusers config.json, for a random-weight VAE of that architecture."""
    import json

    folder = os.path.join(root, "cfg")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"_class_name": "AutoencoderKL", **config}, f)
    return folder


def parquet_bytes_per_frame(columns: dict[str, list[np.ndarray]], path: str) -> dict[str, float]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(next(iter(columns.values())))
    # The shards' encoding: nested fixed_size_list columns of each array's own shape and dtype.
    table = pa.table(
        {k: tensors.to_arrow(v, tensors.array_type(v[0].shape, v[0].dtype.name)) for k, v in columns.items()}
    )
    pq.write_table(table, path, compression="zstd")
    meta = pq.ParquetFile(path).metadata
    sizes = dict.fromkeys(columns, 0)
    for rg in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            col = meta.row_group(rg).column(c)
            sizes[col.path_in_schema.split(".")[0]] += col.total_compressed_size
    return {k: v / n for k, v in sizes.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--video", default=str(REPO.parent / "shared/fixtures/media/videos/d3.mp4"))
    ap.add_argument("--sd15", action="store_true", help="also time the full SD1.5 VAE (random weights)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    frames = read_frames(Path(args.video), args.frames)
    n = len(frames)
    print(f"{n} frames of {args.video}, torch threads {args.threads}\n")

    meshes = timed("face mesh (input to intensity/identity)", n, lambda: face_meshes(frames))
    poses = timed("pose: mediapipe holistic -> 133", n, lambda: PoseStage().estimate(frames))
    valid = np.stack([m for m in meshes if m is not None])
    timed("intensity: per clip + 16-frame windows", n,
          lambda: (intensity.intensities(valid), intensity.window_intensities(valid, 16, 4)))

    with tempfile.TemporaryDirectory() as tmp:
        small = LatentStage("diffusers", config_dir=config_dir(SMALL_VAE, tmp), device="cpu",
                            allow_random_weights=True, batch_size=8)
        small.setup()
        latents = timed("latents: small VAE (8x4 blocks), batch 8", n, lambda: small.encode(frames))
        if args.sd15:
            sd = LatentStage("diffusers", config_dir=config_dir(SD15_VAE_CONFIG, os.path.join(tmp, "sd")),
                             device="cpu", allow_random_weights=True, batch_size=1)
            sd.setup()
            timed("latents: SD1.5 VAE (random weights)", 2, lambda: sd.encode(frames[:2]))

        sizes = parquet_bytes_per_frame(
            {"latent": latents, "pose": poses, "landmarks": [m for m in meshes if m is not None]},
            os.path.join(tmp, "features.parquet"),
        )
    raw = {"latent": latents[0].nbytes, "pose": poses[0].nbytes, "landmarks": valid[0].nbytes}
    print("\nstored bytes per frame (Parquet, zstd):")
    for k, v in sizes.items():
        print(f"  {k:<10s} {v:9.0f}   (raw {raw[k]})")
    print(f"  identity   {512 * 4:9d}   per clip, raw float32 (512,)")
    print(f"  intensity  {16:9d}   per clip, two float64")


if __name__ == "__main__":
    main()
