"""VoxCeleb2: per-utterance txt ``txt/<id>/<ytid>/<NNNNN>.txt`` (also ``dev/txt``, ``test/txt``)
beside the utterance videos ``{dev,test}/mp4/<id>/<ytid>/<NNNNN>.mp4``; the test archive
(``vox2_test_mp4.zip``) unpacks to ``mp4/<id>/...`` with no ``test/`` level, read as test.

A txt has header lines ``Key : value`` (``Reference`` = the YouTube id, ``Offset`` = A/V
offset), a blank line, ``FRAME X Y W H`` and one row per frame: the frame number in the source
video at 25 fps and the face box, normalised to [0, 1] in VoxCeleb2 (a face at the frame's edge
runs past it: x + w > 1 is still normalised). Pixel boxes, as in VoxCeleb1, are recognised by a
value above 2 (a normalised box overruns the frame by a fraction of it, a pixel box of a face is
tens of pixels) and taken at the raw video's size. The utterance
mp4 is already the face track cut from the source, so it spans ``(last - first + 1) / 25`` s
from 0 and carries no box. With ``raw_dir`` holding the source video ``<ytid>.mp4`` instead,
the utterance is the range ``first/25 .. (last+1)/25`` of it with the first row's box.
Identity = the ``id`` folder; split: dev -> train, test -> test. Without txt files the mp4
folders are listed as they are.
"""
from __future__ import annotations

import posixpath
from collections.abc import Iterator
from pathlib import Path

from .base import VIDEO_EXTENSIONS, VIDEO_ID_LABEL, Box, ClipSpec, MetadataError, SourceSpec
from .files import FileIndex
from .probe import video_info
from .root import DatasetRoot
from .textfiles import EntryError, find_inside, find_video, missing, read_ahead, read_lines, to_float, to_int

VOX_FPS = 25.0
_MP4_DIRS = (("dev/mp4", "train"), ("test/mp4", "test"), ("mp4", "test"))
_TXT_DIRS = (("txt", None), ("dev/txt", "train"), ("test/txt", "test"))
PIXEL_BOX_ABOVE = 2.0


def is_pixel_box(x: float, y: float, w: float, h: float) -> bool:
    return max(abs(x), abs(y), w, h) > PIXEL_BOX_ABOVE


def parse_utterance(txt: str | Path, text: str | EntryError | None = None
                    ) -> tuple[dict[str, str], list[tuple[int, tuple[float, float, float, float]]]]:
    """(header, rows) of a VoxCeleb txt; EntryError (with the line) on a malformed row.
    ``text``: the file's, when already read."""
    header: dict[str, str] = {}
    rows: list[tuple[int, tuple[float, float, float, float]]] = []
    in_rows = False
    for line in read_lines(txt, text):
        fields = line.fields
        if not in_rows:
            if fields[0].upper() == "FRAME":
                in_rows = True
            elif ":" in line.text:
                key, value = line.text.split(":", 1)
                header[key.strip()] = value.strip()
            else:
                raise EntryError("expected 'Key : value' or the FRAME X Y W H header", line)
            continue
        try:
            if len(fields) != 5:
                raise EntryError(f"expected FRAME X Y W H, got {len(fields)} fields")
            frame = to_int(fields[0], "frame")
            x, y, w, h = (to_float(v, "box value") for v in fields[1:])
        except EntryError as e:
            raise EntryError(str(e), line) from None
        rows.append((frame, (x, y, w, h)))
    if not rows:
        raise EntryError("no frame rows")
    return header, rows


