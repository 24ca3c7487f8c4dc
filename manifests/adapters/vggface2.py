"""VGGFace2: ``{train,test}/<class_id>/<NNNN_NN>.jpg`` with ``identity_meta.csv`` (root or
``meta/``) and ``loose_bb_{train,test}.csv`` / ``loose_landmark_{train,test}.csv`` (root or
``bb_landmark/``).

Identity = the class id (folder); split = the folder (train/test); labels ``name`` and
``gender`` from identity_meta.csv (``Class_ID, Name, Sample_Num, Flag, Gender``: irregular
spaces, quoted names that may hold commas, and in the released file a trailing comma on every
row, ``n000002, "A_Fine_Frenzy",315,1, f,``; a name whose comma was left unquoted is joined
back from the fields between the id and the last three). The loose box ``X,Y,W,H`` is in pixels of the image
and may run outside it (the pipeline clamps); 5 landmarks where the landmark file is present.
Where a split's box file exists its rows list the images; otherwise the folder is walked.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .base import IMAGE_EXTENSIONS, Box, ClipSpec, MetadataError, SourceSpec
from .files import FileIndex
from .probe import image_info, with_headers
from .root import DatasetRoot
from .textfiles import EntryError, Line, existing_inside, read_csv_lines, to_float

_SPLITS = ("train", "test")


def _csv_rows(path: str, dataset: str, errors: list[MetadataError]) -> list:
    """The CSV's rows; a file that cannot be read adds its error row and gives none."""
    try:
        return list(read_csv_lines(path))
    except EntryError as e:
        errors.append(e.to_error(dataset, path, None))
        return []


class VGGFace2Adapter:
    name = "vggface2"

    def __init__(self, root: str | Path):
        self.root = DatasetRoot(root)

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        self.files = FileIndex.scan(self.root, self.name, _SPLITS, IMAGE_EXTENSIONS)
        yield from self.files.problems
        people, errors = self._identity_meta()
        yield from errors
        found = False
        for split in _SPLITS:
            folder = self.root.name(split)
            if not self.root.is_dir(split):
                continue
            found = True
            boxes = self._rows(f"loose_bb_{split}.csv", 4)
            marks = self._rows(f"loose_landmark_{split}.csv", 10)
            for table in (boxes, marks):
                yield from (e for e in table.values() if isinstance(e, MetadataError))
            if boxes:
                names = [k for k, v in boxes.items() if not isinstance(v, MetadataError)]
            else:
                names = [k[len(split) + 1:].rsplit(".", 1)[0] for k in self.files.listed(split)]

            def header_path(name: str, split: str = split, boxes: dict = boxes) -> str | None:
                return self.files.path_of(f"{split}/{name}.jpg") if name in boxes else None

            for name in with_headers(names, header_path, "image"):
                row = boxes.get(name)
                try:
                    yield self._source(split, name, row, marks.get(name), people)
                except EntryError as e:
                    yield e.to_error(self.name, row[0].file if row else folder, row[0].number if row else None)
        if not found:
            yield MetadataError(self.name, str(self.root), None, "no train/ or test/ folder")

    def _identity_meta(self) -> tuple[dict[str, dict[str, str]], list[MetadataError]]:
        rel = self.root.first_existing(["identity_meta.csv", "meta/identity_meta.csv"])
        people: dict[str, dict[str, str]] = {}
        errors: list[MetadataError] = []
        if rel is None:
            return people, errors
        for line, fields in _csv_rows(self.root.name(rel), self.name, errors):
            if fields and fields[-1] == "":
                fields = fields[:-1]  # the released file ends every row with a comma
            if fields[0] == "Class_ID":
                continue
            if len(fields) < 5 or not fields[0].startswith("n") or fields[-1].lower() not in ("m", "f"):
                errors.append(line.error(self.name, "expected 'Class_ID, Name, Sample_Num, Flag, Gender'"))
                continue
            name = ",".join(fields[1:-3])  # a comma left unquoted inside a name
            people[fields[0]] = {"name": name, "gender": fields[-1].lower()}
        return people, errors

    def _rows(self, filename: str, n_values: int) -> dict[str, tuple[Line, list[float]] | MetadataError]:
        rel = self.root.first_existing([filename, f"bb_landmark/{filename}"])
        out: dict = {}
        if rel is None:
            return out
        path = self.root.name(rel)
        unreadable: list[MetadataError] = []
        for line, fields in _csv_rows(path, self.name, unreadable):
            if fields[0] == "NAME_ID":
                continue
            try:
                if len(fields) != n_values + 1:
                    raise EntryError(f"expected NAME_ID and {n_values} numbers, got {len(fields)} fields")
                out[fields[0]] = (line, [to_float(v, "value") for v in fields[1:]])
            except EntryError as e:
                out[f"error:{line.number}"] = line.error(self.name, str(e))
        for e in unreadable:
            out["error:file"] = e
        return out

    def _source(self, split, name, row, mark_row, people) -> SourceSpec:
        path, rel = existing_inside(self.files, f"{split}/{name}.jpg")
        identity = name.split("/")[0]
        clips = None
        if row is not None:
            info = image_info(str(path))
            x, y, w, h = row[1]
            points = None
            if isinstance(mark_row, tuple):
                v = mark_row[1]
                points = list(zip(v[0::2], v[1::2]))
            box = Box(x, y, x + w, y + h, float(info.width), float(info.height))
            clips = [ClipSpec(0.0, None, box=box, landmarks=points, key=name)]
        return SourceSpec(self.name, str(path), rel, "image", identity=identity, split=split,
                          labels=dict(people.get(identity, {})), clips=clips)
