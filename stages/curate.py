"""Curate one source: probe, decode, faces, clips, crop, scores, verdict, stored frames.

One pass over the sampled frames: each frame is analysed as it is decoded (faces, occlusion,
lighting, blur, background motion) and buffered (a window around the face, reduced to what
the crop needs where that saves more than a fifth of it) until its clip ends; then the clip's
crop is planned, its scores aggregated, its verdict given and, if kept, its frames cropped and
JPEG-encoded. Memory is bounded by one clip (``max_clip_s``), not the video.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from manifests import tensors
from manifests.adapters.base import ClipSpec, SourceSpec
from manifests.records import ClipRow, FrameRow
from manifests.schemas import INFRA, KEPT, REJECTED
from manifests.verdicts import judge, not_a_face, occluded_share

from . import clips as clipping
from .base import Resources, Settings, SourceWork, Stage, StageError
from .clips import ClipsConfig
from .crop import Crop, CropConfig, crop_image, plan_crop
from .decode import Frame, VideoReader, read_image
from .faces import FaceAnalyzer, FacesConfig
from .jpeg import encode_jpeg
from .probe import DEFAULT_PIXEL_BUDGET, ProbeResult, probe
from .quality import BackgroundMotion, face_quality, picture_sharpness

_BUFFER_MARGIN = 1.25  # buffered frames keep 1.25x the pixels the output crop needs
_BUFFER_WINDOW = 3.0  # and only a window this many crop sides wide around the face
# A window that would keep at least this share of its own pixels is kept as it is: the crop is
# then resampled once, at the clip's end, instead of twice, and a 1080p frame is not resized
# (~15 ms) for a reduction of a few percent. Memory: at most 1 / 0.8^2 = 1.56x the reduced window.
_BUFFER_NATIVE = 0.8
_MAX_FACELESS = 64  # whole-picture stats kept of frames with no face (why none was found)
_PICTURES_PER_CLIP = 4  # and of the frames of a clip whose face is not surely human
_ASK_PERSON = 0.5  # a sure face whose occlusion score is over this is shown to the pose model (face_person)
_PERSON_STRIDE = 2  # every 2nd faceless frame is shown to the pose model (whole picture)...
_MAX_PERSON_CALLS = 16  # ...16 pictures a source at most (~50 ms each)
_PERSON_SEEN = 0.5  # a picture shows a person: the pose model's face-keypoint visibility there
_PERSON_SHARE = 0.2  # a blurred source shows a person: in this share of the pictures looked at (docs/filters.md)
# Scorer cut-offs that shape a verdict besides the thresholds of the config:
_N_FACES_QUANTILE = 0.8  # a clip's n_faces: faces seen in at least 20% of frames (one spurious detection is not)
_BLOWN_SHARE = 0.5  # share of the picture at >= 240 grey: blown out (a faceless source's reason 'lighting')


class SamplingConfig(Settings):
    """The ``sampling:`` section of the build config."""

    fps: float = Field(12.5, gt=0, description="frames per second sampled from videos and stored")
    max_image_side: int = Field(4096, ge=256, description="larger images are reduced before analysis")
    max_image_pixels: int = Field(
        DEFAULT_PIXEL_BUDGET,
        ge=1_000_000,
        description="pixel budget of one decoded image "
        "(after JPEG draft reduction): a larger one is an error, judged from its header before decoding",
    )
    # 4: on the fixture videos, 1.9 ms a frame less than 2 (5% of curation), clip scores within
    # 0.40 of every frame's (threshold 5.0) and no verdict changed; the development set's
    # figures are unchanged (bench/bench_rates.py, docs/filters.md).
    motion_every: int = Field(4, ge=1, description="background motion is measured between every k-th sampled frame")
    detect_every: int = Field(
        3, ge=1, description="all faces are detected every k-th sampled frame; the mesh tracks in between"
    )


class Thresholds(Settings):
    """Verdict thresholds. Names are the parameters of manifests/sql/rethreshold.sql.

    Set from the distributions measured on the labelled development set (real clean media
    and strong degradations of them, `bench/bench_filters.py`); docs/filters.md gives the
    figures and each score's blind spots.
    """

    min_crop_source_px: float = Field(256, description="source pixels behind the crop side")
    min_face_px: float = Field(100, description="face box side in source pixels")
    min_face_frac: float = Field(0.15, description="face side / crop side")
    max_pad_frac: float = Field(0.25, description="share of the crop outside the frame")
    max_face_cut: float = Field(0.05, description="share of the face outside the frame (reason padding)")
    max_faces: int = Field(1, description="faces in one frame")
    min_face_conf: float = Field(
        0.6, description="detector confidence: below it the face is not surely a face (reason no_face)"
    )
    min_face_human: float = Field(
        0.5, description="person probability inside the face oval: animals score ~0 (reason no_face)"
    )
    min_face_person: float = Field(
        0.5, description="pose-model visibility of the face's keypoints: people 0.97-1, animals 0 (reason no_face)"
    )
    max_frame_occlusion: float = Field(
        0.5, description="a frame is occluded above this (0 = clear, 1 = mouth or an eye covered)"
    )
    max_occluded_share: float = Field(0.2, description="share of a clip's frames that may be occluded")
    min_lighting_mean: float = Field(45, description="face luma, 0..255")
    max_lighting_mean: float = Field(220)
    min_lighting_std: float = Field(10, description="face luma spread: flat faces are washed out")
    max_lighting_clipped: float = Field(0.2, description="share of face pixels crushed or blown")
    max_bg_motion: float = Field(5.0, description="% of the frame diagonal per second")
    min_sharpness: float = Field(
        0.036, description="fine-band RMS / luma spread of the face at training scale (reason blur)"
    )
    min_detail_4x: float = Field(
        0.077, description="face spectral energy above a 4x-smaller source's limit, less its mirror copy "
        "(detail_4x * (1 - mirror_4x)), over that below: under it the source is taken for 4x upscaled and judged "
        "by a quarter of its pixels (reason resolution)"
    )
    min_detail_train: float = Field(
        0.035, description="whitened fine-band over reference-band power of the face at training scale (reason blur)"
    )
    min_clip_s: float = Field(1.0, description="video clip duration, seconds")

    def as_params(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.model_dump().items()}


@dataclass
class FrameRecord:
    index: int
    t: float
    landmarks: np.ndarray  # (478, 2) frame pixels
    face_box: np.ndarray  # (4,) frame pixels, from the landmarks
    face_conf: float
    n_faces: int
    human: float | None  # person probability inside the face oval
    person: float | None  # pose-model visibility of this face's keypoints (0: no person's face)
    face_cut: float  # share of the face's landmark box outside the picture
    occlusion: float
    lighting: dict
    sharpness: float
    detail_4x: float | None  # measured on detection frames only (a 256-px FFT)
    mirror_4x: float | None  # detection frames only (the same patch)
    detail_train: float | None  # detection frames only (the training-scale face's FFT)
    bg_motion: float | None
    image: np.ndarray  # a window of the frame around the face, resized by ``scale``
    scale: float
    origin: tuple[int, int]  # the window's top-left corner in frame pixels
    frame_size: tuple[int, int]  # (width, height) of the analysed frame


class CurateStage(Stage):
    """A source's clips, scores and verdicts, and the JPEG crops of its kept clips' frames."""

    name = "curate"
    resources = Resources(num_cpus=1)

    def __init__(self, *, sampling: SamplingConfig, clips: ClipsConfig, crop: CropConfig, faces: FacesConfig,
                 thresholds: Thresholds):
        self.fps = sampling.fps
        self.max_image_pixels = sampling.max_image_pixels
        self.detect_every = sampling.detect_every
        self.motion_every = sampling.motion_every
        self.max_image_side = sampling.max_image_side
        self.min_occluded_s = float(clips.min_occluded_s)
        self.clip_settings = clips
        self.out_size = int(crop.out_size)
        self.crop_scale = float(crop.scale)
        self.shift_down = float(crop.shift_down)
        self.jpeg_quality = int(crop.jpeg_quality)
        self.thresholds = thresholds.as_params()  # judge() and the rethreshold query take plain floats
        self.face_settings = faces
        self.faces: FaceAnalyzer | None = None
        self.motion = None
        self._pictures: list[dict] = []  # whole-picture stats of this source's clips without a human face
        self._person_calls = 0  # pose-model calls on whole pictures for this source

    @classmethod
    def weight_files(cls, *, faces: FacesConfig, **_) -> dict[str, str]:
        return {"faces.detector_path": faces.detector_path or ""} if faces.detector == "scrfd" else {}

    def _analyzer(self) -> FaceAnalyzer:
        f = self.face_settings
        return FaceAnalyzer(min_confidence=f.min_confidence, check_hands=f.hands, detector=f.detector,
                            detector_path=f.detector_path)

    def setup(self) -> None:
        self.faces = self._analyzer()
        self.faces.setup()
        self.motion = BackgroundMotion()
        self.motion.setup()

    def describe(self) -> dict:
        return {"curate": {"faces": self._analyzer().describe(), "background_motion": BackgroundMotion().describe()}}

    # -- one source -----------------------------------------------------------------------
    def process(self, work: SourceWork) -> SourceWork:
        if self.faces is None:
            self.setup()
        self.faces.start_source()
        self._pictures = []
        self._person_calls = 0
        spec, path, row = work.spec, work.media_path, work.source
        faceless: list[dict] = []  # whole-picture stats of frames with no face (why none was found)
        try:
            info = probe(path, spec.media_type, self.max_image_pixels)
            for name, value in info.as_row().items():
                setattr(row, name, value)  # a probe field the record lacks is an AttributeError
            if spec.media_type == "image":
                self._image(spec, path, info, work, faceless)
            else:
                self._video(spec, path, info, work, faceless)
        except StageError as e:
            return work.fail(e.stage, e.message)
        except MemoryError:
            return work.fail(self.name, "out of memory", kind=INFRA)
        kept = sum(c.verdict == KEPT for c in work.clips)
        row.n_clips, row.n_kept = len(work.clips), kept
        if kept:
            row.status, row.reasons = KEPT, []
        elif work.clips and not all(_shows_no_person(c, self.thresholds) for c in work.clips):
            row.status = REJECTED
            row.reasons = _source_reasons(work.clips, self.thresholds["min_clip_s"])
        elif work.clips:
            # Faces were found, none surely human (an animal, a pattern in a scene without
            # people): the source is judged as a picture without a face, whatever its clips show.
            row.status, row.reasons = REJECTED, faceless_reasons(faceless + self._pictures, self.thresholds)
        else:
            row.status, row.reasons = REJECTED, faceless_reasons(faceless, self.thresholds)
        return work

    def _image(self, spec: SourceSpec, path: str, info: ProbeResult, work: SourceWork, faceless: list) -> None:
        rgb = read_image(path, self.max_image_side, self.max_image_pixels)
        seed = self._seed(spec.clips[0] if spec.clips else None, rgb)
        obs = self.faces.analyze(rgb, seed=seed)
        if obs.landmarks is None:
            faceless.append(self._picture(rgb, ask_person=True))
            return
        source_px = info.width / rgb.shape[1]  # source pixels per analysed pixel
        rec = self._record(Frame(0, 0.0, rgb), obs, bg_motion=None, detected=True)
        self._close_clip(spec, work, [rec], spec.clips[0] if spec.clips else None, clipping.END, source_px)

    def _video(self, spec: SourceSpec, path: str, info: ProbeResult, work: SourceWork, faceless: list) -> None:
        reader = VideoReader(path, info.rotation)
        splitter = clipping.ClipSplitter.from_settings(self.clip_settings)
        ranges = spec.clips or [ClipSpec(start_s=0.0, end_s=None)]
        for rng in ranges:
            splitter.reset()
            self.motion.reset()
            previous, open_clip, seed, since_reset, last = None, [], None, 0, None
            for i, frame in enumerate(reader.frames(self.fps, rng.start_s, rng.end_s)):
                work.report(frame.t, info.duration_s)
                if seed is None and rng.box is not None:
                    seed = self._seed(rng, frame.rgb)
                # Full detection every detect_every-th frame; in between the mesh follows the face.
                track = last if i % self.detect_every else None
                obs = last = self.faces.analyze(frame.rgb, previous=previous, seed=seed, track=track, carry=last)
                box = obs.face_box
                reason = splitter.break_before(frame.t, box, clipping.frame_histogram(frame.rgb))
                if reason is not None:
                    self._close_clip(spec, work, open_clip, rng, reason, 1.0)
                    open_clip = []
                    self.motion.reset()
                    since_reset = 0
                # Background motion is measured between every motion_every-th sampled frame
                # (normalised per second, so the stride does not change its scale).
                motion = self.motion.update(frame.rgb, frame.t) if since_reset % self.motion_every == 0 else None
                since_reset += 1
                if box is None:
                    previous = None
                    if track is None and len(faceless) < _MAX_FACELESS:
                        faceless.append(self._picture(frame.rgb, ask_person=len(faceless) % _PERSON_STRIDE == 0))
                    continue
                previous = obs.boxes[obs.primary]
                open_clip.append(self._record(frame, obs, motion if open_clip else None, detected=track is None))
            self._close_clip(spec, work, open_clip, rng, clipping.END, 1.0)

    def _picture(self, rgb: np.ndarray, ask_person: bool) -> dict:
        """Whole-picture stats of a frame without a (human) face: sharpness and blown share, and,
        for at most ``_MAX_PERSON_CALLS`` pictures of a source, whether the pose model finds a
        person in it (``faceless_reasons``)."""
        stats = picture_sharpness(rgb)
        if ask_person and self._person_calls < _MAX_PERSON_CALLS:
            self._person_calls += 1
            stats["person"] = self.faces.person_in(np.ascontiguousarray(rgb))
        return stats

    def _seed(self, rng: ClipSpec | None, rgb: np.ndarray) -> np.ndarray | None:
        if rng is None or rng.box is None:
            return None
        box = rng.box.to_frame(rgb.shape[1], rgb.shape[0])
        return None if box is None else np.asarray(box, dtype=np.float64)

    def _record(self, frame: Frame, obs, bg_motion, detected: bool) -> FrameRecord:
        rgb, lm = frame.rgb, obs.landmarks
        box = obs.face_box
        face = max(box[2] - box[0], box[3] - box[1])
        h, w = rgb.shape[:2]
        need = min(self.crop_scale * face, float(min(h, w)))
        # Buffer only what the clip's crop can use: a window around the face, at the resolution
        # the output needs. Memory per buffered frame is then bounded whatever the video size.
        half = _BUFFER_WINDOW * need / 2
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(w, np.ceil(cx + half))), int(min(h, np.ceil(cy + half)))
        window = rgb[y0:y1, x0:x1]
        scale = min(1.0, _BUFFER_MARGIN * self.out_size / max(need, 1.0))
        if scale >= _BUFFER_NATIVE:
            scale = 1.0
        image = (
            window.copy()
            if scale >= 1.0
            else cv2.resize(window, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        )
        q = face_quality(rgb, lm, hands=obs.hands, training_face_side=self.out_size / self.crop_scale,
                         spectrum=detected)
        if detected and obs.person is None and q["occlusion"] > _ASK_PERSON:
            # The mouth or eyes do not look like a person's: is this a person's face at all (an
            # animal's scores the same)? The pose model is asked once, the track carries it.
            self.faces.ask_person(rgb, obs)
        return FrameRecord(
            index=frame.index,
            t=frame.t,
            landmarks=lm,
            face_box=box,
            face_conf=obs.face_score,
            n_faces=obs.significant_faces(),
            human=obs.human,
            person=obs.person,
            face_cut=_outside_share(box, w, h),
            occlusion=q["occlusion"],
            lighting={"mean": q["lighting_mean"], "std": q["lighting_std"], "clipped": q["lighting_clipped"]},
            sharpness=q["sharpness"],
            detail_4x=q.get("detail_4x"),
            mirror_4x=q.get("mirror_4x"),
            detail_train=q.get("detail_train"),
            bg_motion=bg_motion,
            image=image,
            scale=image.shape[1] / window.shape[1],
            origin=(x0, y0),
            frame_size=(w, h),
        )

    # -- one clip -------------------------------------------------------------------------
    def _close_clip(self, spec: SourceSpec, work: SourceWork, recs: list[FrameRecord], rng: ClipSpec | None,
                    split_reason: str, source_px: float):
        """Judge the frames of one face track; an occluded stretch inside it becomes a clip of
        its own, so the clean parts around it are kept (split_reason 'occlusion')."""
        parts = occlusion_runs([r.occlusion for r in recs], self.thresholds["max_frame_occlusion"],
                               max(2, int(round(self.min_occluded_s * self.fps))))
        for k, (a, b) in enumerate(parts):
            self._judge_clip(spec, work, recs[a:b], rng, split_reason if k == len(parts) - 1 else clipping.OCCLUSION,
                             source_px)

    def _judge_clip(self, spec: SourceSpec, work: SourceWork, recs: list[FrameRecord], rng: ClipSpec | None,
                    split_reason: str, source_px: float):
        if not recs:
            return
        clip_index = len(work.clips)
        boxes = np.stack([r.face_box for r in recs])
        crop = plan_crop(boxes, *recs[0].frame_size, self.crop_scale, self.shift_down)
        start = recs[0].t
        end = recs[-1].t + 1.0 / self.fps
        if rng is not None and rng.end_s is not None:
            end = min(end, rng.end_s)
        if spec.media_type == "image":
            end = start
        judged = {
            "clip_id": f"{spec.source_id}-{clip_index:04d}", "source_id": spec.source_id, "dataset": spec.dataset,
            # A dataset clip may name its own person (several people in one VFHQ raw video).
            "identity": (rng.identity if rng is not None else None) or spec.identity, "split": spec.split,
            "labels": _clip_labels(spec, rng),
            "media_type": spec.media_type, "clip_index": clip_index, "start_s": float(start), "end_s": float(end),
            "n_frames": len(recs), "fps": None if spec.media_type == "image" else self.fps,
            "split_reason": split_reason,
            "crop_x0": float(crop.x0 * source_px), "crop_y0": float(crop.y0 * source_px),
            "crop_size": float(crop.size * source_px), "out_size": self.out_size, "run_id": work.run_id,
        }
        judged.update(_aggregate(recs, crop, source_px, self.thresholds["max_frame_occlusion"]))
        verdict, reasons = judge(judged, self.thresholds)
        if not_a_face(judged, self.thresholds) and len(self._pictures) < _MAX_FACELESS:
            # Why the source may show no human face: the pictures around this face (the buffered
            # windows, a few per clip), read only for clips without one.
            step = max(1, len(recs) // _PICTURES_PER_CLIP)
            self._pictures.extend(self._picture(r.image, ask_person=True) for r in recs[::step][:_PICTURES_PER_CLIP])
        clip = ClipRow(**judged, verdict=verdict, reasons=reasons,
                       thumbnails=None if verdict == KEPT else self._thumbnails(recs, crop))
        work.clips.append(clip)
        if verdict == KEPT:
            work.frames.extend(self._frames(clip, recs, crop))

    def _thumbnails(self, recs: list[FrameRecord], crop: Crop, n: int = 4, side: int = 128) -> list[bytes]:
        """A few evenly spaced 128-px crops of a rejected clip, to audit what a filter threw away."""
        picks = sorted({int(round(i)) for i in np.linspace(0, len(recs) - 1, min(n, len(recs)))})
        out = []
        for i in picks:
            r = recs[i]
            local = Crop(crop.x0 - r.origin[0], crop.y0 - r.origin[1], crop.size, crop.pad_frac)
            out.append(encode_jpeg(crop_image(r.image, local, side, frame_scale=r.scale), 85))
        return out

    def _frames(self, clip: ClipRow, recs: list[FrameRecord], crop: Crop) -> list[FrameRow]:
        rows = []
        for i, r in enumerate(recs):
            # The crop relative to this frame's buffered window (outside it: black, as padding).
            local = Crop(crop.x0 - r.origin[0], crop.y0 - r.origin[1], crop.size, crop.pad_frac)
            rgb = crop_image(r.image, local, self.out_size, frame_scale=r.scale)
            box = crop.to_crop(r.face_box.reshape(2, 2), self.out_size).reshape(4)
            rows.append(
                FrameRow(
                    clip_id=clip.clip_id,
                    source_id=clip.source_id,
                    frame_index=i,
                    source_frame=r.index,
                    timestamp_s=r.t,
                    view=0,
                    jpeg=encode_jpeg(rgb, self.jpeg_quality),
                    face_box=box.astype(np.float32).tolist(),
                    face_conf=r.face_conf,
                    landmarks=tensors.encode(crop.to_crop(r.landmarks, self.out_size), "float32"),
                )
            )
        return rows


def _clip_labels(spec: SourceSpec, rng: ClipSpec | None) -> dict:
    labels = dict(spec.labels)
    if rng is not None:
        labels.update(rng.labels)
        if rng.key:
            labels["clip_key"] = rng.key  # the dataset's own clip name
    return labels


def occlusion_runs(occlusion: list[float], level: float, min_run: int) -> list[tuple[int, int]]:
    """[start, end) index ranges splitting a track at occluded stretches of at least ``min_run``
    frames (shorter flickers stay inside their clip; the share rule judges them). Clean and
    occluded stretches alternate; a clean gap shorter than ``min_run`` between two occluded
    stretches is occluded with them (a hand going down and up again)."""
    runs = _runs([[o is not None and o > level, i, i + 1] for i, o in enumerate(occlusion)])
    for r in runs:  # short occluded runs are noise inside a clean clip
        if r[0] and r[2] - r[1] < min_run:
            r[0] = False
    runs = _runs(runs)
    for k in range(1, len(runs) - 1):  # short clean gaps between occluded runs join them
        if not runs[k][0] and runs[k][2] - runs[k][1] < min_run and runs[k - 1][0] and runs[k + 1][0]:
            runs[k][0] = True
    return [(a, b) for _, a, b in _runs(runs)]


def _runs(parts: list[list]) -> list[list]:
    """Consecutive [flag, start, end) parts with the same flag merged into one."""
    out: list[list] = []
    for flag, a, b in parts:
        if out and out[-1][0] == flag:
            out[-1][2] = b
        else:
            out.append([flag, a, b])
    return out


def faceless_reasons(stats: list[dict], thresholds: dict) -> list[str]:
    """Why a source without any (human) face found was rejected: ``no_face``, unless the picture
    itself is blown out, or strongly blurred with a person in it (a face there cannot be found,
    nor judged): then ``lighting`` or ``blur``, which a curator would name. Medians over the
    pictures looked at (frames without a face, and frames of clips whose face is not surely
    human). A blurred source where the pose model finds a person in under a fifth of the
    pictures it looked at is ``no_face``: a soft, out-of-focus scene without people is not a
    blurred person (a blown-out picture hides the person from the pose model too: not asked)."""
    if not stats:
        return ["no_face"]
    reasons = []
    if np.median([s["blown"] for s in stats]) > _BLOWN_SHARE:
        reasons.append("lighting")
    persons = [s["person"] for s in stats if s.get("person") is not None]
    person_seen = not persons or np.mean([p >= _PERSON_SEEN for p in persons]) >= _PERSON_SHARE
    if np.median([s["sharpness"] for s in stats]) < thresholds["min_sharpness"] and person_seen:
        reasons.append("blur")
    return reasons or ["no_face"]


def _source_reasons(clips: list[ClipRow], min_clip_s: float) -> list[str]:
    """Why a source kept nothing: the reasons of its clips judged on their content. Fragments
    (clips under ``min_clip_s``, scored on a few frames) only speak when nothing else does."""
    judged = [c for c in clips if c.media_type == "image" or c.end_s - c.start_s >= min_clip_s]
    reasons = {r for c in (judged or clips) for r in c.reasons}
    # Only fragments: the face kept being lost, and what the fragments show says why.
    return sorted(reasons - {"too_short"} or reasons)


def _shows_no_person(clip: ClipRow, thresholds: dict) -> bool:
    """The clip's face fails the human checks (manifests/verdicts.py: not_a_face) and is not too
    bright to tell: a blown-out face hides what it is from both person models (the pose model
    finds no one in white), while a dark face does not (dark people score 0.97-1 there)."""
    blown = clip.lighting_mean is not None and clip.lighting_mean > thresholds["max_lighting_mean"]
    return not blown and not_a_face({"face_human": clip.face_human, "face_conf": clip.face_conf,
                                     "face_person": clip.face_person}, thresholds)


def _outside_share(box: np.ndarray, width: int, height: int) -> float:
    """Share of a box's area outside the picture (a face cut by the frame border)."""
    area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-6)
    inside = max(0.0, min(box[2], width) - max(box[0], 0.0)) * max(0.0, min(box[3], height) - max(box[1], 0.0))
    return float(min(1.0, max(0.0, 1.0 - inside / area)))


