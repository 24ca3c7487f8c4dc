"""What travels, serialised once per boundary: units of source specs (one JSON text a unit)
in, a unit's works between operators (one Arrow table per kind for the whole unit), and small
per-unit result rows (:class:`UnitResult`) out to the driver.

Inside an actor a source's rows are typed records (manifests/records.py) that its stages
share unconverted. They become Arrow only at an operator's end, through the records' codec:
``pack_works`` makes one ``sources``, ``clips``, ``frames`` and ``errors`` table of all the
unit's sources (``source_id`` splits them again) and sends each as one Arrow IPC buffer;
``unpack_works`` turns them back into records in the next operator. Frames travel between
operators as JPEG crops, never as decoded full-resolution pixels, and never to the driver: the
last operator writes them (pipeline/writer.py) and sends back the unit's sources, clips, errors
and shard info only.
"""
from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa

from manifests import records
from manifests.adapters.base import Box, ClipSpec, SourceSpec
from manifests.records import ClipRow, ErrorRow, FrameRow, SourceRow
from manifests.schemas import DATA
from manifests.shards import ShardInfo
from stages.base import SourceWork

PARTS = ("sources", "clips", "frames", "errors")


def spec_to_dict(spec: SourceSpec) -> dict:
    return dataclasses.asdict(spec)


def spec_from_dict(d: dict) -> SourceSpec:
    d = dict(d)
    clips = d.pop("clips")
    spec = SourceSpec(**d)
    if clips is not None:
        spec.clips = []
        for c in clips:
            c = dict(c)
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
    """One JSON text per unit: the list of its sources' specs."""
    return [json.dumps([spec_to_dict(s) for s in unit]) for unit in units]


def unit_specs(unit_json: str) -> list[SourceSpec]:
    return [spec_from_dict(d) for d in json.loads(unit_json)]


def pack_works(works: list[SourceWork]) -> dict[str, bytes]:
    """A unit's works, for the next operator (actor to actor, never the driver): one Arrow
    table per kind for the whole unit, each as one IPC buffer (Arrow only, no pickle: the
    bytes decode to data, never to code). Decoded crops stay behind: the JPEG bytes are the
    crop. The frames' array attributes (the latent's scaling factor) ride in the frames
    table's ``portrait.arrays`` metadata."""
    attrs: dict[str, dict] = {}
    for w in works:
        for name, extra in w.frame_attrs.items():
            attrs.setdefault(name, {}).update(extra)
    tables = {
        "sources": records.to_table([w.source for w in works], SourceRow),
        "clips": records.to_table([c for w in works for c in w.clips], ClipRow),
        "frames": records.to_table([f for w in works for f in w.frames], FrameRow, attrs),
        "errors": records.to_table([e for w in works for e in w.errors], ErrorRow),
    }
    return {k: _to_ipc(t) for k, t in tables.items()}


def unpack_works(parts: dict[str, bytes]) -> list[SourceWork]:
    """The works :func:`pack_works` sent, in their order, each with its own rows."""
    tables = {k: _from_ipc(parts[k]) for k in PARTS}
    by_source: dict[str, dict[str, list]] = defaultdict(lambda: {"clips": [], "frames": [], "errors": []})
    for k in ("clips", "frames", "errors"):
        for row in records.from_table(tables[k], records.RECORDS[k]):
            by_source[row.source_id][k].append(row)
    attrs = records.array_attrs(tables["frames"])
    works = []
    for source in records.from_table(tables["sources"], SourceRow):
        rows = by_source.get(source.source_id, {"clips": [], "frames": [], "errors": []})
        works.append(SourceWork(source, rows["clips"], rows["frames"], rows["errors"],
                                {k: dict(v) for k, v in attrs.items()} if rows["frames"] else {}))
    return works


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
        """Each table made once, from the unit's records."""
        return cls(records.to_table([w.source for w in works], SourceRow),
                   records.to_table([c for w in works for c in w.clips], ClipRow),
                   records.to_table([e for w in works for e in w.errors], ErrorRow),
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
