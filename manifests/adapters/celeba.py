"""CelebA as distributed (``Img/``, ``Anno/``, ``Eval/`` text files) or as the Kaggle copy
(``img_align_celeba/img_align_celeba/*.jpg`` nested one level deeper, CSV annotations
``list_eval_partition.csv``, ``list_attr_celeba.csv``, ``list_bbox_celeba.csv``,
``list_landmarks_align_celeba.csv``, no identity file).

The image folder is found wherever it is nested under the root (the deepest folder named
``img_align_celeba``, ``img_align_celeba_png`` or ``img_celeba`` that holds images). Each table
is read from its ``.txt`` (root, ``Anno/``, ``Eval/``) or else its Kaggle ``.csv``:
``identity_CelebA`` (identity), ``list_eval_partition`` (0/1/2 -> train/val/test),
``list_attr_celeba`` (attributes equal to 1, as the ``attributes`` label) and, per image kind,
the box and landmarks: in-the-wild images get ``list_bbox_celeba`` (``x y w h`` pixels of the
image) and ``list_landmarks_celeba``; aligned images get ``list_landmarks_align_celeba`` (at
178x218, the aligned size). With ``CelebA-HQ-to-CelebA-mapping.txt`` and ``CelebA-HQ-img/``
present (CelebAMask-HQ layout) the HQ images are added with their CelebA identity, split and
attributes (label ``celeba_file``).
"""
from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from .base import IMAGE_EXTENSIONS, Box, ClipSpec, MetadataError, SourceSpec
from .files import FileIndex
from .probe import image_info, with_headers
from .root import DatasetRoot
from .textfiles import (
    EntryError,
    NameTable,
    existing_inside,
    lines_or_error,
    read_name_csv,
    read_name_table,
    to_float,
    to_int,
)

_PARTITION = {"0": "train", "1": "val", "2": "test"}
_ALIGNED_SIZE = (178.0, 218.0)
_META_DIRS = ("", "Anno", "Eval", "anno", "eval")
_IMAGE_DIRS = {"aligned": ("img_align_celeba", "img_align_celeba_png"), "wild": ("img_celeba",)}
_HQ_DIR = "CelebA-HQ-img"


def _floats(row, what: str) -> list[float]:
    line, values = row
    try:
        return [to_float(v, what) for v in values]
    except EntryError as e:
        raise EntryError(str(e), line) from None


def image_folders(files: FileIndex) -> dict[str, str]:
    """Folder (relative to the root) of each image kind, wherever it is nested: the folder of
    that name holding the most images (Kaggle's copy nests ``img_align_celeba`` twice)."""
    counts: Counter = Counter(posixpath.dirname(k) for k in files.files)
    out = {}
    for kind, names in _IMAGE_DIRS.items():
        candidates = [(n, d) for d, n in counts.items() if posixpath.basename(d) in names]
        if candidates:
            out[kind] = max(candidates, key=lambda c: (c[0], -len(c[1])))[1]
    return out


