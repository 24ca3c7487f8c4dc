"""The typed records (manifests/records.py) agree with the schemas (manifests/schemas.py), and
their codec is strict: a wrong field is an error where the row is made, never a null column."""
from __future__ import annotations

import dataclasses
import types
import typing

import numpy as np
import pyarrow as pa
import pytest

from manifests import records, schemas, tensors
from manifests.records import ClipRow, ErrorRow, FrameRow, SourceRow

SCHEMAS = {"sources": schemas.SOURCES, "clips": schemas.CLIPS, "frames": schemas.FRAMES, "errors": schemas.ERRORS}


def _python_type(f: pa.Field) -> type:
    t = f.type
    if f.name in tensors.ARRAYS:
        return np.ndarray
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return str
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return bytes
    if pa.types.is_boolean(t):
        return bool
    if pa.types.is_integer(t):
        return int
    if pa.types.is_floating(t):
        return float
    if pa.types.is_map(t):
        return dict
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return list
    raise AssertionError(f"no Python type for {f}")


def _split_optional(hint) -> tuple[object, bool]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        assert len(args) == 1, hint
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_record_mirrors_its_schema(name):
    """Same names in the same order, Optional exactly where the column is nullable, the Python
    type of the column's values; a field with a default must be nullable (it may stay null)."""
    kind, schema = records.RECORDS[name], SCHEMAS[name]
    assert kind.SCHEMA is schema
    fields = dataclasses.fields(kind)
    assert [f.name for f in fields] == schema.names
    hints = typing.get_type_hints(kind)
    for f, col in zip(fields, schema):
        base, optional = _split_optional(hints[f.name])
        assert optional == col.nullable, f"{kind.__name__}.{f.name}: Optional {optional}, nullable {col.nullable}"
        assert (typing.get_origin(base) or base) is _python_type(col), f"{kind.__name__}.{f.name}: {base} vs {col.type}"
        if f.default is not dataclasses.MISSING:
            assert col.nullable and f.default is None, f"{kind.__name__}.{f.name} defaults to a value"


def _error(**over) -> ErrorRow:
    return ErrorRow(**{"source_id": "s", "path": "p", "dataset": "d", "stage": "probe", "message": "m",
                       "run_id": "r", "kind": None, **over})


def test_a_misspelt_or_missing_field_is_an_error_where_the_row_is_made():
    with pytest.raises(TypeError, match="unexpected keyword argument 'mesage'"):
        ErrorRow(source_id="s", path="p", dataset="d", stage="probe", mesage="m", run_id="r", kind=None)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'message'"):
        ErrorRow(source_id="s", path="p", dataset="d", stage="probe", run_id="r", kind=None)
    with pytest.raises(TypeError, match="positional"):
        ErrorRow("s", "p", "d", "probe", "m", "r", None)
    row = _error()
    with pytest.raises(AttributeError):
        row.mesage = "x"  # slotted: no new attributes either


def test_a_null_in_a_non_nullable_column_is_refused_by_the_codec():
    with pytest.raises(ValueError, match=r"ErrorRow.message is null in 1 row"):
        records.to_table([_error(message=None)], ErrorRow)
    with pytest.raises(TypeError, match="a SourceRow among ErrorRow rows"):
        records.to_table([_error(), SourceRow(source_id="s", dataset="d", path="p", rel_path="p", media_type="image",
                                              identity=None, split=None, labels=None, status="kept", reasons=None,
                                              n_clips=None, n_kept=None, run_id="r")], ErrorRow)


def test_the_codec_keeps_array_dtypes_shapes_and_attributes_both_ways():
    rng = np.random.default_rng(0)
    frames = [FrameRow(clip_id="c", source_id="s", frame_index=i, source_frame=i, timestamp_s=i / 12.5, view=0,
                       jpeg=b"\xff\xd8", face_box=[0.0, 1.0, 2.0, 3.0], face_conf=0.9,
                       landmarks=rng.random((478, 2), dtype=np.float32),
                       latent=rng.random((4, 32, 32)).astype(np.float16) if i else None)
              for i in range(3)]
    table = records.to_table(frames, FrameRow, {"latent": {"scaling_factor": 0.18215}})
    # Exactly what the dict path of manifests/schemas.py makes (shards are unchanged).
    dicts = [{f.name: getattr(r, f.name) for f in dataclasses.fields(r)} for r in frames]
    legacy = schemas.with_array_attrs(schemas.table_from_rows(dicts, schemas.FRAMES), "latent", scaling_factor=0.18215)
    assert table.equals(legacy) and table.schema.metadata == legacy.schema.metadata
    assert tensors.shape_of(table.schema.field("latent").type) == ((4, 32, 32), np.dtype("float16"))
    back = records.from_table(table, FrameRow)
    assert records.array_attrs(table) == {"latent": {"scaling_factor": 0.18215}}
    assert back[0].latent is None and back[1].latent.dtype == np.float16 and back[1].latent.shape == (4, 32, 32)
    assert all(np.array_equal(a.landmarks, b.landmarks) and a.landmarks.dtype == b.landmarks.dtype
               for a, b in zip(frames, back))
    assert records.to_table(back, FrameRow, records.array_attrs(table)).equals(table)
    with pytest.raises(ValueError, match="not a table of ClipRow"):
        records.from_table(table, ClipRow)


def test_maps_come_back_as_dicts():
    src = SourceRow(source_id="s", dataset="d", path="p", rel_path="p", media_type="image", identity=None,
                    split=None, labels={"a": "1", "b": "2"}, status="kept", reasons=[], n_clips=0, n_kept=0,
                    run_id="r")
    (back,) = records.from_table(records.to_table([src], SourceRow), SourceRow)
    assert back == src and back.labels == {"a": "1", "b": "2"}
