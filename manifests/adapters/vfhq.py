"""VFHQ: one metadata txt per clip, ``Clip+<ytid>+P<pid>+C<idx>+F<start>-<end>.txt`` anywhere
under the root (e.g. ``meta_info/``), with the raw video ``<ytid>.mp4`` anywhere under the
root, or an already-cut clip video ``<clip name>.mp4``.

The name is split on ``+`` (YouTube ids hold ``-`` and ``_``). Header lines ``H``, ``W``,
``FPS``, ``CROP`` (its last four numbers: x0 y0 x1 y1 in pixels of a W x H frame); lines that
start with a number are per-frame rows ``frame x y x y ...`` (landmarks). Frames are 0-based
frame numbers of the source video at its ``FPS``; the range is the per-frame rows' first..last
where present, else ``F<start>-<end>`` (end inclusive), so ``start = S/FPS``,
``end = (E+1)/FPS``. Without ``FPS`` the file's own rate is used. Identity = ``<ytid>+P<pid>``
(a person in a video); a raw video with several people is one source whose clips carry their
own identity (``ClipSpec.identity``, label ``person``). A cut clip is used whole, without box.
Split 'train'.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from .base import Box, ClipSpec, MetadataError, SourceSpec
from .probe import video_info
from .textfiles import EntryError, frame_span, index_by_name, inside, read_lines, to_float, to_int, walk_files

_NAME = re.compile(r"^Clip\+(?P<ytid>.+)\+P(?P<pid>\d+)\+C(?P<idx>\d+)\+F(?P<start>\d+)-(?P<end>\d+)$")


def parse_clip_name(stem: str) -> dict[str, str]:
    m = _NAME.match(stem)
    if not m:
        raise EntryError(f"file name {stem!r} is not Clip+<ytid>+P<pid>+C<idx>+F<start>-<end>")
    return m.groupdict()


class VFHQAdapter:
    name = "vfhq"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        videos = index_by_name(self.root, {".mp4"})
        raw: dict[str, tuple[Path, str, list[ClipSpec]]] = {}
        found = False
        for txt in walk_files(self.root, {".txt"}):
            if not txt.name.startswith("Clip+"):
                continue
            found = True
            try:
                item = self._clip(txt, videos)
            except EntryError as e:
                yield e.to_error(self.name, str(txt), None)
                continue
            if isinstance(item, SourceSpec):
                yield item
            else:
                path, rel, clip = item
                raw.setdefault(rel, (path, rel, []))[2].append(clip)
        for rel in sorted(raw):
            path, rel, clips = raw[rel]
            clips.sort(key=lambda c: (c.start_s, c.key))
            people = sorted({c.identity for c in clips})
            identity = people[0] if len(people) == 1 else clips[0].labels["youtube_id"]
            yield SourceSpec(self.name, str(path), rel, "video", identity=identity, split="train",
                             labels={"youtube_id": clips[0].labels["youtube_id"]}, clips=clips)
        if not found:
            yield MetadataError(self.name, str(self.root), None, "no VFHQ clip metadata (Clip+...txt)")

    def _header(self, txt: Path) -> tuple[dict[str, float], tuple[float, ...] | None, list[tuple[int, list[float]]]]:
        header: dict[str, float] = {}
        crop = None
        frames: list[tuple[int, list[float]]] = []
        for line in read_lines(txt):
            fields = line.text.replace(",", " ").split()
            try:
                if fields[0][0].isdigit():
                    frames.append((to_int(fields[0], "frame"), [to_float(v, "landmark") for v in fields[1:]]))
                    continue
                key = fields[0].rstrip(":").upper()
                if key in ("H", "W", "FPS"):
                    if len(fields) < 2:
                        raise EntryError(f"{key} has no value")
                    header[key] = to_float(fields[1], key)
                elif key == "CROP":
                    if len(fields) < 5:
                        raise EntryError("CROP needs four numbers x0 y0 x1 y1")
                    crop = tuple(to_float(v, "crop value") for v in fields[-4:])
            except EntryError as e:
                raise EntryError(str(e), line) from None
        return header, crop, frames

    def _clip(self, txt: Path, videos: dict[str, list[Path]]):
        stem = txt.name[:-4]
        n = parse_clip_name(stem)
        identity = f"{n['ytid']}+P{n['pid']}"
        labels = {"youtube_id": n["ytid"], "person": f"P{n['pid']}", "clip": f"C{n['idx']}"}
        cut = videos.get(f"{stem}.mp4")
        if cut:
            path, rel = inside(self.root, cut[0].relative_to(self.root).as_posix())
            return SourceSpec(self.name, str(path), rel, "video", identity=identity, split="train", labels=labels,
                              clips=[ClipSpec(0.0, None, key=stem, labels=labels, identity=identity)])
        found = videos.get(f"{n['ytid']}.mp4")
        if not found:
            raise EntryError(f"media file listed in the metadata is missing: {n['ytid']}.mp4 (nor {stem}.mp4)")
        path, rel = inside(self.root, found[0].relative_to(self.root).as_posix())
        header, crop, frames = self._header(txt)
        first, last = int(n["start"]), int(n["end"])
        if frames:
            first, last = min(f for f, _ in frames), max(f for f, _ in frames)
        fps = header.get("FPS") or video_info(str(path)).fps
        start, end = frame_span(first, last, fps)
        box, landmarks = None, None
        if crop is not None or frames:
            if "W" in header and "H" in header:
                ref_w, ref_h = header["W"], header["H"]
            else:
                info = video_info(str(path))
                ref_w, ref_h = float(info.width), float(info.height)
            if frames and len(frames[0][1]) >= 2 and len(frames[0][1]) % 2 == 0:
                v = frames[0][1]
                landmarks = list(zip(v[0::2], v[1::2]))
            if crop is not None:
                box = Box(*crop, ref_w, ref_h)
            elif landmarks:
                xs, ys = [p[0] for p in landmarks], [p[1] for p in landmarks]
                box = Box(min(xs), min(ys), max(xs), max(ys), ref_w, ref_h)
        return path, rel, ClipSpec(start, end, box=box, landmarks=landmarks, key=stem, labels=labels, identity=identity)
