"""Contact sheets (PNG) of stored frames: crops with their landmarks, for a person to look at."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from manifests import tensors
from manifests.catalog import Catalog
from stages.jpeg import decode_jpeg

TILE = 192


def _tile(row: dict, caption: str) -> np.ndarray:
    rgb = decode_jpeg(row["jpeg"])
    s = TILE / rgb.shape[1]
    tile = cv2.resize(rgb, (TILE, TILE), interpolation=cv2.INTER_AREA)
    lm = tensors.decode(row.get("landmarks"))
    if lm is not None:
        for x, y in lm[::3] * s:
            cv2.circle(tile, (int(x), int(y)), 1, (0, 255, 0), -1, lineType=cv2.LINE_AA)
    if row.get("face_box") is not None:
        x0, y0, x1, y1 = (np.asarray(row["face_box"]) * s).astype(int)
        cv2.rectangle(tile, (x0, y0), (x1, y1), (255, 200, 0), 1)
    cv2.rectangle(tile, (0, TILE - 16), (TILE, TILE), (0, 0, 0), -1)
    cv2.putText(tile, caption[:30], (3, TILE - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def kept_sheet(cat: Catalog, frames_per_clip: int = 4, max_clips: int = 12, flow: int = 0) -> np.ndarray | None:
    """One row per kept clip (evenly spaced frames, captioned with the file and frame); None
    when nothing was kept. ``flow=N``: the tiles flow in rows of N instead (one-frame image
    clips then fill the rows instead of leaving them mostly black)."""
    clips = cat.query(
        "SELECT c.clip_id, s.rel_path, c.n_frames FROM clips c JOIN sources s USING (source_id) "
        "WHERE c.verdict = 'kept' ORDER BY s.rel_path, c.clip_index LIMIT ?", [max_clips]
    ).to_pylist()
    rows = []
    for c in clips:
        n = c["n_frames"]
        picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(frames_per_clip, n))})
        frames = tensors.rows(cat.query(
            "SELECT frame_index, jpeg, landmarks, face_box FROM frames WHERE clip_id = ? AND view = 0 "
            "AND list_contains(?, frame_index) ORDER BY frame_index", [c["clip_id"], picks]))
        tiles = [_tile(f, f"{Path(c['rel_path']).name} #{f['frame_index']}") for f in frames]
        if flow:
            rows.extend(tiles)
            continue
        tiles += [np.zeros((TILE, TILE, 3), np.uint8)] * (frames_per_clip - len(tiles))
        rows.append(np.concatenate(tiles, axis=1))
    if flow and rows:
        rows += [np.zeros((TILE, TILE, 3), np.uint8)] * (-len(rows) % flow)
        rows = [np.concatenate(rows[i : i + flow], axis=1) for i in range(0, len(rows), flow)]
    return np.concatenate(rows, axis=0) if rows else None


def duplicates_sheet(cat: Catalog, max_groups: int = 8, max_members: int = 6) -> tuple[np.ndarray | None, int]:
    """One row per duplicate group (``clips.dup_group``), largest first: each member's middle
    frame side by side, captioned with its dataset and file, so a person sees at a glance
    whether the grouped clips are the same footage. Returns the sheet and the number of groups."""
    groups = cat.query(
        "SELECT dup_group, count(*) AS n FROM clips WHERE verdict = 'kept' AND dup_group IS NOT NULL "
        "GROUP BY dup_group HAVING count(*) > 1 ORDER BY n DESC, dup_group").to_pylist()
    rows = []
    for g in groups[:max_groups]:
        members = cat.query(
            "SELECT c.clip_id, c.dataset, s.rel_path, c.n_frames FROM clips c JOIN sources s USING (source_id) "
            "WHERE c.dup_group = ? AND c.verdict = 'kept' ORDER BY c.dataset, c.clip_id LIMIT ?",
            [g["dup_group"], max_members]).to_pylist()
        tiles = []
        for m in members:
            frame = tensors.rows(cat.query(
                "SELECT jpeg, landmarks, face_box FROM frames WHERE clip_id = ? AND view = 0 AND frame_index = ?",
                [m["clip_id"], max(0, m["n_frames"] // 2)]))
            if frame:
                tiles.append(_tile({**frame[0], "landmarks": None, "face_box": None},
                                   f"{m['dataset']}: {Path(m['rel_path']).name}"))
        if tiles:
            tiles += [np.zeros((TILE, TILE, 3), np.uint8)] * (max_members - len(tiles))
            rows.append(np.concatenate(tiles, axis=1))
    return (np.concatenate(rows, axis=0) if rows else None), len(groups)


def write_contact_sheet(
    out_dir: str | Path, png_path: str | Path, frames_per_clip: int = 4, max_clips: int = 12
) -> int:
    """One row per kept clip (evenly spaced frames); returns the number of clips shown."""
    with Catalog(out_dir, read_only=True) as cat:
        sheet = kept_sheet(cat, frames_per_clip, max_clips)
    if sheet is None:
        return 0
    cv2.imwrite(str(png_path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return sheet.shape[0] // TILE
