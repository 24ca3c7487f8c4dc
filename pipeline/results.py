"""What travels: units of source specs (JSON) in, per-source tables (Arrow IPC) between
operators, and small per-unit result rows (:class:`UnitResult`) out to the driver.

Rows of different sources have different shapes (a video has hundreds of frames, an image one),
so each source's tables travel serialised with Arrow IPC, a unit's sources as one Arrow table
(a row a source) in one row.
Frames travel between operators as JPEG crops, never as decoded full-resolution pixels, and
never to the driver: the last operator writes them (pipeline/writer.py) and sends back the
unit's sources, clips, errors and shard info only.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pyarrow as pa

from manifests import schemas
from manifests.adapters.base import Box, ClipSpec, SourceSpec
from manifests.schemas import DATA
from manifests.shards import ShardInfo
from stages.base import SourceWork

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
    # One record batch: each batch of a chunked table costs a header and padded buffers for
    # every column (kilobytes for the clips table), which would dominate a unit of many images.
    table = table.combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def units_to_json(units: list[list[SourceSpec]]) -> list[str]:
    """One JSON text per unit: the list of its sources' spec JSONs."""
    return [json.dumps([spec_to_json(s) for s in unit]) for unit in units]


def unit_specs(unit_json: str) -> list[str]:
    return json.loads(unit_json)


def pack_works(works: list[SourceWork]) -> bytes:
    """A unit's works, for the next operator (actor to actor, never the driver): one Arrow
    table, a row a source, each of its tables as IPC bytes (Arrow only, no pickle: the bytes
    decode to data, never to code). Decoded crops stay behind: the JPEG bytes are the crop."""
    tables = [w.to_tables() for w in works]
    return _to_ipc(pa.table({k: pa.array([_to_ipc(t[k]) for t in tables], pa.binary()) for k in PARTS}))


def unpack_works(payload: bytes) -> list[SourceWork]:
    return [SourceWork.from_tables({k: _from_ipc(row[k]) for k in PARTS}) for row in _from_ipc(payload).to_pylist()]


@dataclass
class UnitResult:
    """What the driver receives for one unit: no frames, only what it commits."""

    sources: pa.Table
    clips: pa.Table
    errors: pa.Table
    shards: list[ShardInfo] = field(default_factory=list)
    storage_error: str = ""  # a shard write failed: the build stops with this line

    @classmethod
    def of(cls, works: list[SourceWork], shards: list[ShardInfo], storage_error: str = ""):
        return cls(schemas.table_from_rows([w.source for w in works], schemas.SOURCES),
                   schemas.table_from_rows([c for w in works for c in w.clips], schemas.CLIPS),
                   schemas.table_from_rows([e for w in works for e in w.errors], schemas.ERRORS),
                   shards, storage_error)

    def to_row(self) -> dict:
        return {"sources": _to_ipc(self.sources), "clips": _to_ipc(self.clips), "errors": _to_ipc(self.errors),
                "shards": json.dumps([dataclasses.asdict(s) for s in self.shards]),
                "storage_error": self.storage_error}

    @classmethod
    def from_row(cls, row: dict) -> UnitResult:
        shards = [ShardInfo(**dict(d, source_ids=tuple(d["source_ids"]))) for d in json.loads(row["shards"])]
        return cls(_from_ipc(row["sources"]), _from_ipc(row["clips"]), _from_ipc(row["errors"]), shards,
                   str(row["storage_error"] or ""))


def row_bytes(row: dict) -> int:
    """Bytes of a result row as the driver receives it (for bench/bench_driver.py)."""
    return sum(len(v) for v in row.values() if isinstance(v, (bytes, str)))


def classify_errors(errors: pa.Table) -> pa.Table:
    """Fill ``errors.kind`` where the stage left it empty: the input is at fault ('data');
    a stage that knows the machine failed says 'infra' itself (SourceWork.fail)."""
    if errors.num_rows == 0:
        return errors
    kinds = [k or DATA for k in errors.column("kind").to_pylist()]
    return errors.set_column(
        errors.schema.get_field_index("kind"), errors.schema.field("kind"), pa.array(kinds, pa.string())
    )
