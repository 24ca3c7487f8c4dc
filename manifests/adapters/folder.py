"""Any plain folder of images and videos, searched recursively."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from .base import MetadataError, SourceSpec, media_type_of


class FolderAdapter:
    name = "folder"

    def __init__(self, root: str | Path, dataset: str | None = None):
        self.root = Path(root)
        # Dataset name = the folder's name unless given.
        self.dataset = dataset or self.root.resolve().name

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        if not self.root.is_dir():
            yield MetadataError(self.dataset, str(self.root), None, "not a folder")
            return
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                kind = media_type_of(path)
                if kind is None:
                    continue
                rel = path.relative_to(self.root).as_posix()
                yield SourceSpec(dataset=self.dataset, path=str(path.resolve()), rel_path=rel, media_type=kind)
