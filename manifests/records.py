"""Typed rows of the build's tables, and the one codec between them and Arrow.

A source's rows live as these records inside an actor (stages/base.py: ``SourceWork``) and
become Arrow only through :func:`to_table` (for the next operator, the shard writer and the
driver) and back only through :func:`from_table`. Each record mirrors one schema of
manifests/schemas.py exactly: same field names in the same order, ``X | None`` where the column
is nullable, array columns (``manifests.tensors.ARRAYS``) as NumPy arrays;
tests/test_records.py fails when a record and its schema disagree.

Every field is a keyword (``kw_only``) and slotted: a misspelt or missing field is a
``TypeError`` where the row is made and an ``AttributeError`` where it is assigned, never an
empty column in a shard. Fields without a default must be given when the row is made; the
defaults (``None``) are the columns a later step fills (the probe's results on a source, the
features of a clip or a frame), and a non-nullable column left null is refused by
:func:`to_table`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np
import pyarrow as pa

from . import schemas, tensors

_ROW = dict(slots=True, kw_only=True)


@dataclass(**_ROW)
class SourceRow:
    """A ``sources`` row: made when a source enters the first operator, completed by curation."""

    SCHEMA: ClassVar[pa.Schema] = schemas.SOURCES

    source_id: str
    dataset: str
    path: str
    rel_path: str
    media_type: str
    identity: str | None
    split: str | None
    labels: dict[str, str] | None
    video_id: str | None = None  # from the spec (SourceSpec.video_id)
    # Probe results (stages/probe.py: ProbeResult), filled by curation.
    container: str | None = None
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    rotation: int | None = None
    fps: float | None = None
    variable_fps: bool | None = None
    n_frames: int | None = None
    duration_s: float | None = None
    has_audio: bool | None = None
    size_bytes: int | None = None
    # Outcome: PENDING until curation (or a failure) sets it.
    status: str
    reasons: list[str] | None
    n_clips: int | None
    n_kept: int | None
    run_id: str


@dataclass(**_ROW)
class ClipRow:
    """A ``clips`` row: made by curation with its scores and verdict; features added later."""

    SCHEMA: ClassVar[pa.Schema] = schemas.CLIPS

    clip_id: str
    source_id: str
    dataset: str
    identity: str | None
    split: str | None
    labels: dict[str, str] | None
    media_type: str
    clip_index: int
    start_s: float
    end_s: float
    n_frames: int
    fps: float | None
    split_reason: str | None
    crop_x0: float | None
    crop_y0: float | None
    crop_size: float | None
    out_size: int | None
    # Scores (schemas.CLIP_SCORES, FRAME_SCORES).
    crop_source_px: float | None
    face_px: float | None
    face_frac: float | None
    pad_frac: float | None
    face_cut: float | None
    n_faces: int | None
    face_conf: float | None
    face_human: float | None
    face_person: float | None
    occlusion: float | None
    occluded_share: float | None
    lighting_mean: float | None
    lighting_std: float | None
    lighting_clipped: float | None
    bg_motion: float | None
    sharpness: float | None
    detail_4x: float | None
    mirror_4x: float | None
    detail_train: float | None
    face_px_frames: list[float | None] | None
    occlusion_frames: list[float | None] | None
    lighting_frames: list[float | None] | None
    bg_motion_frames: list[float | None] | None
    sharpness_frames: list[float | None] | None
    verdict: str
    reasons: list[str]
    thumbnails: list[bytes] | None
    # Features (stages/features.py), null until computed.
    reference_frames: list[int] | None = None
    identity_embedding: np.ndarray | None = None
    intensity_exp: float | None = None
    intensity_head: float | None = None
    intensity_exp_windows: list[float] | None = None
    intensity_head_windows: list[float] | None = None
    intensity_exp_level: int | None = None
    intensity_head_level: int | None = None
    # Duplicates (stages/signature.py; dup_group: pipeline/finalize.py), null until computed.
    video_id: str | None = None
    signature: bytes | None = None
    dup_group: str | None = None
    run_id: str


@dataclass(**_ROW)
class FrameRow:
    """A ``frames`` row (a shard row): made by curation for a kept clip's frames (and by the
    feature stage for an image's views); per-frame features added later."""

    SCHEMA: ClassVar[pa.Schema] = schemas.FRAMES

    clip_id: str
    source_id: str
    frame_index: int
    source_frame: int | None
    timestamp_s: float
    view: int
    jpeg: bytes
    face_box: list[float] | None
    face_conf: float | None
    landmarks: np.ndarray | None
    # Features, null until computed.
    latent: np.ndarray | None = None
    position_map: np.ndarray | None = None
    pose: np.ndarray | None = None
    view_params: str | None = None


@dataclass(**_ROW)
class ErrorRow:
    """An ``errors`` row: made only by ``SourceWork.fail`` (and the driver for lost sources)."""

    SCHEMA: ClassVar[pa.Schema] = schemas.ERRORS

    source_id: str | None
    path: str | None
    dataset: str | None
    stage: str
    message: str
    run_id: str
    kind: str | None


Row = TypeVar("Row", SourceRow, ClipRow, FrameRow, ErrorRow)
RECORDS: dict[str, type] = {"sources": SourceRow, "clips": ClipRow, "frames": FrameRow, "errors": ErrorRow}


def field_names(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(kind))


def to_table(rows: list[Row], kind: type[Row], attrs: dict[str, dict] | None = None) -> pa.Table:
    """Records of ``kind`` as a table of exactly ``kind.SCHEMA`` (array columns in their stored
    dtype and the shape of their values, recorded with ``attrs`` in ``portrait.arrays``:
    ``schemas.table_from_columns``). A null in a non-nullable column is an error."""
    for r in rows:
        if type(r) is not kind:
            raise TypeError(f"a {type(r).__name__} among {kind.__name__} rows")
    columns = {name: [getattr(r, name) for r in rows] for name in field_names(kind)}
    table = schemas.table_from_columns(columns, kind.SCHEMA)
    for f, col in zip(table.schema, table.columns):
        if not f.nullable and col.null_count:
            raise ValueError(f"{kind.__name__}.{f.name} is null in {col.null_count} row(s): the column is not nullable")
    for name, extra in (attrs or {}).items():
        table = schemas.with_array_attrs(table, name, **extra)
    return table


def from_table(table: pa.Table, kind: type[Row]) -> list[Row]:
    """The records of a table :func:`to_table` made (array columns as NumPy arrays of their
    stored dtype, maps as dicts)."""
    names = field_names(kind)
    if tuple(table.column_names) != names:
        raise ValueError(f"a table of columns {table.column_names} is not a table of {kind.__name__}")
    dicts = tensors.rows(table)
    maps = [f.name for f in kind.SCHEMA if pa.types.is_map(f.type)]
    for d in dicts:
        for name in maps:
            if d[name] is not None:
                d[name] = dict(d[name])
    return [kind(**d) for d in dicts]


def array_attrs(table: pa.Table) -> dict[str, dict]:
    """The attributes :func:`to_table` recorded per array column (beyond shape and dtype)."""
    attrs = {name: {k: v for k, v in meta.items() if k not in ("shape", "dtype")}
             for name, meta in schemas.array_metadata(table.schema).items()}
    return {k: v for k, v in attrs.items() if v}
