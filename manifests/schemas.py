"""Data contracts: every Arrow schema and catalog table, versioned, in one place.

Users write SQL against these names, so renaming a column is a breaking change: bump
SCHEMA_VERSION and say why in the changelog below.

Tables in ``OUT/catalog.duckdb``
--------------------------------
- ``sources``  one row per input file: probe results, dataset metadata, final status.
- ``clips``    one row per clip (an image is a one-frame clip): crop, every raw score
               (clip-level and per-frame lists), verdict and reasons, features per clip.
- ``frames``   a VIEW over the Parquet shards listed in ``shards``: one row per stored frame
               of a kept clip (the crop as JPEG, box, landmarks, per-frame features).
- ``runs``     one row per build invocation: config, library versions, model identities.
- ``shards``   one row per committed shard file: path, rows, bytes, sha256.
- ``errors``   one row per failure: source, stage, message. A source with an error row and
               status 'error' was not turned into clips; the build went on.
- ``intensity_bins``  dataset-wide bin edges of the landmark intensities (levels in ``clips``).

Array columns
-------------
Fixed-shape arrays are nested ``fixed_size_list`` columns of their dtype: a (4, 64, 64) float16
latent is ``fixed_size_list<fixed_size_list<fixed_size_list<halffloat, 64>, 64>, 4>``, so
DuckDB (``FLOAT[][][]``, ``latent[1][1][1]``), Hugging Face ``datasets``
(``with_format("torch")`` gives (N, 4, 64, 64) tensors), Ray Data and PyArrow (zero-copy
``flatten``) read them with no code of ours; a null row is a frame without that feature.
``manifests.tensors`` converts both ways (``rows``, ``to_numpy``, ``stack``).
Every shard's Parquet key-value metadata records the contract: ``portrait.schema_version`` and
``portrait.arrays`` (JSON: per array column its ``shape``, ``dtype`` and, for ``latent``, the
VAE's ``scaling_factor`` and ``shift_factor``). DuckDB has no float16: it widens to FLOAT; the
stored dtype is the one in the metadata (and in ``ARRAYS``, defined in ``manifests.tensors``).
Per-frame array shapes (defaults; the sizes follow ``crop.out_size`` and
``features.position_map.map_size`` of the build, recorded in the metadata):
- ``landmarks``     (478, 2) float32, crop pixels of the stored crop (x right, y down).
- ``latent``        (4, H/8, W/8) float16, VAE posterior mean times the recorded scaling factor.
- ``position_map``  (3, P, P) float16: x, y normalised to [0, 1] over the reference crop,
                    validity (1 inside the face, 0 elsewhere); P = ``position_map_size``.
- ``pose``          (133, 3) float32: COCO-WholeBody x, y in crop pixels and score (0 = absent);
                    image views carry their own pose like every other frame. In a video clip
                    the body and hand points of frames between the model's keyframes (every
                    ``features.pose.every``-th, recorded in ``runs.models_json``, and every
                    frame while a hand is in view) are interpolated; with the mediapipe
                    backend the face-68 points come from the frame's ``landmarks``.
- ``identity``      (512,) float32 in ``clips.identity_embedding``: L2-normalised ArcFace
                    embedding, or null.

Changelog
---------
1: first version.
2: curation scores that generalise (docs/filters.md): ``clips.blur`` and ``blur_frames`` are
   replaced by ``sharpness`` and ``sharpness_frames`` (contrast-normalised, at training scale);
   new ``face_human``, ``face_cut``, ``occluded_share``, ``detail_4x``; ``occlusion`` is the per-frame median
   (verdicts use the share of occluded frames); ``thumbnails`` of rejected clips;
   ``split_reason`` may be ``occlusion``. Catalog tables: ``errors.kind``, ``shards.source_ids``,
   ``runs.status`` values ``interrupted`` and ``failed``.
3: portable array columns: ``landmarks``, ``latent``, ``position_map``, ``pose`` and
   ``clips.identity_embedding`` are nested ``fixed_size_list`` columns (were ``{data, shape,
   dtype}`` structs); shards carry ``portrait.schema_version`` and ``portrait.arrays`` in their
   Parquet metadata; image view rows carry ``pose``.
   Later additions to version 3 (catalog tables only, added to an older catalog when a build
   or `portrait verify --repair` opens it; shards are unchanged): ``shards.footer_sha256``,
   ``shards.verified_at``, ``shards.problem`` (integrity records, manifests/shards.py);
   ``sources.video_id``, ``clips.video_id``, ``clips.signature``, ``clips.dup_group``
   (duplicates and leakage across datasets, docs/duplicates.md).
   ``clips.face_person``, ``clips.mirror_4x`` and ``clips.detail_train`` (curation scores:
   animals the segmenter takes for people, 4x upscales by leaky kernels, moderate blur at
   training scale; docs/filters.md), added the same way (null in an older catalog's rows, which
   `rethreshold` then judges as before).
"""
from __future__ import annotations

