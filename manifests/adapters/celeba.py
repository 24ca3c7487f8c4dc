"""CelebA as distributed (``Img/``, ``Anno/``, ``Eval/``; the flat Kaggle layout works too).

Reads ``identity_CelebA.txt`` (identity), ``list_eval_partition.txt`` (0/1/2 -> train/val/test),
``list_attr_celeba.txt`` (attributes equal to 1, as the ``attributes`` label) and, per image
kind, the box and landmarks: in-the-wild images (``img_celeba/``) get ``list_bbox_celeba.txt``
(``x y w h`` pixels of the image) and ``list_landmarks_celeba.txt``; aligned images
(``img_align_celeba/`` or ``img_align_celeba_png/``) get ``list_landmarks_align_celeba.txt``
(at 178x218, the aligned size). With ``CelebA-HQ-to-CelebA-mapping.txt`` and ``CelebA-HQ-img/``
present (CelebAMask-HQ layout) the HQ images are added with their CelebA identity, split and
attributes (label ``celeba_file``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .base import Box, ClipSpec, MetadataError, SourceSpec
from .probe import image_info
from .textfiles import (EntryError, NameTable, existing_inside, first_existing, read_lines, read_name_table,
                        to_float, to_int, walk_files)

_PARTITION = {"0": "train", "1": "val", "2": "test"}
_ALIGNED_SIZE = (178.0, 218.0)
_META_DIRS = ("", "Anno", "Eval", "anno", "eval")
_IMAGE_DIRS = {
    "aligned": ("img_align_celeba", "Img/img_align_celeba", "img_align_celeba_png", "Img/img_align_celeba_png"),
    "wild": ("img_celeba", "Img/img_celeba"),
}


def _floats(row, what: str) -> list[float]:
    line, values = row
    try:
        return [to_float(v, what) for v in values]
    except EntryError as e:
        raise EntryError(str(e), line) from None


class CelebAAdapter:
    name = "celeba"

    def __init__(self, root: str | Path, images: str = "auto"):
        if images not in ("auto", "aligned", "wild"):
            raise ValueError(f"celeba: images must be auto, aligned or wild, got {images!r}")
        self.root = Path(root)
        self.images = images

    def _meta(self, name: str) -> Path | None:
        return first_existing(self.root, [f"{d}/{name}".lstrip("/") for d in _META_DIRS])

    def _table(self, name: str, n_values: int | None, errors: list) -> NameTable:
        path = self._meta(name)
        if path is None:
            return NameTable({}, [], [])
        table = read_name_table(path, self.name, n_values)
        errors.extend(table.errors)
        return table

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        kind, folder = self._image_folder()
        if folder is None:
            yield MetadataError(self.name, str(self.root), None, "no CelebA image folder (img_align_celeba or img_celeba)")
            return
        errors: list[MetadataError] = []
        identity = self._table("identity_CelebA.txt", 1, errors)
        partition = self._table("list_eval_partition.txt", 1, errors)
        attrs = self._table("list_attr_celeba.txt", None, errors)
        bbox = self._table("list_bbox_celeba.txt", 4, errors) if kind == "wild" else NameTable({}, [], [])
        landmarks = self._table("list_landmarks_celeba.txt" if kind == "wild" else "list_landmarks_align_celeba.txt", 10, errors)
        yield from errors

        names = list(identity.rows) or list(partition.rows)
        if not names:  # no list: whatever is in the folder
            names = [p.name for p in walk_files(folder, {".jpg", ".png"})]
        folder_rel = folder.relative_to(self.root).as_posix()
        for name in names:
            try:
                stored = name if kind == "wild" or "png" not in folder.name else name.rsplit(".", 1)[0] + ".png"
                path, rel = existing_inside(self.root, f"{folder_rel}/{stored}")
                yield self._source(name, path, rel, kind, identity, partition, attrs, bbox, landmarks)
            except EntryError as e:
                where = identity.rows.get(name) or partition.rows.get(name)
                yield e.to_error(self.name, where[0].file if where else str(folder), where[0].number if where else None)
        yield from self._celeba_hq(identity, partition, attrs)

    def _image_folder(self) -> tuple[str, Path | None]:
        kinds = ["aligned", "wild"] if self.images == "auto" else [self.images]
        for kind in kinds:
            folder = first_existing(self.root, _IMAGE_DIRS[kind])
            if folder is not None and folder.is_dir():
                return kind, folder
        return kinds[0], None

    def _labels(self, name: str, attrs: NameTable) -> dict[str, str]:
        row = attrs.rows.get(name)
        if row is None:
            return {}
        on = [a for a, v in zip(attrs.header, row[1]) if v == "1"]
        return {"attributes": ",".join(on)}

    def _source(self, name, path, rel, kind, identity, partition, attrs, bbox, landmarks) -> SourceSpec:
        ident = identity.rows.get(name)
        part = partition.rows.get(name)
        split = "train"
        if part is not None:
            split = _PARTITION.get(part[1][0])
            if split is None:
                raise EntryError(f"partition must be 0, 1 or 2, got {part[1][0]!r}", part[0])
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

    def _celeba_hq(self, identity, partition, attrs) -> Iterator[SourceSpec | MetadataError]:
        mapping = first_existing(self.root, ["CelebA-HQ-to-CelebA-mapping.txt", "CelebAMask-HQ/CelebA-HQ-to-CelebA-mapping.txt"])
        if mapping is None:
            return
        folder = mapping.parent / "CelebA-HQ-img"
        for line in read_lines(mapping):
            fields = line.fields
            if fields[0] == "idx":  # header
                continue
            try:
                if len(fields) != 3:
                    raise EntryError(f"expected 'idx orig_idx orig_file', got {len(fields)} fields")
                idx = to_int(fields[0], "idx")
                orig = fields[2]
                path, rel = existing_inside(self.root, f"{folder.relative_to(self.root).as_posix()}/{idx}.jpg")
            except EntryError as e:
                yield line.error(self.name, str(e))
                continue
            part = partition.rows.get(orig)
            ident = identity.rows.get(orig)
            yield SourceSpec(self.name, str(path), rel, "image", identity=ident[1][0] if ident else None,
                             split=_PARTITION.get(part[1][0], "train") if part else "train",
                             labels={**self._labels(orig, attrs), "image_kind": "hq", "celeba_file": orig})
