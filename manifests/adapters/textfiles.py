"""Small parsing helpers shared by the dataset adapters.

Dataset metadata files are hand-made text: UTF-8 BOMs, trailing spaces, runs of spaces or
tabs between fields, blank lines, missing final newlines. :func:`read_lines` absorbs all of
that once and numbers lines from 1 as an editor shows them, so every adapter can name the
file and line of an entry it cannot read.

Frame convention (all adapters): frame ``f`` (0-based) covers ``[f/fps, (f+1)/fps)``, so an
inclusive frame range ``S..E`` becomes ``start = S/fps``, ``end = (E+1)/fps`` (end exclusive).
"""
from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TypeVar

from ..errors import PortraitError
from .base import MISSING_FILE, OUTSIDE_ROOT, UNPARSEABLE, MetadataError
from .files import FileIndex

T = TypeVar("T")
_READERS = 16  # requests in flight when reading small files from an object store


class EntryError(PortraitError, ValueError):
    """One metadata entry cannot be read; the adapter turns it into a MetadataError.

    ``line`` names the offending line where it is not the one the adapter is reading.
    """

    def __init__(self, message: str, line: Line | None = None, kind: str = UNPARSEABLE):
        super().__init__(message)
        self.line = line
        self.kind = kind

    def to_error(self, dataset: str, file: str, line: int | None) -> MetadataError:
        if self.line is not None:
            return MetadataError(dataset, self.line.file, self.line.number, str(self), self.kind)
        return MetadataError(dataset, file, line, str(self), self.kind)


@dataclass(frozen=True)
class Line:
    """One non-blank line of a metadata file: 1-based number, text without BOM/trailing blanks."""

    file: str
    number: int
    text: str

    @property
    def fields(self) -> list[str]:
        """Fields separated by runs of spaces or tabs."""
        return self.text.split()

    def error(self, dataset: str, message: str) -> MetadataError:
        return MetadataError(dataset, self.file, self.number, message)


def read_text(path: str | Path) -> str:
    """The file's text, UTF-8 with an optional BOM stripped. ``path`` is a local path or a
    file's full URI (read through ``manifests.storage``). A file that cannot be read or is not
    UTF-8 text is an EntryError naming why, in one line: the adapter makes it an error row."""
    from ..storage import is_uri, locate

    try:
        if is_uri(path):
            location, name = locate(path)
            data = location.read_bytes(name)
        else:
            data = Path(path).read_bytes()
        return data.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise EntryError(f"cannot read: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_ahead(items: Iterable[T], path_of: Callable[[T], str],
               batch: int = 256) -> Iterator[tuple[T, str | EntryError]]:
    """``items`` in order, each with its file's text (or the EntryError reading it) for
    :func:`read_lines`. Files on an object store cost a request each: a batch is fetched in a
    thread pool ahead (VoxCeleb2 has a million utterance txts); local files are read as they
    come, as without it."""
    from ..storage import is_uri

    def one(item: T) -> str | EntryError:
        try:
            return read_text(path_of(item))
        except EntryError as e:
            return e

    items = iter(items)
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        while chunk := list(islice(items, batch)):
            remote = any(is_uri(str(path_of(i))) for i in chunk)
            yield from zip(chunk, pool.map(one, chunk) if remote else map(one, chunk))


def read_lines(path: str | Path, text: str | EntryError | None = None) -> Iterator[Line]:
    """Non-blank lines, trailing whitespace (and a BOM) removed, numbered from 1. ``text``:
    the file's text already read (by :func:`read_ahead`), or the error reading it."""
    if isinstance(text, EntryError):
        raise text
    text = read_text(path) if text is None else text
    for number, raw in enumerate(text.splitlines(), start=1):
        raw = raw.lstrip("\ufeff").rstrip()
        if raw:
            yield Line(str(path), number, raw)


def lines_or_error(path: str | Path, dataset: str, errors: list[MetadataError]) -> list[Line]:
    """All of :func:`read_lines` at once; a file that cannot be read adds its error row to
    ``errors`` and gives no lines (for tables read whole before their rows are used)."""
    try:
        return list(read_lines(path))
    except EntryError as e:
        errors.append(e.to_error(dataset, str(path), None))
        return []