import json

import pyarrow as pa

from . import tensors

# The array columns' names, default shapes and dtypes: defined in tensors.py, which this module
# builds its types with (so tensors.py cannot import this one), and re-exported here.
from .tensors import ARRAY_DTYPES, ARRAYS  # noqa: F401 - ARRAY_DTYPES: re-exported

SCHEMA_VERSION = 3

META_VERSION = b"portrait.schema_version"
META_ARRAYS = b"portrait.arrays"


def array_field(name: str, shape: tuple[int, ...] | None = None, stored: bool = True) -> pa.Field:
    """An array column as shards store it; ``stored=False``: as DuckDB shows it (DuckDB has
    no float16, neither in Parquet, where it widens it to FLOAT, nor from Arrow)."""
    default, dtype = ARRAYS[name]
    if not stored and dtype == "float16":
        dtype = "float32"
    return pa.field(name, tensors.array_type(shape or default, dtype))


def array_metadata(schema: pa.Schema) -> dict[str, dict]:
    """``portrait.arrays`` of a schema: per array column its shape, dtype and attributes."""
    raw = (schema.metadata or {}).get(META_ARRAYS)
    return json.loads(raw) if raw else {}


def with_contract(schema: pa.Schema, attrs: dict[str, dict] | None = None) -> pa.Schema:
    """``schema`` with the contract in its metadata: the schema version and, per array column,
    shape and dtype (from the field types) plus ``attrs`` (e.g. the latent's scaling factor)
    merged over those already recorded."""
    arrays = array_metadata(schema)
    for name, extra in (attrs or {}).items():
        arrays.setdefault(name, {}).update(extra)
    for f in schema:
        if f.name in ARRAYS:
            # The stored dtype: the FRAMES template widens float16 for DuckDB.
            arrays.setdefault(f.name, {}).update(shape=list(tensors.shape_of(f.type)[0]), dtype=ARRAYS[f.name][1])
    meta = dict(schema.metadata or {})
    meta[META_VERSION] = str(SCHEMA_VERSION).encode()
    meta[META_ARRAYS] = json.dumps(arrays, sort_keys=True).encode()
    return schema.with_metadata(meta)


def with_array_attrs(table: pa.Table, name: str, **attrs) -> pa.Table:
    """Record attributes of an array column (e.g. ``scaling_factor``) in the table's metadata."""
    return table.replace_schema_metadata(with_contract(table.schema, {name: attrs}).metadata)


LABELS = pa.map_(pa.string(), pa.string())

# Verdict values and the status of a source.
KEPT, REJECTED, ERROR = "kept", "rejected", "error"
# A source's status inside a worker until curation judges it (never committed: curation or a
# failure always sets one of the three above).
PENDING = "pending"
# errors.kind: whether the input is at fault or the machine it ran on.
DATA, INFRA = "data", "infra"

