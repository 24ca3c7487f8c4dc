"""HDTF: the five metadata files per subset (RD, WDA, WRA) in the root or ``HDTF_dataset/``,
and the videos anywhere under the root, found by name.

- ``xx_video_url.txt``: ``name url`` (label ``youtube_id``);
- ``xx_resolution.txt``: ``name.mp4 720|1080``: the frame height the crops are given at (the
  released files list some videos at ``0``: those crops are taken at the file's own size);
- ``xx_annotion_time.txt`` (sic): ``name.mp4 MM:SS-MM:SS [MM:SS-MM:SS ...]``; clip k = the
  k-th range (0-based), whole seconds on the raw video;
- ``xx_crop_wh.txt``: ``name_k.mp4 x w y h``: the face window in pixels at that resolution;
- ``xx_crop_ratio.txt``: ``name_k.mp4 ratio``: the window zoom scale (label ``zoom_ratio``;
  the box is the window as given).

A raw video ``name.mp4`` (or universome/HDTF's ``_videos_raw/<subset>_name.mp4``; any video
container) becomes one source with a clip per range. If only split clips exist, each is a source
used whole: ``name_k.mp4`` is the k-th range; universome/HDTF's ``<subset>_name_NNN.mp4`` is the
NNN-th range *that has a crop row* (its downloader skips the others). A split clip whose frame
is square is already cropped to the face window (HDTF's released clips are 512x512; universome
cuts the square crop window itself; the raw footage is landscape): used without a box, so the
window is not applied twice. A non-square split clip gets the crop row's box. A raw video without a time row is used
whole (label ``time_annotation=missing``). Identity = the speaker: the name without a trailing
number (``AmyKlobuchar1`` -> ``AmyKlobuchar``), except radio hosts (``Radio11``) whose names
say nothing else. Split 'train'.
"""
from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from .base import VIDEO_EXTENSIONS, VIDEO_ID_LABEL, Box, ClipSpec, MetadataError, SourceSpec
from .files import FileIndex
from .probe import video_info
from .root import DatasetRoot
from .textfiles import (
    EntryError,
    Line,
    find_inside,
    lines_or_error,
    missing,
    parse_clock_range,
    to_float,
    to_int,
    videos_named,
)

SUBSETS = ("RD", "WDA", "WRA")


@dataclass
class _Subset:
    urls: dict[str, tuple[Line, str]] = field(default_factory=dict)
    resolution: dict[str, tuple[Line, int]] = field(default_factory=dict)
    times: dict[str, tuple[Line, list[tuple[float, float]]]] = field(default_factory=dict)
    crops: dict[str, tuple[Line, tuple[float, float, float, float]]] = field(default_factory=dict)
    ratios: dict[str, tuple[Line, float]] = field(default_factory=dict)
    bad: set[str] = field(default_factory=set)  # names whose time row is broken

    def names(self) -> list[str]:
        return sorted(set(self.urls) | set(self.resolution) | set(self.times) | self.bad)


def speaker(name: str) -> str:
    base = re.sub(r"\d+$", "", name)
    return name if not base or base == "Radio" else base


def _stem(text: str) -> str:
    return text[:-4] if text.lower().endswith(".mp4") else text