class CelebAAdapter:
    name = "celeba"

    def __init__(self, root: str | Path, images: str = "auto"):
        if images not in ("auto", "aligned", "wild"):
            raise ValueError(f"celeba: images must be auto, aligned or wild, got {images!r}")
        self.root = DatasetRoot(root)
        self.images = images

    def _table(self, stem: str, n_values: int | None, errors: list) -> NameTable:
        rel = self.root.first_existing([f"{d}/{stem}.txt".lstrip("/") for d in _META_DIRS])
        read = read_name_table
        if rel is None:
            rel = self.root.first_existing([f"{d}/{stem}.csv".lstrip("/") for d in _META_DIRS])
            read = read_name_csv
            if rel is None:
                return NameTable({}, [], [])
        path = self.root.name(rel)
        try:
            table = read(path, self.name, n_values)
        except EntryError as e:  # the file cannot be read: one error row, the table is empty
            errors.append(e.to_error(self.name, path, None))
            return NameTable({}, [], [])
        errors.extend(table.errors)
        return table

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        self.files = FileIndex.scan(self.root, self.name, [""], IMAGE_EXTENSIONS)
        yield from self.files.problems
        folders = image_folders(self.files)
        kinds = ["aligned", "wild"] if self.images == "auto" else [self.images]
        kind = next((k for k in kinds if k in folders), None)
        if kind is None:
            yield MetadataError(self.name, str(self.root), None,
                                f"no CelebA image folder ({' or '.join(n for k in kinds for n in _IMAGE_DIRS[k])})")
            return
        folder = folders[kind]
        hq = self.root.first_existing(["CelebA-HQ-to-CelebA-mapping.txt",
                                       "CelebAMask-HQ/CelebA-HQ-to-CelebA-mapping.txt"])
        hq_folder = posixpath.join(posixpath.dirname(hq), _HQ_DIR) if hq else None
        # The other kind's images are left out by choice: not counted as lacking metadata.
        self.files.restrict([folder] + ([hq_folder] if hq_folder else []))

        errors: list[MetadataError] = []
        identity = self._table("identity_CelebA", 1, errors)
        partition = self._table("list_eval_partition", 1, errors)
        attrs = self._table("list_attr_celeba", None, errors)
        bbox = self._table("list_bbox_celeba", 4, errors) if kind == "wild" else NameTable({}, [], [])
        landmarks = self._table(
            "list_landmarks_celeba" if kind == "wild" else "list_landmarks_align_celeba", 10, errors
        )
        yield from errors

        names = list(identity.rows) or list(partition.rows)
        if not names:  # no list: whatever is in the folder
            names = [posixpath.basename(k) for k in self.files.listed(folder)]
        png = posixpath.basename(folder).endswith("_png")

        def stored(name: str) -> str:
            return f"{folder}/{name.rsplit('.', 1)[0] + '.png' if png else name}"

        def header_path(name: str) -> str | None:
            return self.files.path_of(stored(name)) if kind == "wild" else None

        for name in with_headers(names, header_path, "image"):
            try:
                path, rel = existing_inside(self.files, stored(name))
                yield self._source(name, path, rel, kind, identity, partition, attrs, bbox, landmarks)
            except EntryError as e:
                where = identity.rows.get(name) or partition.rows.get(name)
                yield e.to_error(self.name, where[0].file if where else folder, where[0].number if where else None)
        if hq:
            yield from self._celeba_hq(self.root.name(hq), hq_folder, identity, partition, attrs)

    def _labels(self, name: str, attrs: NameTable) -> dict[str, str]:
        row = attrs.rows.get(name)
        if row is None:
            return {}
        on = [a for a, v in zip(attrs.header, row[1]) if v == "1"]
        return {"attributes": ",".join(on)}

    def _split(self, name: str, partition: NameTable) -> str:
        part = partition.rows.get(name)
        if part is None:
            return "train"
        split = _PARTITION.get(part[1][0])
        if split is None:
            raise EntryError(f"partition must be 0, 1 or 2, got {part[1][0]!r}", part[0])
        return split

    def _source(self, name, path, rel, kind, identity, partition, attrs, bbox, landmarks) -> SourceSpec:
        ident = identity.rows.get(name)
        split = self._split(name, partition)
        if kind == "wild":
            info = image_info(str(path))
            ref = (float(info.width), float(info.height))
        else:
            ref = _ALIGNED_SIZE
        points = None
        if name in landmarks.rows:
            v = _floats(landmarks.rows[name], "landmark")
            points = list(zip(v[0::2], v[1::2]))
        box = None
        if name in bbox.rows:
            x, y, w, h = _floats(bbox.rows[name], "box value")
            box = Box(x, y, x + w, y + h, *ref)
        elif points:
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            box = Box(min(xs), min(ys), max(xs), max(ys), *ref)
        clips = [ClipSpec(0.0, None, box=box, landmarks=points, key=name)] if box else None
        labels = {**self._labels(name, attrs), "image_kind": kind}
        return SourceSpec(self.name, str(path), rel, "image", identity=ident[1][0] if ident else None,
                          split=split, labels=labels, clips=clips)

    def _celeba_hq(self, mapping: str, folder: str, identity, partition, attrs) -> Iterator[SourceSpec | MetadataError]:
        errors: list[MetadataError] = []
        lines = lines_or_error(mapping, self.name, errors)
        yield from errors
        for line in lines:
            fields = line.fields
            if fields[0] == "idx":  # header
                continue
            try:
                if len(fields) != 3:
                    raise EntryError(f"expected 'idx orig_idx orig_file', got {len(fields)} fields")
                idx = to_int(fields[0], "idx")
                orig = fields[2]
                path, rel = existing_inside(self.files, f"{folder}/{idx}.jpg")
                split = self._split(orig, partition)
            except EntryError as e:
                yield e.to_error(self.name, line.file, line.number)
                continue
            ident = identity.rows.get(orig)
            yield SourceSpec(self.name, str(path), rel, "image", identity=ident[1][0] if ident else None,
                             split=split, labels={**self._labels(orig, attrs), "image_kind": "hq", "celeba_file": orig})
