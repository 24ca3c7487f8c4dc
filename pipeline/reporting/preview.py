"""`portrait preview` (one clip as a PNG sheet) and `portrait report` (storage per feature).

Preview rows, labelled on the left, one column per chosen frame: the crop with landmarks; the
position map, colour-coded (x to red, y to green, blue where valid) at tile size; the whole-body
pose skeleton; and, when a VAE is given, the latent decoded back. A banner above says the clip
id, its verdict (and reasons) and its scores.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

from manifests import tensors
from manifests.catalog import Catalog
from stages.jpeg import decode_jpeg

from ..config import ConfigError
from .contact_sheet import TILE

# COCO-17 body limbs and hand chains (offsets inside a 21-point hand), for drawing only.
_BODY = [(0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12),
         (11, 12), (11, 13), (13, 15), (12, 14), (14, 16)]
_HAND = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
         (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]


def colour_map(pmap: np.ndarray, size: int) -> np.ndarray:
    """(3, P, P) position map -> RGB image: red = x, green = y, blue = validity."""
    m = np.asarray(pmap, dtype=np.float32)
    rgb = np.stack([m[0], m[1], 0.5 * m[2]], axis=-1) * m[2:3].transpose(1, 2, 0)
    rgb = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_NEAREST)


def draw_pose(image: np.ndarray, pose: np.ndarray, scale: float, min_score: float = 0.3) -> np.ndarray:
    out = image.copy()
    pts = pose[:, :2] * scale
    ok = pose[:, 2] >= min_score

    def line(i, j, colour):
        if ok[i] and ok[j]:
            cv2.line(out, tuple(int(v) for v in pts[i]), tuple(int(v) for v in pts[j]), colour, 1, cv2.LINE_AA)

    for i, j in _BODY:
        line(i, j, (255, 128, 0))
    for base in (91, 112):
        for i, j in _HAND:
            line(base + i, base + j, (0, 200, 255))
    for k in np.flatnonzero(ok[23:91]) + 23:
        cv2.circle(out, tuple(int(v) for v in pts[k]), 1, (255, 255, 255), -1)
    return out


def _rejected_sheet(clip_id: str, clip: dict, png: str | Path) -> str:
    """A rejected clip keeps no frames, only its thumbnail strip: show it with the reasons."""
    thumbs = [decode_jpeg(b) for b in (clip["thumbnails"] or [])]
    if not thumbs:
        raise ConfigError(f"rejected clip {clip_id!r} has no thumbnails (built before schema 2?)")
    strip = np.concatenate(thumbs, axis=1)
    banner = np.zeros((24, strip.shape[1], 3), np.uint8)
    cv2.putText(banner, f"{clip_id} rejected: {', '.join(clip['reasons'])}", (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (255, 255, 255), 1, cv2.LINE_AA)
    cv2.imwrite(str(png), cv2.cvtColor(np.concatenate([banner, strip], axis=0), cv2.COLOR_RGB2BGR))
    return clip_id


def preview_clip(
    out_dir: str | Path, clip_id: str | None, png: str | Path, n_frames: int = 6, vae: str | None = None
) -> str:
    with Catalog(out_dir, read_only=True) as cat:
        if clip_id is None:
            rows = cat.query("SELECT clip_id FROM clips WHERE verdict = 'kept' ORDER BY clip_id LIMIT 1").to_pylist()
            if not rows:
                raise ConfigError("the build has no kept clip to preview")
            clip_id = rows[0]["clip_id"]
        clip = cat.query("SELECT * FROM clips WHERE clip_id = ?", [clip_id]).to_pylist()
        if clip and clip[0]["verdict"] != "kept":
            return _rejected_sheet(clip_id, clip[0], png)
        frames = tensors.rows(cat.query(
            "SELECT frame_index, view, jpeg, landmarks, position_map, pose, latent FROM frames "
            "WHERE clip_id = ? ORDER BY view, frame_index", [clip_id]))
    if not frames:
        raise ConfigError(f"no stored frames for clip {clip_id!r} (unknown, or not kept)")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(n_frames, len(frames))).round().astype(int))
    chosen = [frames[i] for i in picks]
    decoded = _decode_latents([f["latent"] for f in chosen], vae) if vae else None
    names = ["crop + landmarks", "position map", "pose"] + (["decoded latent"] if decoded is not None else [])
    columns = [_row_labels(names)]
    for k, f in enumerate(chosen):
        crop = decode_jpeg(f["jpeg"])
        s = TILE / crop.shape[1]
        tile = cv2.resize(crop, (TILE, TILE), interpolation=cv2.INTER_AREA)
        lm = tensors.decode(f["landmarks"])
        with_lm = tile.copy()
        if lm is not None:
            for x, y in lm[::2] * s:
                cv2.circle(with_lm, (int(x), int(y)), 1, (0, 255, 0), -1)
        cells = [with_lm]
        pm = tensors.decode(f["position_map"])
        cells.append(colour_map(pm, TILE) if pm is not None else np.zeros_like(tile))
        pose = tensors.decode(f["pose"])
        cells.append(draw_pose(tile // 2, pose, s) if pose is not None else np.zeros_like(tile))
        if decoded is not None:
            cells.append(cv2.resize(decoded[k], (TILE, TILE)) if decoded[k] is not None else np.zeros_like(tile))
        label = f"view {f['view']}" if f["view"] else f"frame {f['frame_index']}"
        cv2.rectangle(cells[0], (0, 0), (70, 16), (0, 0, 0), -1)  # readable on any crop
        cv2.putText(cells[0], label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        columns.append(np.concatenate(cells, axis=0))
    sheet = np.concatenate(columns, axis=1)
    sheet = np.concatenate([_banner(clip_id, clip[0] if clip else {}, sheet.shape[1]), sheet], axis=0)
    cv2.imwrite(str(png), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return clip_id


_LABEL_W = 110
_BANNER_SCORES = ("sharpness", "lighting_mean", "occluded_share", "face_px", "face_frac", "bg_motion", "detail_4x")


def _row_labels(names: list[str]) -> np.ndarray:
    """The left column: what each row of the sheet shows."""
    cells = []
    for name in names:
        cell = np.full((TILE, _LABEL_W, 3), 32, np.uint8)
        for i, word in enumerate(name.split(" + ") if "+" in name else [name]):
            cv2.putText(cell, word + (" +" if i == 0 and "+" in name else ""), (4, TILE // 2 + 14 * i),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
        cells.append(cell)
    return np.concatenate(cells, axis=0)


def _banner(clip_id: str, clip: dict, width: int) -> np.ndarray:
    """Clip id, verdict (with reasons) and the clip's scores above the sheet."""
    verdict = clip.get("verdict", "?") + (f" ({', '.join(clip['reasons'])})" if clip.get("reasons") else "")
    scores = "  ".join(f"{k}={clip[k]:.3g}" for k in _BANNER_SCORES if clip.get(k) is not None)
    band = np.zeros((44, width, 3), np.uint8)
    cv2.putText(band, f"{clip_id}  {verdict}", (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(band, scores, (4, 37), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (200, 220, 255), 1, cv2.LINE_AA)
    return band


def _decode_latents(latents: list, vae: str) -> list:
    from stages.latents import LatentStage

    stage = LatentStage(backend="diffusers", weights=vae)
    arrays = [tensors.decode(z) for z in latents]
    if any(a is None for a in arrays):
        raise ConfigError("this clip has no latents (the build ran without a VAE)")
    return stage.decode(arrays)


def storage_report(out_dir: str | Path) -> list[dict]:
    """Compressed bytes per stored frame, by column (feature), over every committed shard."""
    out_dir = Path(out_dir)
    with Catalog(out_dir, read_only=True) as cat:
        paths = cat.shard_paths()
    totals: dict[str, int] = {}
    rows = 0
    for rel in paths:
        meta = pq.ParquetFile(out_dir / rel).metadata
        rows += meta.num_rows
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                name = col.path_in_schema.split(".")[0]
                totals[name] = totals.get(name, 0) + col.total_compressed_size
    report = [{"feature": k, "bytes_per_frame": round(v / max(rows, 1), 1), "total_bytes": v}
              for k, v in sorted(totals.items(), key=lambda kv: -kv[1])]
    report.append({"feature": "ALL", "bytes_per_frame": round(sum(totals.values()) / max(rows, 1), 1),
                   "total_bytes": sum(totals.values())})
    return report
