"""VFHQ: one metadata txt per clip, ``Clip+<ytid>+P<pid>+C<idx>+F<start>-<end>.txt`` anywhere
under the root (e.g. ``meta_info/train/``), with the raw video ``<ytid>.<ext>`` anywhere under
the root (the official and yt-dlp download scripts keep what YouTube serves: mostly ``.webm``,
also ``.mkv`` or ``.mp4``), or an already-cut clip video ``<clip name>.<ext>``.

The name is split on ``+`` (YouTube ids hold ``-`` and ``_``). Header lines ``H``, ``W``,
``FPS``, ``CROP`` (its last four numbers: x0 y0 x1 y1 in pixels of a W x H frame; the line may
come last in the file), a column line ``FRAME INDEX X0 Y0 W H ...`` and per-frame rows ``frame
index x0 y0 w h`` followed by 5 landmarks (x y pairs), all at W x H. Frames are 0-based frame
numbers of the source video at its ``FPS``. The clip is what the official extractor keeps of
``F<s>-<e>``: frames ``s+1 .. e-1`` (``start = (s+1)/FPS``, ``end = e/FPS``). Without ``FPS``
the file's own rate is used. The box is ``CROP`` (else the first kept row's box); landmarks
are the first kept row's. Identity = ``<ytid>+P<pid>`` (a person in a video); a raw video with
several people is one source whose clips carry their own identity (``ClipSpec.identity``, label
``person``). A cut clip is used whole, without box. Split: ``train`` or ``test`` when a folder
of the txt's path is so named (the metadata archive's layout), else ``train``.
"""
from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from pathlib import Path

from .base import VIDEO_EXTENSIONS, VIDEO_ID_LABEL, Box, ClipSpec, MetadataError, SourceSpec
from .files import FileIndex
from .probe import video_info, with_headers
from .root import DatasetRoot
from .textfiles import (
    EntryError,
    find_inside,
    frame_span,
    missing,
    read_ahead,
    read_lines,
    to_float,
    to_int,
    videos_named,
)

_NAME = re.compile(r"^Clip\+(?P<ytid>.+)\+P(?P<pid>\d+)\+C(?P<idx>\d+)\+F(?P<start>\d+)-(?P<end>\d+)$")
_ROW_FIXED = 6  # frame, index, x0, y0, w, h; then the landmarks


def parse_clip_name(stem: str) -> dict[str, str]:
    m = _NAME.match(stem)
    if not m:
        raise EntryError(f"file name {stem!r} is not Clip+<ytid>+P<pid>+C<idx>+F<start>-<end>")
    return m.groupdict()


def kept_frames(start: int, end: int) -> tuple[int, int]:
    """The inclusive frame range the official extractor keeps of ``F<start>-<end>``."""
    first, last = start + 1, end - 1
    if last < first:
        raise EntryError(f"F{start}-{end} keeps no frame (the extractor keeps {first}..{last})")
    return first, last


def parse_meta(txt: str | Path, text: str | EntryError | None = None
               ) -> tuple[dict[str, float], tuple[float, ...] | None, list[tuple[int, list[float]]]]:
    """(header H/W/FPS, CROP x0 y0 x1 y1, rows (frame, [x0, y0, w, h, lx, ly, ...])); ``text``:
    the file's, when already read."""
    header: dict[str, float] = {}
    crop = None
    rows: list[tuple[int, list[float]]] = []
    for line in read_lines(txt, text):
        fields = line.text.replace(",", " ").split()
        try:
            if fields[0][0].isdigit():
                if len(fields) < _ROW_FIXED or (len(fields) - _ROW_FIXED) % 2:
                    raise EntryError(f"expected 'frame index x0 y0 w h' and landmark pairs, got {len(fields)} fields")
                rows.append((to_int(fields[0], "frame"), [to_float(v, "value") for v in fields[2:]]))
                continue
            key = fields[0].rstrip(":").upper()
            if key in ("H", "W", "FPS"):
                if len(fields) < 2:
                    raise EntryError(f"{key} has no value")
                header[key] = to_float(fields[-1], key)
            elif key == "CROP":
                if len(fields) < 5:
                    raise EntryError("CROP needs four numbers x0 y0 x1 y1")
                crop = tuple(to_float(v, "crop value") for v in fields[-4:])
        except EntryError as e:
            raise EntryError(str(e), line) from None
    return header, crop, rows


