"""TalkingHead-1KH as its scripts leave it: ``data_list/{train,val,small}_video_tubes.txt`` and, per
split, ``{split}/1min_clips/<ytid>_<NNNN>.mp4`` (the 1-minute chunks), else
``{split}/raw_videos/<ytid>.mp4``, else ``{split}/cropped_clips/<tube>.mp4``.

A tube line is ``name, H, W, S, E, L, T, R, B``: name = ``<ytid>_<4-digit chunk>`` (split at the
last ``_``: ids may hold ``_`` and start with ``-``), S..E 0-based frames of the chunk with E
inclusive, L, T, R, B pixels at a frame of H x W (rescaled to the real size by the pipeline).
Times use the chunk file's own frame rate: ``start = S/fps``, ``end = (E+1)/fps``. On a raw video
the chunk starts at ``60 * chunk`` seconds (approximate: ffmpeg's segmenter cuts at key frames,
so chunk files are preferred). Several tubes may share a chunk, even a time range (two people):
each is its own clip with its own box. Identity = the YouTube id; split = the list's name, except
``small``, the repository's unit-test list (``videos_download_and_crop.sh small``), whose videos
are training videos: split ``train``, label ``list=small``.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from .base import VIDEO_EXTENSIONS, VIDEO_ID_LABEL, Box, ClipSpec, MetadataError, SourceSpec
from .files import FileIndex
from .probe import video_info, with_headers
from .root import DatasetRoot
from .textfiles import EntryError, Line, find_inside, frame_span, lines_or_error, missing, to_int

_SPLIT_NAMES = {"train": "train", "val": "val", "test": "test", "small": "train"}
LISTS = ("train", "val", "small")
_TUBE_NAME = re.compile(r"^(.+)_(\d{4})$")


def parse_tube(line: Line) -> tuple[str, int, tuple[int, ...]]:
    """(ytid, chunk, (H, W, S, E, L, T, R, B)) of a tube line."""
    fields = [f.strip() for f in line.text.split(",")]
    if len(fields) != 9:
        raise EntryError(f"expected 'name, H, W, S, E, L, T, R, B', got {len(fields)} fields")
    m = _TUBE_NAME.match(fields[0])
    if not m:
        raise EntryError(f"tube name {fields[0]!r} is not <youtube id>_<4-digit chunk>")
    values = tuple(to_int(v, n) for v, n in zip(fields[1:], ("H", "W", "S", "E", "L", "T", "R", "B")))
    h, w, s, e = values[:4]
    if h <= 0 or w <= 0:
        raise EntryError(f"reference size must be positive, got {w}x{h}")
    if s < 0 or e < s:
        raise EntryError(f"frame range {s}..{e} is empty or negative")
    return m.group(1), int(m.group(2)), values


class TalkingHead1KHAdapter:
    name = "talkinghead1kh"

    def __init__(self, root: str | Path, splits: tuple[str, ...] | list[str] = LISTS):
        self.root = DatasetRoot(root)
        self.splits = tuple(splits)

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        self.files = FileIndex.scan(self.root, self.name, self.splits, VIDEO_EXTENSIONS)
        yield from self.files.problems
        any_list = False
        for split in self.splits:
            tubes_rel = f"data_list/{split}_video_tubes.txt"
            if not self.root.is_file(tubes_rel):
                continue
            any_list = True
            yield from self._split(split, self.root.name(tubes_rel))
        if not any_list:
            yield MetadataError(self.name, self.root.name("data_list"), None, "no *_video_tubes.txt")

    def _split(self, split: str, tubes_file: str) -> Iterator[SourceSpec | MetadataError]:
        # Gather tubes per media file first: a chunk (or raw video) is one source.
        groups: dict[str, tuple[str, str, str, list[ClipSpec]]] = {}
        labelled = {"list": split} if split == "small" else {}

        def header_path(line: Line) -> str | None:  # the file whose rate the tube needs
            name = line.text.split(",", 1)[0].strip()
            ytid = name.rsplit("_", 1)[0]
            chunk = self.files.path_of(f"{split}/1min_clips/{name}.mp4")
            return chunk or self.files.path_of(f"{split}/raw_videos/{ytid}.mp4")

        errors: list[MetadataError] = []
        lines = lines_or_error(tubes_file, self.name, errors)
        yield from errors
        for line in with_headers(lines, header_path, "video"):
            try:
                ytid, chunk, (h, w, s, e, left, top, right, bottom) = parse_tube(line)
                name = f"{ytid}_{chunk:04d}"
                box = Box(left, top, right, bottom, float(w), float(h))
                labels = {"chunk": f"{chunk:04d}", "tube": f"{s}-{e}"}
                chunk_rel = f"{split}/1min_clips/{name}.mp4"
                raw_rel = f"{split}/raw_videos/{ytid}.mp4"
                tube = f"{name}_S{s}_E{e}_L{left}_T{top}_R{right}_B{bottom}"
                crop_rel = f"{split}/cropped_clips/{tube}.mp4"
                if (found := find_inside(self.files, chunk_rel)) is not None:
                    start, end = frame_span(s, e, video_info(str(found[0])).fps)
                    target = found
                elif (found := find_inside(self.files, raw_rel)) is not None:
                    start, end = frame_span(s, e, video_info(str(found[0])).fps)
                    start, end = start + 60.0 * chunk, end + 60.0 * chunk
                    target = found
                elif (found := find_inside(self.files, crop_rel)) is not None:
                    start, end, box, target = 0.0, None, None, found
                else:
                    raise missing(f"{chunk_rel} (nor {raw_rel} or {crop_rel})")
            except EntryError as err:
                yield err.to_error(self.name, line.file, line.number)
                continue
            path, rel = target
            clip = ClipSpec(start, end, box=box, key=f"{name}:{s}-{e}", labels=labels)
            groups.setdefault(rel, (path, rel, ytid, []))[3].append(clip)
        for rel in sorted(groups):
            path, rel, ytid, clips = groups[rel]
            clips.sort(key=lambda c: (c.start_s, c.box.x0 if c.box else 0.0, c.key))
            yield SourceSpec(self.name, str(path), rel, "video", identity=ytid, split=_SPLIT_NAMES.get(split, split),
                             labels={**labelled, VIDEO_ID_LABEL: ytid}, clips=clips)
