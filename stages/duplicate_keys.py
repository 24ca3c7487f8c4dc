"""A clip's duplicate keys: its source video's id and the perceptual signature of its frames.

Cheap (no model): it runs in every build, right after curation, on the crops curation has just
decoded (the stored ones, so the signature describes exactly what training will read).
- ``video_id``: every clip of the source, from the dataset's metadata (``SourceSpec.video_id``).
- ``signature``: kept clips only (``stages/signature.py: clip_signature`` over the view-0
  frames in time order); a rejected clip has no stored frames to describe.
The dataset-wide step that groups them (``clips.dup_group``) is ``pipeline/finalize.py``.
"""
from __future__ import annotations

from manifests.schemas import KEPT

from .base import SourceWork, Stage
from .signature import clip_signature


class DuplicateKeysStage(Stage):
    name = "duplicate_keys"

    def describe(self) -> dict:
        return {"signature": {"backend": "perceptual hash", "module": "stages/signature.py"}}

    def process(self, work: SourceWork) -> SourceWork:
        if work.failed:
            return work
        video_id = work.source.video_id
        frames = work.frames_by_clip()
        try:
            for clip in work.clips:
                clip.video_id = video_id
                rows = [r for r in frames.get(clip.clip_id, []) if r.view == 0]
                if clip.verdict == KEPT and rows:
                    clip.signature = clip_signature([work.crop(r) for r in rows], [r.timestamp_s for r in rows])
        except (ValueError, OSError) as e:  # a crop that does not decode: the source's data is at fault
            work.fail_on(self.name, e)
        return work