class HDTFAdapter:
    name = "hdtf"

    def __init__(self, root: str | Path, metadata_dir: str | None = None):
        self.root = DatasetRoot(root)
        if metadata_dir is not None:
            self.meta_rel = Path(metadata_dir).as_posix().strip("/")
        else:
            self.meta_rel = "HDTF_dataset" if self.root.is_dir("HDTF_dataset") else ""
        self.meta = self.root.name(self.meta_rel)  # the metadata folder, as error rows name it

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        self.files = FileIndex.scan(self.root, self.name, [""], VIDEO_EXTENSIONS)
        yield from self.files.problems
        any_subset = False
        for subset in SUBSETS:
            files = {kind: posixpath.join(self.meta_rel, f"{subset}_{kind}.txt")
                     for kind in ("video_url", "resolution", "annotion_time", "crop_wh", "crop_ratio")}
            files = {kind: rel for kind, rel in files.items() if self.root.is_file(rel)}
            if not files:
                continue
            any_subset = True
            errors: list[MetadataError] = []
            meta = self._read(files, errors)
            yield from errors
            for name in meta.names():
                if name in meta.bad:
                    continue
                yield from self._video(subset, name, meta)
        if not any_subset:
            yield MetadataError(self.name, self.meta, None, "no HDTF metadata files (RD_/WDA_/WRA_*.txt)")

    # -- metadata --------------------------------------------------------------------------
    def _read(self, files: dict[str, str], errors: list[MetadataError]) -> _Subset:
        """The subset's metadata files that exist (``files``: kind -> path below the root)."""
        m = _Subset()

        def rows(kind: str, n_min: int, n_max: int | None = None):
            if kind not in files:
                return
            for line in lines_or_error(self.root.name(files[kind]), self.name, errors):
                f = line.fields
                if len(f) < n_min or (n_max is not None and len(f) > n_max):
                    want = n_min if n_max == n_min else f"at least {n_min}"
                    errors.append(line.error(self.name, f"expected {want} fields, got {len(f)}"))
                    continue
                yield line, f

        for line, f in rows("video_url", 2, 2):
            m.urls[_stem(f[0])] = (line, f[1])
        for line, f in rows("resolution", 2, 2):
            self._put(m.resolution, line, _stem(f[0]), lambda f=f: to_int(f[1], "resolution"), errors)
        for line, f in rows("annotion_time", 1):
            if len(f) == 1:  # a name without ranges: the video has no time annotation
                continue
            ok = self._put(m.times, line, _stem(f[0]), lambda f=f: [parse_clock_range(t) for t in f[1:]], errors)
            if not ok:
                m.bad.add(_stem(f[0]))
        for line, f in rows("crop_wh", 5, 5):
            self._put(m.crops, line, _stem(f[0]), lambda f=f: tuple(to_float(v, "crop value") for v in f[1:]), errors)
        for line, f in rows("crop_ratio", 2, 2):
            self._put(m.ratios, line, _stem(f[0]), lambda f=f: to_float(f[1], "crop ratio"), errors)
        return m

    def _put(self, table: dict, line: Line, key: str, parse, errors: list[MetadataError]) -> bool:
        try:
            table[key] = (line, parse())
            return True
        except EntryError as e:
            errors.append(line.error(self.name, str(e)))
            return False

    # -- one video ------------------------------------------------------------------------
    def _video(self, subset: str, name: str, m: _Subset) -> Iterator[SourceSpec | MetadataError]:
        where = m.times.get(name) or m.resolution.get(name) or m.urls.get(name)
        line = where[0]
        labels = {"subset": subset}
        if name in m.urls:
            ytid = parse_qs(urlparse(m.urls[name][1]).query).get("v", [None])[0]
            if ytid:
                labels[VIDEO_ID_LABEL] = ytid
        ranges = m.times[name][1] if name in m.times else None
        try:
            raw = self._find(name, f"{subset}_{name}")
            if raw is not None:
                path, rel = raw
                if ranges is None:
                    yield SourceSpec(self.name, str(path), rel, "video", identity=speaker(name), split="train",
                                     labels={**labels, "time_annotation": "missing"}, clips=None)
                    return
                clips = [self._clip(m, name, k, start, end, path) for k, (start, end) in enumerate(ranges)]
                yield SourceSpec(self.name, str(path), rel, "video", identity=speaker(name), split="train",
                                 labels=labels, clips=clips)
                return
            if ranges is None:
                raise missing(f"{name}.mp4 (no time row either)")
        except EntryError as e:
            yield e.to_error(self.name, line.file, line.number)
            return
        # Only the split clips: each is used whole.
        with_crop = [k for k in range(len(ranges)) if f"{name}_{k}" in m.crops]
        for k in range(len(ranges)):
            try:
                # universome/HDTF numbers only the ranges that have a crop row.
                nnn = with_crop.index(k) if k in with_crop else None
                names = [f"{name}_{k}"] + (
                    [f"{subset}_{name}_{nnn:03d}", f"{name}_{nnn:03d}"] if nnn is not None else []
                )
                found = self._find(*names)
                if found is None:
                    raise missing(f"{name}.mp4 or {' or '.join(n + '.mp4' for n in names)}")
                path, rel = found
                info = video_info(str(path))
                cropped = info.width == info.height
                clip = self._clip(m, name, k, 0.0, None, path, with_box=not cropped)
                yield SourceSpec(self.name, str(path), rel, "video", identity=speaker(name), split="train",
                                 labels={**labels, **clip.labels, "cropped": str(cropped).lower()}, clips=[clip])
            except EntryError as e:
                yield e.to_error(self.name, line.file, line.number)

    def _find(self, *stems: str) -> tuple[str, str] | None:
        """The first video named by one of ``stems`` (any container) anywhere under the root."""
        for stem in stems:
            for listed in videos_named(self.files, stem):
                return find_inside(self.files, listed)
        return None

    def _clip(self, m: _Subset, name: str, k: int, start: float, end: float | None, path: str,
              with_box: bool = True) -> ClipSpec:
        key = f"{name}_{k}"
        labels: dict[str, str] = {}
        if key in m.ratios:
            labels["zoom_ratio"] = str(m.ratios[key][1])
        box = None
        if key in m.crops and with_box:
            x, w, y, h = m.crops[key][1]
            info = video_info(str(path))
            listed = m.resolution[name][1] if name in m.resolution else 0
            if listed > 0:
                # Crops are given at the listed height; the width follows the file's aspect.
                ref_h = float(listed)
                ref_w = ref_h * info.width / info.height
            else:  # no (or a 0) resolution row: the crop is taken at the file's own size
                ref_w, ref_h = float(info.width), float(info.height)
            box = Box(x, y, x + w, y + h, ref_w, ref_h)
        return ClipSpec(start, end, box=box, key=key, labels=labels)