def _median(values) -> float | None:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(vals)) if vals else None


def _aggregate(recs: list[FrameRecord], crop: Crop, source_px: float, occlusion_level: float) -> dict:
    """Clip-level scores (one column each) and the per-frame lists behind them."""
    faces = [max(r.face_box[2] - r.face_box[0], r.face_box[3] - r.face_box[1]) * source_px for r in recs]
    occl = [r.occlusion for r in recs]
    n_faces = sorted(r.n_faces for r in recs)
    motion = [r.bg_motion for r in recs]
    face_px = float(np.median(faces))
    crop_px = crop.size * source_px
    return {
        "crop_source_px": float(crop_px),
        "face_px": face_px,
        "face_frac": face_px / crop_px,
        "pad_frac": float(crop.pad_frac),
        # Faces seen in at least 20% of frames: one spurious detection does not reject a clip.
        "n_faces": int(n_faces[int(np.floor(_N_FACES_QUANTILE * (len(n_faces) - 1)))]),
        "face_conf": _median(r.face_conf for r in recs),
        "face_human": _median(r.human for r in recs),
        "face_person": _median(r.person for r in recs),
        "face_cut": _median(r.face_cut for r in recs),
        "occlusion": _median(occl),
        "occluded_share": occluded_share(occl, occlusion_level),
        "lighting_mean": _median(r.lighting["mean"] for r in recs),
        "lighting_std": _median(r.lighting["std"] for r in recs),
        "lighting_clipped": _median(r.lighting["clipped"] for r in recs),
        "bg_motion": _median(motion),
        "sharpness": _median(r.sharpness for r in recs),
        "detail_4x": _median(r.detail_4x for r in recs),
        "mirror_4x": _median(r.mirror_4x for r in recs),
        "detail_train": _median(r.detail_train for r in recs),
        "face_px_frames": [float(f) for f in faces],
        "occlusion_frames": [float(o) for o in occl],
        "lighting_frames": [float(r.lighting["mean"]) for r in recs],
        "bg_motion_frames": [None if m is None else float(m) for m in motion],
        "sharpness_frames": [float(r.sharpness) for r in recs],
    }