def read_csv_lines(path: str | Path) -> Iterator[tuple[Line, list[str]]]:
    """CSV rows (quoted fields may hold commas; blanks after commas skipped) with their line."""
    for line in read_lines(path):
        row = next(csv.reader([line.text], skipinitialspace=True))
        yield line, [f.strip() for f in row]


def to_int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise EntryError(f"{what} is not an integer: {text!r}") from None


def to_float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise EntryError(f"{what} is not a number: {text!r}") from None


_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,3}):(\d{1,2}(?:\.\d+)?)$")


def parse_clock(text: str) -> float:
    """``MM:SS`` or ``HH:MM:SS`` (seconds may have decimals) to seconds."""
    m = _CLOCK.match(text.strip())
    if not m:
        raise EntryError(f"not a MM:SS time: {text!r}")
    hours, minutes, seconds = int(m.group(1) or 0), int(m.group(2)), float(m.group(3))
    if seconds >= 60:
        raise EntryError(f"seconds out of range in {text!r}")
    return hours * 3600 + minutes * 60 + seconds


def parse_clock_range(text: str) -> tuple[float, float]:
    """``MM:SS-MM:SS`` to (start, end) seconds; the end must come after the start."""
    parts = text.split("-")
    if len(parts) != 2:
        raise EntryError(f"not a MM:SS-MM:SS range: {text!r}")
    start, end = parse_clock(parts[0]), parse_clock(parts[1])
    if end <= start:
        raise EntryError(f"range ends before it starts: {text!r}")
    return start, end


def frame_span(first: int, last_inclusive: int, fps: float) -> tuple[float, float]:
    """Inclusive 0-based frame range to (start_s, end_s), end exclusive."""
    if fps <= 0:
        raise EntryError(f"frame rate must be positive, got {fps}")
    if last_inclusive < first:
        raise EntryError(f"frame range ends before it starts: {first}..{last_inclusive}")
    return first / fps, (last_inclusive + 1) / fps


def find_inside(files: FileIndex, rel: str) -> tuple[str, str] | None:
    """(absolute path or full URI, real rel) of a file metadata names, None when it is not on disk.

    Refuses (EntryError) a path that would leave the dataset root: absolute paths, '..'
    escapes, and links pointing outside (the rule of ``base.link_verdict``).
    """
    try:
        found = files.find(rel)
    except ValueError as e:
        raise EntryError(str(e), kind=OUTSIDE_ROOT) from None
    return found


def existing_inside(files: FileIndex, rel: str, also: str = "") -> tuple[str, str]:
    """Like :func:`find_inside`, and the file must exist (EntryError naming it otherwise)."""
    found = find_inside(files, rel)
    if found is None:
        raise EntryError(f"media file listed in the metadata is missing: {rel}{also}", kind=MISSING_FILE)
    return found


# Containers a downloader may leave, in the order looked for: the VFHQ and yt-dlp scripts keep
# whatever YouTube serves (mostly .webm, also .mkv), so a video is found by its stem.
VIDEO_ORDER = (".mp4", ".webm", ".mkv", ".mov", ".m4v", ".avi", ".flv", ".mpg", ".mpeg")


def find_video(files: FileIndex, rel_stem: str) -> tuple[str, str] | None:
    """The video ``rel_stem.<any video extension>`` under the root, None when absent."""
    for ext in VIDEO_ORDER:
        found = find_inside(files, rel_stem + ext)
        if found is not None:
            return found
    return None


def videos_named(files: FileIndex, stem: str) -> list[str]:
    """Listed rels of the videos called ``stem.<any video extension>`` anywhere under the root."""
    return [rel for ext in VIDEO_ORDER for rel in files.by_name(stem + ext)]


def missing(message: str) -> EntryError:
    """A metadata entry whose media file is not on disk (counted apart from unreadable rows)."""
    return EntryError(f"media file listed in the metadata is missing: {message}", kind=MISSING_FILE)


