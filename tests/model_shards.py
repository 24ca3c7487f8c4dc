"""A small build folder in the real data contract, for the trainer's tests.

TEST DATA, NOT A VAE: frames are real (decoded from the fixture video d3.mp4 and the fixture
photo s1.jpg at 512 px), but the stored ``latent`` is a deterministic stand-in derived from the
pixels (8x average-pooled RGB plus gray, in [-1, 1]) so that tests need no VAE weights. Video
position maps are the identity; image views get the true map of their random crop.
The catalog run records the stand-in as backend ``test-pooled-rgb``.

Written through ``manifests.shards.write_shard`` and ``Catalog.commit_sources``, as a build does.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from manifests import schemas, tensors
from manifests.catalog import Catalog
from manifests.shards import write_shard
from tests.media_makers import frames_at

FIXTURES = Path(os.environ.get("PORTRAIT_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
SIZE = 512
MAP = 64


def pooled_latent(rgb: np.ndarray) -> np.ndarray:
    """(512, 512, 3) uint8 -> (4, 64, 64) float16 test stand-in for a latent."""
    x = rgb.astype(np.float32) / 127.5 - 1.0
    pooled = x.reshape(SIZE // 8, 8, SIZE // 8, 8, 3).mean(axis=(1, 3))
    gray = pooled.mean(axis=2, keepdims=True)
    return np.concatenate([pooled, gray], axis=2).transpose(2, 0, 1).astype(np.float16)


def crop_map(x0: float, y0: float, side: float, full: float = SIZE) -> np.ndarray:
    """Position map of a square crop (x0, y0, side) of a full x full image: (3, MAP, MAP)."""
    centres = (np.arange(MAP, dtype=np.float32) + 0.5) / MAP
    xs = (x0 + centres * side) / full
    ys = (y0 + centres * side) / full
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx, gy, np.ones_like(gx)]).astype(np.float16)


def identity_map() -> np.ndarray:
    return crop_map(0, 0, SIZE)


def decode_video(path: Path, count: int, stride: int, start: int = 0) -> list[np.ndarray]:
    picks = range(start, start + count * stride, stride)
    return [cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for rgb in frames_at(path, picks)]


def jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return buf.tobytes()


def frame_row(clip_id, source_id, index, fps, rgb, pos, view=0, view_params=None, latents=True):
    return dict(
        clip_id=clip_id, source_id=source_id, frame_index=index, source_frame=index,
        timestamp_s=index / fps, view=view, jpeg=jpeg(rgb),
        latent=tensors.encode(pooled_latent(rgb)) if latents else None,
        position_map=tensors.encode(pos), view_params=view_params,
    )


def clip_row(clip_id, source_id, dataset, n_frames, fps, run_id, media="video", split="train",
             verdict="kept", reference_frames=(0,)):
    return dict(
        clip_id=clip_id, source_id=source_id, dataset=dataset, split=split, media_type=media,
        clip_index=int(clip_id.rsplit("-", 1)[-1]), start_s=0.0, end_s=n_frames / fps, n_frames=n_frames,
        fps=fps, verdict=verdict, reasons=[] if verdict == "kept" else ["blur"],
        reference_frames=None if reference_frames is None else list(reference_frames), run_id=run_id,
        out_size=SIZE,
    )


def source_row(source_id, dataset, path, media, run_id, split="train"):
    return dict(source_id=source_id, dataset=dataset, path=str(path), rel_path=Path(path).name,
                media_type=media, split=split, status="kept", run_id=run_id)


def _run(cat: Catalog, run_id: str, random_weights: bool, weights: dict[str, float]) -> None:
    config = {"datasets": [{"name": n, "root": str(FIXTURES / "media"), "cap": None, "weight": w}
                           for n, w in weights.items()]}
    models = {"latents": {"backend": "test-pooled-rgb", "weights": None, "sha256": None,
                          "random_weights": random_weights}}
    cat.start_run(dict(run_id=run_id, config_json=json.dumps(config), models_json=json.dumps(models),
                       schema_version=schemas.SCHEMA_VERSION, status="finished"))


def _commit(cat, out_dir, shard_id, run_id, sources, clips, frames, row_group_rows):
    infos = []
    if frames:
        infos = [write_shard(schemas.table_from_rows(frames, schemas.FRAMES), out_dir, shard_id,
                             row_group_rows=row_group_rows)]
    cat.commit_sources(schemas.table_from_rows(sources, schemas.SOURCES),
                       schemas.table_from_rows(clips, schemas.CLIPS),
                       schemas.empty_table(schemas.ERRORS), infos, run_id=run_id)


def make_test_build(
    out_dir: str | Path,
    n_frames: int = 16,
    n_clips: int = 2,
    with_image: bool = True,
    with_excluded: bool = True,
    latents: bool = True,
    row_group_rows: int = 16,
    weights: dict[str, float] | None = None,
    references: list | None = None,
    fps: list[float] | None = None,
) -> Path:
    """Write OUT/catalog.duckdb and OUT/shards/*.parquet; returns ``out_dir``.

    Train clips: ``n_clips`` video clips of d3.mp4 (``n_frames`` frames each, every 2nd frame,
    dataset 'talking', one shard per clip) and, with ``with_image``, the photo s1.jpg with two
    random-crop views (dataset 'photos'). With ``with_excluded``, also an eval-split clip, a clip
    from a random-weights run and a rejected clip, which training must not see by default.
    ``references[k]`` / ``fps[k]``: clip k's reference_frames and sampling fps (default: (0,)
    or null alternately, and 15).
    """
    out_dir = Path(out_dir)
    weights = weights or {"talking": 1.0, "photos": 1.0}
    video = FIXTURES / "media" / "videos" / "d3.mp4"
    fps, fps_of = 15.0, fps
    run_id = "test-run"
    with Catalog(out_dir) as cat:
        _run(cat, run_id, False, weights)
        extra = 8 if with_excluded else 0
        frames_all = decode_video(video, n_clips * n_frames + extra, stride=2)
        for k in range(n_clips):
            sid = f"d3-part{k}"
            cid = f"{sid}-0"
            rgb = frames_all[k * n_frames : (k + 1) * n_frames]
            clip_fps = fps_of[k] if fps_of else fps
            rows = [frame_row(cid, sid, i, clip_fps, f, identity_map(), latents=latents) for i, f in enumerate(rgb)]
            refs = (0,) if k % 2 == 0 else None  # null reference_frames means frame 0
            if references is not None:
                refs = references[k]
            _commit(cat, out_dir, f"video-{k}", run_id, [source_row(sid, "talking", video, "video", run_id)],
                    [clip_row(cid, sid, "talking", n_frames, clip_fps, run_id, reference_frames=refs)], rows,
                    row_group_rows)
        if with_image:
            _add_image(cat, out_dir, run_id, latents, row_group_rows)
        if with_excluded:
            rest = frames_all[n_clips * n_frames :]
            rows = [frame_row("eval-0", "eval", i, fps, f, identity_map()) for i, f in enumerate(rest[:4])]
            _commit(cat, out_dir, "eval", run_id, [source_row("eval", "talking", video, "video", run_id, "eval")],
                    [clip_row("eval-0", "eval", "talking", 4, fps, run_id, split="eval")], rows, row_group_rows)
            _commit(cat, out_dir, "none", run_id, [source_row("rejected", "talking", video, "video", run_id)],
                    [clip_row("rejected-0", "rejected", "talking", 4, fps, run_id, verdict="rejected")], [],
                    row_group_rows)
            _run(cat, "random-run", True, weights)
            rows = [frame_row("random-0", "random", i, fps, f, identity_map()) for i, f in enumerate(rest[4:8])]
            _commit(cat, out_dir, "random", "random-run",
                    [source_row("random", "talking", video, "video", "random-run")],
                    [clip_row("random-0", "random", "talking", 4, fps, "random-run")], rows, row_group_rows)
    return out_dir


def _add_image(cat, out_dir, run_id, latents, row_group_rows):
    path = FIXTURES / "media" / "images" / "s1.jpg"
    bgr = cv2.imread(str(path))
    h, w = bgr.shape[:2]
    side = min(h, w)
    square = bgr[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    full = cv2.cvtColor(cv2.resize(square, (SIZE, SIZE), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    rng = np.random.default_rng(0)
    rows = [frame_row("s1-0", "s1", 0, 1.0, full, identity_map(), latents=latents)]
    for view in (1, 2):
        crop = int(rng.integers(320, 448))
        x0, y0 = (int(v) for v in rng.integers(0, SIZE - crop, size=2))
        rgb = cv2.resize(full[y0 : y0 + crop, x0 : x0 + crop], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        params = json.dumps({"x0": x0, "y0": y0, "size": crop})
        rows.append(frame_row("s1-0", "s1", 0, 1.0, rgb, crop_map(x0, y0, crop), view, params, latents))
    _commit(cat, out_dir, "image-s1", run_id, [source_row("s1", "photos", path, "image", run_id)],
            [clip_row("s1-0", "s1", "photos", 1, 1.0, run_id, media="image")], rows, row_group_rows)


def make_many_shards(out_dir: str | Path, n_clips: int, frames: int = 4, clips_per_shard: int = 1,
                     row_group_rows: int = 2, seed: int = 0, jpeg_bytes: int = 0) -> Path:
    """A build of ``ceil(n_clips / clips_per_shard)`` shards, fast to write: synthetic latents
    (random, not pooled from pixels) and identity maps, one tiny JPEG for every frame (or, with
    ``jpeg_bytes``, that many random bytes: a paper-sized row for benchmarks), dataset 'talking'
    (even clips) and 'vox' (odd). For tests and benchmarks of the reader at many shards."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    tiny = rng.bytes(jpeg_bytes) if jpeg_bytes else jpeg(np.full((16, 16, 3), 128, np.uint8))
    pos = tensors.encode(identity_map())
    run_id = "many-run"
    infos, sources, clips = [], [], []
    with Catalog(out_dir) as cat:
        _run(cat, run_id, False, {"talking": 1.0, "vox": 1.0})
        for first in range(0, n_clips, clips_per_shard):
            rows = []
            for k in range(first, min(n_clips, first + clips_per_shard)):
                sid, cid, ds = f"m{k:05d}", f"m{k:05d}-0", "talking" if k % 2 == 0 else "vox"
                for i in range(frames):
                    latent = rng.standard_normal((4, 64, 64)).astype(np.float16)
                    if jpeg_bytes:  # rows as large, and as incompressible, as real ones
                        tiny = rng.bytes(jpeg_bytes)
                        pos = tensors.encode(np.concatenate([rng.random((2, MAP, MAP)), np.ones((1, MAP, MAP))])
                                             .astype(np.float16))
                    rows.append(dict(clip_id=cid, source_id=sid, frame_index=i, source_frame=i, timestamp_s=i / 15.0,
                                     view=0, jpeg=tiny, latent=tensors.encode(latent), position_map=pos))
                sources.append(source_row(sid, ds, f"{sid}.mp4", "video", run_id))
                clips.append(clip_row(cid, sid, ds, frames, 15.0, run_id))
            infos.append(write_shard(schemas.table_from_rows(rows, schemas.FRAMES), out_dir, f"many-{first:05d}",
                                     row_group_rows=row_group_rows))
        cat.commit_sources(
            schemas.table_from_rows(sources, schemas.SOURCES),
            schemas.table_from_rows(clips, schemas.CLIPS),
            schemas.empty_table(schemas.ERRORS),
            infos,
            run_id=run_id,
        )
    return out_dir