class VoxCeleb2Adapter:
    name = "voxceleb2"

    def __init__(self, root: str | Path, raw_dir: str = "raw_videos"):
        self.root = DatasetRoot(root)
        self.raw_dir = raw_dir

    def _txt_files(self) -> list[tuple[str, str | None]]:
        out = []
        for folder, split in _TXT_DIRS:
            prefix = folder + "/"
            out.extend((t, split) for t in self.files.metadata_files if t.startswith(prefix) and t.endswith(".txt"))
        return out

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        folders = [d for d, _ in _MP4_DIRS] + [d for d, _ in _TXT_DIRS] + [self.raw_dir]
        self.files = FileIndex.scan(self.root, self.name, folders, VIDEO_EXTENSIONS)
        yield from self.files.problems
        txts = self._txt_files()
        if not txts:
            yield from self._mp4_only()
            return
        raw: dict[str, tuple[str, str, str, str, list[ClipSpec]]] = {}
        for (listed, split_hint), text in read_ahead(txts, lambda t: self.root.name(t[0])):
            txt = self.root.name(listed)
            parts = listed.split("/")
            if len(parts) < 4:
                yield MetadataError(self.name, txt, None, "expected txt/<id>/<ytid>/<NNNNN>.txt")
                continue
            ident, ytid, utt = parts[-3], parts[-2], posixpath.splitext(parts[-1])[0]
            try:
                header, rows = parse_utterance(txt, text)
                item = self._utterance(ident, ytid, utt, header, rows, split_hint)
            except EntryError as e:
                yield e.to_error(self.name, txt, None)
                continue
            if isinstance(item, SourceSpec):
                yield item
            else:
                path, rel, split, clip = item
                raw.setdefault(rel, (path, rel, ident, split, []))[4].append(clip)
        for rel in sorted(raw):
            path, rel, ident, split, clips = raw[rel]
            clips.sort(key=lambda c: (c.start_s, c.key))
            yield SourceSpec(self.name, str(path), rel, "video", identity=ident, split=split, clips=clips)

    def _utterance(self, ident, ytid, utt, header, rows, split_hint):
        first, last = rows[0][0], rows[-1][0]
        if last < first:
            raise EntryError(f"frames run backwards ({first}..{last})")
        labels = {VIDEO_ID_LABEL: header.get("Reference", ytid), "utterance": utt}
        if "Offset" in header:
            labels["av_offset"] = header["Offset"]
        for folder, split in _MP4_DIRS:
            found = find_inside(self.files, f"{folder}/{ident}/{ytid}/{utt}.mp4")
            if found is not None:
                path, rel = found
                clip = ClipSpec(0.0, (last - first + 1) / VOX_FPS, key=f"{ident}/{ytid}/{utt}", labels=labels)
                return SourceSpec(self.name, str(path), rel, "video", identity=ident, split=split,
                                  labels=labels, clips=[clip])
        found = find_video(self.files, f"{self.raw_dir}/{ytid}")
        if found is None:
            raise missing(
                f"dev/mp4/{ident}/{ytid}/{utt}.mp4 (nor test/mp4/..., mp4/..., nor {self.raw_dir}/{ytid}.mp4)"
            )
        path, rel = found
        x, y, w, h = rows[0][1]
        if not is_pixel_box(x, y, w, h):  # VoxCeleb2: normalised, may overrun an edge
            box = Box(x, y, x + w, y + h, 1.0, 1.0)
        else:  # VoxCeleb1-style pixels of the source video
            info = video_info(str(path))
            box = Box(x, y, x + w, y + h, float(info.width), float(info.height))
        clip = ClipSpec(first / VOX_FPS, (last + 1) / VOX_FPS, box=box, key=f"{ident}/{ytid}/{utt}", labels=labels)
        return path, rel, split_hint or "train", clip

    def _mp4_only(self) -> Iterator[SourceSpec | MetadataError]:
        found = False
        for folder, split in _MP4_DIRS:
            if not self.root.is_dir(folder):
                continue
            found = True
            for listed in self.files.listed(folder):
                ident = listed[len(folder) + 1:].split("/")[0]
                path, rel = self.files.real(listed)
                yield SourceSpec(self.name, path, rel, "video", identity=ident, split=split)
        if not found:
            yield MetadataError(
                self.name, str(self.root), None, "no txt/ folder and no dev/mp4, test/mp4 or mp4 folder"
            )
