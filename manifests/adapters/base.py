"""The adapter interface: a dataset on disk -> source specs (and clip specs) for the build.

An adapter reads a dataset in the layout its official scripts produce and yields, per media
file, a :class:`SourceSpec`. Where the dataset gives time ranges, boxes or labels, the spec
carries them as :class:`ClipSpec` entries; where it gives none, ``clips`` is None and the
pipeline segments the whole file itself. Malformed metadata is yielded as a
:class:`MetadataError` (file and line) and the adapter goes on.

Files on disk are listed only through :class:`manifests.adapters.files.FileIndex`, which applies
the one rule of :func:`link_verdict` to every entry: no adapter follows a link out of the root,
and a link loop or an unreadable folder is an error row, never a traceback.
"""
from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv"})
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
# Pictures this build does not decode (animated GIF, AVIF/HEIC need codecs the decode stage does
# not use): each one found becomes an error row naming it, so none is dropped silently.
UNSUPPORTED_PICTURES = frozenset({".gif", ".avif", ".heic", ".heif", ".jxl", ".jp2"})
# Dataset metadata and notes: read by adapters, never counted as skipped media.
METADATA_EXTENSIONS = frozenset({".txt", ".csv", ".json", ".jsonl", ".md", ".yaml", ".yml", ".xml", ".tsv", ".lst"})

# MetadataError kinds, counted per dataset at the end of discovery.
# The label naming a source's video where the dataset has one (a YouTube id in VoxCeleb2,
# CelebV-HQ, TalkingHead-1KH, HDTF and VFHQ): SourceSpec.video_id, sources/clips.video_id.
VIDEO_ID_LABEL = "youtube_id"

UNPARSEABLE = "unparseable"  # a metadata entry that cannot be read
MISSING_FILE = "missing_file"  # a metadata entry whose media file is not on disk
NO_METADATA = "no_metadata"  # a media file the dataset's metadata (or path scheme) does not cover
OUTSIDE_ROOT = "link_out_of_root"  # a path or link that leaves the dataset root
LINK_LOOP = "symlink_loop"
UNREADABLE = "unreadable"  # permission denied, broken link, I/O error
UNSUPPORTED = "unsupported_extension"


def media_type_of(path: str | Path) -> str | None:
    ext = Path(path).suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def _is_plain(rel: str) -> bool:
    """True when ``Path(rel).as_posix() == rel`` (no empty or '.' parts), checked without
    building a Path: ids are made for every file of million-file datasets."""
    return bool(rel) and "//" not in rel and not rel.startswith(("./", "/")) and not rel.endswith(("/", "/.")) \
        and "/./" not in rel and rel != "."


def stable_id(dataset: str, rel_path: str) -> str:
    """Stable source id from dataset + relative path (posix separators)."""
    key = f"{dataset}/{rel_path if _is_plain(rel_path) else Path(rel_path).as_posix()}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box (x0, y0, x1, y1) given in a frame of size ref_w x ref_h.

    Normalised boxes use ref_w = ref_h = 1. :meth:`to_frame` rescales it to the decoded
    frame's actual size and clamps it, so boxes given at another resolution stay right.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    ref_w: float = 1.0
    ref_h: float = 1.0

    def to_frame(self, width: int, height: int) -> tuple[float, float, float, float] | None:
        sx, sy = width / self.ref_w, height / self.ref_h
        x0, x1 = sorted((self.x0 * sx, self.x1 * sx))
        y0, y1 = sorted((self.y0 * sy, self.y1 * sy))
        x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
        y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
        if x1 - x0 < 1 or y1 - y0 < 1:
            return None
        return (x0, y0, x1, y1)


@dataclass
class ClipSpec:
    """A dataset-given clip: time range in seconds of the actual file (end exclusive)."""

    start_s: float
    end_s: float | None = None  # None: to the end of the file
    box: Box | None = None  # seeds the face track
    landmarks: list[tuple[float, float]] | None = None  # in the box's reference frame
    key: str | None = None  # the dataset's own clip name
    labels: dict[str, str] = field(default_factory=dict)
    # The person of this clip where one file holds several (VFHQ raw videos); None = the
    # source's identity.
    identity: str | None = None


@dataclass
class SourceSpec:
    dataset: str
    path: str  # absolute
    rel_path: str  # relative to the dataset root, posix
    media_type: str  # 'image' | 'video'
    identity: str | None = None
    split: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    clips: list[ClipSpec] | None = None

    @property
    def source_id(self) -> str:
        return stable_id(self.dataset, self.rel_path)

    @property
    def video_id(self) -> str | None:
        """The source video's id where the dataset names one (label ``youtube_id``): clips of
        one video share it across datasets, so the eval split never splits them."""
        return self.labels.get(VIDEO_ID_LABEL) or None


@dataclass
class MetadataError:
    """A metadata entry that could not be read; becomes a row in ``errors``."""

    dataset: str
    file: str
    line: int | None
    message: str
    kind: str = UNPARSEABLE

    def describe(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class DatasetAdapter(Protocol):
    name: str

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]: ...


def link_verdict(real_root: str, path: str) -> tuple[str | None, str]:
    """The one rule for every entry discovery meets: (problem kind or None, real path).

    ``real_root`` is the dataset root with its own links resolved (a root that is itself a link
    is fine). The entry's real path must lie inside it; a link loop or a dangling link is a
    problem of its own kind. ``os.path.realpath`` never raises on loops (``Path.resolve`` does
    on Python 3.11), and ``os.stat`` names the failure.
    """
    real = os.path.realpath(path)
    try:
        os.stat(path)
    except OSError as e:
        return (LINK_LOOP if e.errno == errno.ELOOP else UNREADABLE), real
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        return OUTSIDE_ROOT, real
    return None, real
