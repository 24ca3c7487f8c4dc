"""CelebV-HQ: ``celebvhq_info.json`` with raw downloads ``<raw dir>/<ytb_id>.mp4`` and/or
processed clips ``<processed dir>/<clip_key>.mp4`` (the official script's
``downloaded_celebvhq/{raw,processed}``; ``raw/``, ``processed/`` and ``35666/`` are also
looked for).

Per clip: ``ytb_id`` (identity: CelebV-HQ names no people, the source video is the documented
grouping key; the key itself is never split, ids hold ``_`` and ``-``), ``duration.start_sec``/
``end_sec`` (seconds on the raw video), ``bbox`` top/bottom/left/right normalised to the raw
frame, and ``attributes``: appearance and action flags mapped through ``meta_info`` (or the
misspelt ``mete_info``) to names, emotion label(s). Time-split emotions (``sep_flag``) keep
their segments as JSON in the ``emotion_segments`` label; their ``start_sec``/``end_sec`` are
seconds from the start of the clip, not of the raw video. Box values a little outside [0, 1]
(the annotation tool's boxes may overrun the frame) are clamped; values far outside are an
error. A processed clip is already trimmed and cropped, so it is used whole and without a box;
otherwise the clip is a time range of the raw video (any container the downloader left),
which gathers all its clips in one source. Split 'train'.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from .base import VIDEO_EXTENSIONS, VIDEO_ID_LABEL, Box, ClipSpec, MetadataError, SourceSpec
from .files import FileIndex
from .root import DatasetRoot
from .textfiles import EntryError, find_video, labels_of, load_json, missing

_RAW_DIRS = ("downloaded_celebvhq/raw", "raw", "raw_videos")
_PROCESSED_DIRS = ("downloaded_celebvhq/processed", "processed", "35666")
# How far a normalised box value may overrun [0, 1] and still be clamped rather than refused.
BOX_SLACK = 0.1


def _below(folder: str) -> str:
    """A folder option as a posix path below the root (``./raw/`` -> ``raw``)."""
    return Path(folder).as_posix().strip("/")


class CelebVHQAdapter:
    name = "celebvhq"

    def __init__(self, root: str | Path, metadata: str = "celebvhq_info.json",
                 raw_dir: str | None = None, processed_dir: str | None = None):
        self.root = DatasetRoot(root)
        self.metadata_rel = metadata
        self.metadata = self.root.name(metadata)
        # Folders below the root (posix), None when absent.
        self.raw_dir = _below(raw_dir) if raw_dir else self.root.first_existing(_RAW_DIRS)
        self.processed_dir = _below(processed_dir) if processed_dir else self.root.first_existing(_PROCESSED_DIRS)

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        folders = [d for d in (self.raw_dir, self.processed_dir) if d is not None]
        self.files = FileIndex.scan(self.root, self.name, folders, VIDEO_EXTENSIONS)
        yield from self.files.problems
        data, error, key_lines = load_json(self.metadata, self.name) if self.root.is_file(self.metadata_rel) else (
            None, MetadataError(self.name, self.metadata, None, "celebvhq_info.json not found"), None)
        if error is not None:
            yield error
            return
        if not isinstance(data, dict) or not isinstance(data.get("clips"), dict):
            yield MetadataError(self.name, str(self.metadata), None, "no 'clips' object")
            return
        meta = data.get("meta_info") or data.get("mete_info") or {}
        clips = data["clips"]
        file = self.metadata
        raw: dict[str, tuple[str, str, list[ClipSpec]]] = {}
        for key in sorted(clips):
            try:
                ytb_id, clip = self._clip(key, clips[key], meta)
                processed = self._processed(key)
                if processed is not None:
                    path, rel = processed
                    whole = ClipSpec(0.0, None, key=key, labels=clip.labels)
                    yield SourceSpec(self.name, str(path), rel, "video", identity=ytb_id, split="train",
                                     labels={**clip.labels, VIDEO_ID_LABEL: ytb_id}, clips=[whole])
                    continue
                path, rel = self._raw(ytb_id, key)
            except EntryError as e:
                yield e.to_error(self.name, file, key_lines.get(key))
                continue
            raw.setdefault(ytb_id, (path, rel, []))[2].append(clip)
        for ytb_id in sorted(raw):
            path, rel, specs = raw[ytb_id]
            specs.sort(key=lambda c: (c.start_s, c.key))
            yield SourceSpec(self.name, str(path), rel, "video", identity=ytb_id, split="train",
                             labels={VIDEO_ID_LABEL: ytb_id}, clips=specs)

    def _processed(self, key: str) -> tuple[str, str] | None:
        if self.processed_dir is None:
            return None
        return find_video(self.files, f"{self.processed_dir}/{key}")

    def _raw(self, ytb_id: str, key: str) -> tuple[str, str]:
        if self.raw_dir is None:
            raise missing(f"clip {key}: neither processed/{key}.mp4 nor a raw video folder exists")
        raw = f"{self.raw_dir}/{ytb_id}"
        found = find_video(self.files, raw)
        if found is None:
            raise missing(f"clip {key}: {raw}.mp4 (or .webm, .mkv; and no processed {key}.mp4)")
        return found

    def _clip(self, key: str, entry: dict, meta: dict) -> tuple[str, ClipSpec]:
        if not isinstance(entry, dict):
            raise EntryError(f"clip {key}: not an object")
        try:
            ytb_id = entry["ytb_id"]
            start, end = float(entry["duration"]["start_sec"]), float(entry["duration"]["end_sec"])
            b = entry["bbox"]
            top, bottom, left, right = (float(b[k]) for k in ("top", "bottom", "left", "right"))
        except KeyError as e:
            raise EntryError(f"clip {key}: missing field {e}") from None
        except (TypeError, ValueError) as e:
            raise EntryError(f"clip {key}: bad value ({e})") from None
        if not isinstance(ytb_id, str) or not ytb_id or "/" in ytb_id:
            raise EntryError(f"clip {key}: bad ytb_id {ytb_id!r}")
        if not 0 <= start < end:
            raise EntryError(f"clip {key}: bad duration {start}..{end}")
        if not all(-BOX_SLACK <= v <= 1.0 + BOX_SLACK for v in (top, bottom, left, right)):
            raise EntryError(f"clip {key}: bbox is not normalised to [0, 1]")
        top, bottom, left, right = (min(max(v, 0.0), 1.0) for v in (top, bottom, left, right))
        labels = self._labels(entry.get("attributes") or {}, meta)
        labels = {**labels, **labels_of(version=entry.get("version"))}
        box = Box(left, top, right, bottom, 1.0, 1.0)
        return ytb_id, ClipSpec(start, end, box=box, key=key, labels=labels)

    @staticmethod
    def _labels(attrs: dict, meta: dict) -> dict[str, str]:
        def named(flags, mapping):
            if not isinstance(flags, list):
                return None
            if mapping and len(mapping) == len(flags):
                return [m for m, f in zip(mapping, flags) if f]
            return [str(f) for f in flags]

        emotion = attrs.get("emotion") or {}
        value = emotion.get("labels")
        emotions = None
        if isinstance(value, str):
            emotions = value
        elif isinstance(value, list):
            emotions = [e.get("emotion") for e in value if isinstance(e, dict)]
        return labels_of(
            appearance=named(attrs.get("appearance"), meta.get("appearance_mapping")),
            action=named(attrs.get("action"), meta.get("action_mapping")),
            emotion=emotions,
            emotion_segments=json.dumps(value, sort_keys=True) if isinstance(value, list) else None,
        )
