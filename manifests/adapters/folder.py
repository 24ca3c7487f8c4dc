"""Any plain folder of images and videos, searched recursively (links out of it refused, loops
and unreadable folders reported: the rules of ``files.FileIndex``)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from .base import MetadataError, SourceSpec, media_type_of
from .files import FileIndex
from .root import DatasetRoot


class FolderAdapter:
    name = "folder"

    def __init__(self, root: str | Path, dataset: str | None = None):
        self.root = DatasetRoot(root)  # s3://bucket/prefix: listed on the object store
        # Dataset name = the folder's name unless given.
        self.dataset = dataset or (self.root.given.rsplit("/", 1)[-1] if self.root.remote
                                   else os.path.basename(os.path.realpath(self.root.given)))

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        if not self.root.is_dir():  # on an object store: a prefix with objects under it
            yield MetadataError(self.dataset, str(self.root), None, "not a folder")
            return
        self.files = FileIndex.scan(self.root, self.dataset)
        yield from self.files.problems
        seen: set[str] = set()
        for listed in self.files.listed():
            path, rel = self.files.real(listed)
            if rel in seen:  # a link inside the folder to a file already listed
                continue
            seen.add(rel)
            yield SourceSpec(dataset=self.dataset, path=path, rel_path=rel, media_type=media_type_of(path))
