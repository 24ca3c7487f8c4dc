"""Dataset adapters, by the name users give on the command line (``--dataset NAME=ROOT``)."""
from __future__ import annotations

from .base import Box, ClipSpec, DatasetAdapter, MetadataError, SourceSpec, media_type_of, stable_id
from .folder import FolderAdapter

ADAPTERS: dict[str, type] = {
    "folder": FolderAdapter,
}


def make_adapter(name: str, root: str, **options) -> DatasetAdapter:
    try:
        cls = ADAPTERS[name]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise ValueError(f"unknown dataset adapter {name!r} (known: {known})") from None
    return cls(root, **options)


__all__ = [
    "ADAPTERS", "Box", "ClipSpec", "DatasetAdapter", "FolderAdapter", "MetadataError",
    "SourceSpec", "make_adapter", "media_type_of", "stable_id",
]
