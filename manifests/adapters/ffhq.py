"""FFHQ: ``images1024x1024/<bucket>/<idx:05d>.png`` (buckets 00000, 01000, ...), optionally with
``ffhq-dataset-v2.json`` (keyed by the index as a string).

With the JSON: split from ``category`` (training -> train, validation -> val), 68 landmarks
from ``image.face_landmarks`` at ``image.pixel_size``; with ``images="in-the-wild-images"``
the in-the-wild files with ``in_the_wild.face_rect`` as the box. Without it (Kaggle and Hugging
Face copies): every image under the images folder (or the root itself when that folder is
absent) whose name is an FFHQ index; the index fixes the split as FFHQ's own: 00000-59999
train, 60000-69999 validation. Other names are counted as files without metadata. FFHQ has no
identities (identity is null).
"""
from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from pathlib import Path

from .base import IMAGE_EXTENSIONS, UNPARSEABLE, Box, ClipSpec, MetadataError, SourceSpec
from .files import FileIndex
from .root import DatasetRoot
from .textfiles import EntryError, existing_inside, load_json

_SPLITS = {"training": "train", "validation": "val"}
_PARTS = {"images1024x1024": "image", "in-the-wild-images": "in_the_wild", "thumbnails128x128": "thumbnail"}
_INDEX = re.compile(r"^\d{5}$")
N_TRAIN, N_IMAGES = 60000, 70000  # FFHQ's fixed split: the first 60,000 indices train, the rest validation


def split_of_index(index: int) -> str:
    return "train" if index < N_TRAIN else "val"


class FFHQAdapter:
    name = "ffhq"

    def __init__(self, root: str | Path, images: str = "images1024x1024", metadata: str = "ffhq-dataset-v2.json"):
        if images not in _PARTS:
            raise ValueError(f"ffhq: images must be one of {sorted(_PARTS)}, got {images!r}")
        self.root = DatasetRoot(root)
        self.images = images
        self.metadata_rel = metadata
        self.metadata = self.root.name(metadata)

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        folder = self.images if self.root.is_dir(self.images) else ""
        self.files = FileIndex.scan(self.root, self.name, [folder], IMAGE_EXTENSIONS)
        yield from self.files.problems
        if self.root.is_file(self.metadata_rel):
            yield from self._from_json()
            return
        for listed in self.files.listed(folder):
            stem = posixpath.splitext(posixpath.basename(listed))[0]
            if not _INDEX.match(stem) or int(stem) >= N_IMAGES:
                continue  # not an FFHQ image: counted as a file without metadata
            path, rel = self.files.real(listed)
            yield SourceSpec(self.name, path, rel, "image", split=split_of_index(int(stem)),
                             labels={"ffhq_index": stem})

    def _from_json(self) -> Iterator[SourceSpec | MetadataError]:
        data, error, key_lines = load_json(self.metadata, self.name)
        if error is not None:
            yield error
            return
        if not isinstance(data, dict):
            yield MetadataError(self.name, self.metadata, 1, "expected an object keyed by image index")
            return
        keys = sorted(data, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
        for key in keys:
            try:
                yield self._entry(key, data[key])
            except (EntryError, KeyError, TypeError, ValueError) as e:
                msg = f"missing field {e}" if isinstance(e, KeyError) else str(e)
                yield MetadataError(self.name, self.metadata, key_lines.get(key), f"entry {key!r}: {msg}",
                                    kind=getattr(e, "kind", UNPARSEABLE))

    def _entry(self, key: str, entry: dict) -> SourceSpec:
        category = entry["category"]
        if category not in _SPLITS:
            raise EntryError(f"unknown category {category!r}")
        part = entry[_PARTS[self.images]]
        path, rel = existing_inside(self.files, part["file_path"])
        w, h = (float(v) for v in part["pixel_size"])
        landmarks = part.get("face_landmarks")
        box = None
        if landmarks:
            landmarks = [(float(x), float(y)) for x, y in landmarks]
        if part.get("face_rect"):
            x0, y0, x1, y1 = (float(v) for v in part["face_rect"])
            box = Box(x0, y0, x1, y1, w, h)
        elif landmarks:
            # No box in FFHQ's aligned part: the landmarks' extent carries their reference size.
            xs, ys = [p[0] for p in landmarks], [p[1] for p in landmarks]
            box = Box(min(xs), min(ys), max(xs), max(ys), w, h)
        clips = [ClipSpec(0.0, None, box=box, landmarks=landmarks or None, key=key)] if box else None
        return SourceSpec(self.name, str(path), rel, "image", identity=None, split=_SPLITS[category],
                          labels={"ffhq_index": key}, clips=clips)
