"""What travels between Ray operators: source specs as JSON, per-source results as Arrow IPC.

Rows of different sources have different shapes (a video has hundreds of frames, an image one),
so each source's result travels as one row holding its tables serialised with Arrow IPC; the
driver unpacks them. Frames travel as JPEG crops, never as decoded full-resolution pixels.
"""
from __future__ import annotations

import dataclasses
import json

import pyarrow as pa

from manifests import schemas
from manifests.adapters.base import Box, ClipSpec, SourceSpec

# errors.kind: whether the input is at fault or the machine it ran on.
DATA, INFRA = "data", "infra"
# Messages a stage gives when the process, not the input, failed: curate's MemoryError branch
# and ChainUDF's catch-all for an exception of that type.
_INFRA_MESSAGES = ("out of memory", "internal error: MemoryError")

PARTS = {"sources": schemas.SOURCES, "clips": schemas.CLIPS, "frames": schemas.FRAMES, "errors": schemas.ERRORS}


def spec_to_json(spec: SourceSpec) -> str:
    return json.dumps(dataclasses.asdict(spec))


def spec_from_json(text: str) -> SourceSpec:
    d = json.loads(text)
    clips = d.pop("clips")
    spec = SourceSpec(**d)
    if clips is not None:
        spec.clips = []
        for c in clips:
            box = c.pop("box")
            spec.clips.append(ClipSpec(**c, box=Box(**box) if box else None))
    return spec


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def to_tables(source: dict, clips: list[dict], frames: list[dict], errors: list[dict]) -> dict[str, pa.Table]:
    """A source's rows as the four tables of the contract."""
    return {
        "sources": schemas.table_from_rows([source], schemas.SOURCES),
        "clips": schemas.table_from_rows(clips, schemas.CLIPS),
        "frames": schemas.table_from_rows(frames, schemas.FRAMES),
        "errors": schemas.table_from_rows(errors, schemas.ERRORS),
    }


def pack_tables(source_id: str, tables: dict[str, pa.Table]) -> dict:
    return {"source_id": source_id, **{k: _to_ipc(t) for k, t in tables.items()}}


def unpack(row: dict) -> dict[str, pa.Table]:
    return {k: _from_ipc(row[k]) for k in PARTS}


def classify_errors(errors: pa.Table) -> pa.Table:
    """Fill ``errors.kind`` where the stage left it empty: 'infra' for running out of memory
    (retried by the next build), else 'data'."""
    if errors.num_rows == 0:
        return errors
    kinds = [k if k else (INFRA if (m or "").startswith(_INFRA_MESSAGES) else DATA)
             for k, m in zip(errors.column("kind").to_pylist(), errors.column("message").to_pylist())]
    return errors.set_column(errors.schema.get_field_index("kind"), errors.schema.field("kind"), pa.array(kinds, pa.string()))