def json_key_lines(text: str) -> dict[str, int]:
    """Line (1-based) where each JSON object key first appears, to locate bad entries."""
    lines: dict[str, int] = {}
    line, pos = 1, 0
    for m in re.finditer(r'"((?:[^"\\\n]|\\.)*)"\s*:', text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        lines.setdefault(m.group(1), line)
    return lines


class KeyLines:
    """Line of each JSON key, worked out only when an error needs one (files can be large)."""

    def __init__(self, text: str):
        self._text = text
        self._lines: dict[str, int] | None = None

    def get(self, key: str) -> int | None:
        if self._lines is None:
            self._lines = json_key_lines(self._text)
        return self._lines.get(key)


def load_json(path: str | Path, dataset: str) -> tuple[object | None, MetadataError | None, KeyLines]:
    """(data, error, key lines): a broken JSON file gives an error with its line, one that
    cannot be read an error naming why."""
    try:
        text = read_text(path)
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return None, MetadataError(dataset, str(path), e.lineno, f"invalid JSON: {e.msg}"), KeyLines("")
    except EntryError as e:
        return None, e.to_error(dataset, str(path), None), KeyLines("")
    return data, None, KeyLines(text)


def labels_of(**values: object) -> dict[str, str]:
    """Label map with string values; None dropped, lists joined with ','."""
    out: dict[str, str] = {}
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            v = ",".join(str(x) for x in v)
        elif isinstance(v, dict):
            v = json.dumps(v, sort_keys=True)
        out[k] = str(v)
    return out


@dataclass
class NameTable:
    """A CelebA-style table: optional count line, optional header line, then ``name v1 v2 ...``."""

    rows: dict[str, tuple[Line, list[str]]]
    header: list[str]
    errors: list[MetadataError]


def read_name_table(path: str | Path, dataset: str, n_values: int | None = None,
                    name_suffixes: tuple[str, ...] = (".jpg", ".png", ".jpeg")) -> NameTable:
    """Rows keyed by their first field (an image name); bad rows become errors with their line.

    A first line holding one integer is the count; non-row lines before the first row are the
    header (its fields are kept, e.g. attribute names). ``n_values`` checks each row's width.
    """
    table = NameTable({}, [], [])
    seen_row = False
    for line in read_lines(path):
        fields = line.fields
        is_row = fields[0].lower().endswith(name_suffixes)
        if not is_row and not seen_row:
            if not (line.number == 1 and len(fields) == 1 and fields[0].isdigit()):
                table.header = fields
            continue
        seen_row = True
        want = n_values if n_values is not None else (len(table.header) or None)
        if not is_row:
            table.errors.append(line.error(dataset, f"expected an image name first, got {fields[0]!r}"))
        else:
            _add_row(table, line, fields, want, dataset)
    return table


def _add_row(table: NameTable, line, fields: list[str], want: int | None, dataset: str) -> None:
    """One ``name v1 v2 ...`` row into ``table``, or an error row when its width or name is wrong."""
    if want is not None and len(fields) - 1 != want:
        table.errors.append(line.error(dataset, f"expected {want} values after the name, got {len(fields) - 1}"))
    elif fields[0] in table.rows:
        table.errors.append(line.error(dataset, f"{fields[0]} is listed twice"))
    else:
        table.rows[fields[0]] = (line, fields[1:])


def read_name_csv(path: str | Path, dataset: str, n_values: int | None = None) -> NameTable:
    """A Kaggle-style CSV table: a header ``image_id,col1,col2,...`` then ``name,v1,v2,...``.

    The same :class:`NameTable` as :func:`read_name_table` (header = the value columns' names).
    """
    table = NameTable({}, [], [])
    for line, fields in read_csv_lines(path):
        if not table.header and not table.rows and not fields[0].lower().endswith((".jpg", ".png", ".jpeg")):
            table.header = fields[1:]
            continue
        _add_row(table, line, fields, n_values if n_values is not None else (len(table.header) or None), dataset)
    return table