def _split_of(listed: str) -> str:
    folders = {p.lower() for p in listed.split("/")[:-1]}
    return "test" if "test" in folders else "train"


class VFHQAdapter:
    name = "vfhq"

    def __init__(self, root: str | Path):
        self.root = DatasetRoot(root)

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        self.files = FileIndex.scan(self.root, self.name, [""], VIDEO_EXTENSIONS)
        yield from self.files.problems
        txts = [
            t for t in self.files.metadata_files if posixpath.basename(t).startswith("Clip+") and t.endswith(".txt")
        ]
        if not txts:
            yield MetadataError(self.name, str(self.root), None, "no VFHQ clip metadata (Clip+...txt)")
            return
        raw: dict[str, tuple[str, str, str, list[ClipSpec]]] = {}
        for listed, text in read_ahead(with_headers(sorted(txts), self._header_path, "video"), self.root.name):
            txt = self.root.name(listed)
            try:
                item = self._clip(txt, _split_of(listed), text)
            except EntryError as e:
                yield e.to_error(self.name, txt, None)
                continue
            if isinstance(item, SourceSpec):
                yield item
            else:
                path, rel, split, clip = item
                raw.setdefault(rel, (path, rel, split, []))[3].append(clip)
        for rel in sorted(raw):
            path, rel, split, clips = raw[rel]
            clips.sort(key=lambda c: (c.start_s, c.key))
            people = sorted({c.identity for c in clips})
            identity = people[0] if len(people) == 1 else clips[0].labels[VIDEO_ID_LABEL]
            yield SourceSpec(self.name, str(path), rel, "video", identity=identity, split=split,
                             labels={VIDEO_ID_LABEL: clips[0].labels[VIDEO_ID_LABEL]}, clips=clips)

    def _video(self, stem: str) -> tuple[str, str] | None:
        for listed in videos_named(self.files, stem):
            return find_inside(self.files, listed)
        return None

    def _header_path(self, listed: str) -> str | None:
        """The raw video a txt needs probed (for its size or rate), to read ahead in threads."""
        m = _NAME.match(posixpath.basename(listed)[:-4])
        found = videos_named(self.files, m["ytid"]) if m else []
        return self.files.path_of(found[0]) if found else None

    def _clip(self, txt: str, split: str, text: str | EntryError | None = None):
        stem = posixpath.basename(txt)[:-4]
        n = parse_clip_name(stem)
        identity = f"{n['ytid']}+P{n['pid']}"
        labels = {VIDEO_ID_LABEL: n["ytid"], "person": f"P{n['pid']}", "clip": f"C{n['idx']}"}
        cut = self._video(stem)
        if cut is not None:
            path, rel = cut
            return SourceSpec(self.name, str(path), rel, "video", identity=identity, split=split, labels=labels,
                              clips=[ClipSpec(0.0, None, key=stem, labels=labels, identity=identity)])
        found = self._video(n["ytid"])
        if found is None:
            raise missing(f"{n['ytid']}.mp4/.webm/.mkv (nor {stem}.mp4)")
        path, rel = found
        header, crop, rows = parse_meta(txt, text)
        first, last = kept_frames(int(n["start"]), int(n["end"]))
        fps = header.get("FPS") or video_info(str(path)).fps
        start, end = frame_span(first, last, fps)
        kept = [values for f, values in rows if first <= f <= last]
        box, landmarks = None, None
        if crop is not None or kept:
            if "W" in header and "H" in header:
                ref_w, ref_h = header["W"], header["H"]
            else:
                info = video_info(str(path))
                ref_w, ref_h = float(info.width), float(info.height)
            if kept and len(kept[0]) > 4:
                v = kept[0][4:]
                landmarks = list(zip(v[0::2], v[1::2]))
            if crop is not None:
                box = Box(*crop, ref_w, ref_h)
            elif kept:
                x0, y0, w, h = kept[0][:4]
                box = Box(x0, y0, x0 + w, y0 + h, ref_w, ref_h)
        clip = ClipSpec(start, end, box=box, landmarks=landmarks, key=stem, labels=labels, identity=identity)
        return path, rel, split, clip