SOURCES = pa.schema(
    [
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("rel_path", pa.string(), nullable=False),
        pa.field("media_type", pa.string(), nullable=False),  # 'image' | 'video'
        pa.field("identity", pa.string()),
        pa.field("split", pa.string()),  # 'train' | 'val' | 'test' | 'eval' | null
        pa.field("labels", LABELS),
        # The source video's id where the dataset names one (its YouTube id: VoxCeleb2, CelebV-HQ,
        # TalkingHead-1KH, HDTF, VFHQ); clips cut from one video share it across datasets.
        pa.field("video_id", pa.string()),
        # Probe (PyAV for video, Pillow for images).
        pa.field("container", pa.string()),
        pa.field("codec", pa.string()),
        pa.field("width", pa.int32()),  # as displayed (after rotation)
        pa.field("height", pa.int32()),
        pa.field("rotation", pa.int32()),  # clockwise degrees applied for display
        pa.field("fps", pa.float64()),
        pa.field("variable_fps", pa.bool_()),
        pa.field("n_frames", pa.int64()),
        pa.field("duration_s", pa.float64()),
        pa.field("has_audio", pa.bool_()),
        pa.field("size_bytes", pa.int64()),
        # Outcome.
        pa.field("status", pa.string(), nullable=False),  # kept | rejected | error
        pa.field("reasons", pa.list_(pa.string())),  # why no clip was kept
        pa.field("n_clips", pa.int32()),
        pa.field("n_kept", pa.int32()),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

# Clip-level scores: one column each, so thresholds can be re-tuned in SQL (named query
# `rethreshold`). Keep in step with manifests/verdicts.py and manifests/sql/rethreshold.sql.
# docs/filters.md says what each measures, its threshold and the distributions behind it.
CLIP_SCORES = [
    ("crop_source_px", pa.float64()),  # side of the square crop, in source pixels
    ("face_px", pa.float64()),  # median face box side, source pixels
    ("face_frac", pa.float64()),  # median face box side / crop side
    ("pad_frac", pa.float64()),  # share of the crop outside the frame (padded)
    ("face_cut", pa.float64()),  # median share of the face's landmark box outside the frame
    ("n_faces", pa.int32()),  # faces >= 1/3 the primary's size seen in >= 20% of frames
    ("face_conf", pa.float64()),  # median face detection confidence
    ("face_human", pa.float64()),  # median person probability inside the face oval (animals ~0)
    ("face_person", pa.float64()),  # median pose-model visibility of this face's keypoints (no person's face: 0)
    ("occlusion", pa.float64()),  # median per-frame occlusion (0 clear .. 1 mouth or an eye covered)
    ("occluded_share", pa.float64()),  # share of frames whose occlusion is over the build's frame threshold
    ("lighting_mean", pa.float64()),  # median face-region luma (0..255)
    ("lighting_std", pa.float64()),  # median face-region luma spread (contrast)
    ("lighting_clipped", pa.float64()),  # median share of face pixels under/over exposed
    ("bg_motion", pa.float64()),  # median background motion, % of frame diagonal per second
    ("sharpness", pa.float64()),  # median fine-band RMS / luma spread of the face at training scale
    ("detail_4x", pa.float64()),  # median spectral energy above a 4x-smaller source's limit / below it
    ("mirror_4x", pa.float64()),  # median coherence of the spectrum above a 4x source's limit with its mirror below
    ("detail_train", pa.float64()),  # median whitened fine-band / reference-band power of the face at training scale
]

# Per-frame score lists (sampled frames of the clip, same order as its frames).
FRAME_SCORES = [
    "face_px_frames",
    "occlusion_frames",
    "lighting_frames",
    "bg_motion_frames",
    "sharpness_frames",
]

CLIPS = with_contract(pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("identity", pa.string()),
        pa.field("split", pa.string()),
        pa.field("labels", LABELS),
        pa.field("media_type", pa.string(), nullable=False),
        pa.field("clip_index", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("n_frames", pa.int32(), nullable=False),
        pa.field("fps", pa.float64()),  # sampling rate of the stored frames
        # Why the clip ended: end|cut|face_lost|identity_jump|max_length|occlusion.
        pa.field("split_reason", pa.string()),
        # Crop in source pixels (display orientation), fixed over the clip.
        pa.field("crop_x0", pa.float64()),
        pa.field("crop_y0", pa.float64()),
        pa.field("crop_size", pa.float64()),
        pa.field("out_size", pa.int32()),
        *[pa.field(name, typ) for name, typ in CLIP_SCORES],
        *[pa.field(name, pa.list_(pa.float32())) for name in FRAME_SCORES],
        pa.field("verdict", pa.string(), nullable=False),  # kept | rejected
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
        # Rejected clips only: a few 128-px JPEG frames to audit what each filter threw away.
        pa.field("thumbnails", pa.list_(pa.binary())),
        # Features per clip (issue: feature precompute). Null until computed.
        pa.field("reference_frames", pa.list_(pa.int32())),  # frame_index of references
        array_field("identity_embedding"),
        pa.field("intensity_exp", pa.float64()),  # I_e, ratio of the first frame's face scale
        pa.field("intensity_head", pa.float64()),  # I_h
        pa.field("intensity_exp_windows", pa.list_(pa.float32())),  # per training window
        pa.field("intensity_head_windows", pa.list_(pa.float32())),
        # Levels 0..d-1 from the dataset-wide bin edges in `intensity_bins` (recomputed after
        # every build; -1 = not measurable, e.g. images).
        pa.field("intensity_exp_level", pa.int32()),
        pa.field("intensity_head_level", pa.int32()),
        # Duplicates and leakage (docs/duplicates.md). ``video_id``: the source's (sources.video_id);
        # ``signature``: perceptual signature of the stored frames of a kept clip
        # (manifests/duplicates.py has its layout); ``dup_group``: the smallest clip_id of the
        # clip's duplicate group across every dataset of the catalog (the clip's own id when it has
        # no duplicate), recomputed after every build like the intensity levels.
        pa.field("video_id", pa.string()),
        pa.field("signature", pa.binary()),
        pa.field("dup_group", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
    ]
))


FRAMES = with_contract(pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),  # 0-based within the clip
        pa.field("source_frame", pa.int64()),  # frame number in the source (decode order)
        pa.field("timestamp_s", pa.float64(), nullable=False),
        pa.field("view", pa.int32(), nullable=False),  # 0 = the clip frame; k>0 = k-th augmented view
        pa.field("jpeg", pa.large_binary(), nullable=False),  # crop, out_size x out_size RGB
        pa.field("face_box", pa.list_(pa.float32(), 4)),  # x0, y0, x1, y1 in crop pixels
        pa.field("face_conf", pa.float32()),
        array_field("landmarks"),
        # Features (null until computed). Float16 as FLOAT here: this template is also the
        # empty `frames` view of DuckDB; `table_from_rows` writes the stored dtypes (ARRAYS).
        array_field("latent", stored=False),
        array_field("position_map", stored=False),
        array_field("pose"),
        pa.field("view_params", pa.string()),  # JSON of the augmentation of a view
    ]
))

RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("schema_version", pa.int32()),
        pa.field("config_json", pa.string()),
        pa.field("config_hash", pa.string()),
        pa.field("versions_json", pa.string()),  # library versions
        pa.field("models_json", pa.string()),  # per stage: backend, weights path, sha256, random?
        pa.field("notes_json", pa.string()),  # e.g. why latents are empty
        pa.field("n_sources", pa.int64()),
        # running | finished | interrupted (stopped, or found `running` by the next build: it died)
        # | failed (a write to the catalog or the shards failed, e.g. a full disk)
        pa.field("status", pa.string()),
    ]
)

SHARDS = pa.schema(
    [
        pa.field("shard_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),  # relative to the output folder
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        # Sources whose frames it holds (all of each): `portrait verify --repair` un-commits them.
        pa.field("source_ids", pa.list_(pa.string())),
        # Integrity records (manifests/shards.py): the footer's sha256, checked wherever a footer
        # is read; when the whole file last matched ``sha256`` (hashed by the build that wrote it,
        # or by `portrait verify`); what `portrait verify` found wrong (null: nothing).
        pa.field("footer_sha256", pa.string()),
        pa.field("verified_at", pa.timestamp("us", tz="UTC")),
        pa.field("problem", pa.string()),
    ]
)

ERRORS = pa.schema(
    [
        pa.field("source_id", pa.string()),
        pa.field("path", pa.string()),
        pa.field("dataset", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        # 'data': the input (or its metadata) is at fault, kept until `--retry-errors`;
        # 'infra': the worker or node was lost or ran out of memory, retried by the next build.
        pa.field("kind", pa.string()),
    ]
)

# Dataset-wide intensity bin edges (one row per kind: 'exp' | 'head'); levels in `clips` are
# derived from these, so they are recomputed without touching the shards.
INTENSITY_BINS = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("levels", pa.int32(), nullable=False),
        pa.field("edges", pa.list_(pa.float64()), nullable=False),
        pa.field("n_clips", pa.int64(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "sources": SOURCES,
    "clips": CLIPS,
    "runs": RUNS,
    "shards": SHARDS,
    "errors": ERRORS,
    "intensity_bins": INTENSITY_BINS,
}


def empty_table(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def table_from_rows(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) to a table of exactly ``schema``; missing keys become nulls. For the
    catalog's own tables and tests: the build's sources, clips, frames and errors are typed
    records with a strict codec (manifests/records.py)."""
    return table_from_columns({f.name: [r.get(f.name) for r in rows] for f in schema}, schema)


def table_from_columns(columns: dict[str, list], schema: pa.Schema) -> pa.Table:
    """Column values (one list per field of ``schema``, all present) to a table of exactly
    ``schema``.

    Array columns get their stored dtype (ARRAYS) and the shape of the first non-null value
    (the build's crop and map sizes), so they may differ from the template ``schema``; the
    schema metadata records both (see ``with_contract``)."""
    fields, cols = [], []
    for f in schema:
        values = columns[f.name]
        if f.name in ARRAYS:
            first = next((v for v in values if v is not None), None)
            shape = tensors.shape_of(f.type)[0] if first is None else _shape(first)
            f = array_field(f.name, shape)
            cols.append(tensors.to_arrow(values, f.type))
        else:
            cols.append(pa.array(values, type=f.type))
        fields.append(f)
    out = pa.schema(fields, metadata=schema.metadata)
    if any(f.name in ARRAYS for f in out):
        out = with_contract(out)
    return pa.Table.from_arrays(cols, schema=out)


def _shape(value) -> tuple[int, ...]:
    if hasattr(value, "shape"):
        return tuple(value.shape)
    shape = []
    while isinstance(value, (list, tuple)):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)
