"""Deterministic awkward inputs made from the real fixtures (for tests of every-input-accounted)."""
from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image


def read_frames(video: Path, limit: int | None = None) -> tuple[list[np.ndarray], float]:
    frames = []
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate)
        for f in c.decode(s):
            frames.append(f.to_ndarray(format="rgb24"))
            if limit and len(frames) >= limit:
                break
    return frames, fps


def frames_at(video: Path, indices) -> list[np.ndarray]:
    """RGB frames of ``video`` at the given decode-order indices (in the order asked)."""
    wanted, out = set(indices), {}
    with av.open(str(video)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if len(out) == len(wanted):
                break
    return [out[i] for i in indices]


def write_video(path: Path, frames, fps: float = 25, pts_ms: list[int] | None = None, rotation_ccw: int = 0) -> Path:
    """H.264 mp4; ``pts_ms`` gives per-frame timestamps (variable rate); display rotation optional."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        h, w = frames[0].shape[:2]
        s.height, s.width, s.pix_fmt = h - h % 2, w - w % 2, "yuv420p"
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation_ccw:
            s.set_display_rotation(rotation_ccw)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: s.height, : s.width]), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def make_bad_inputs(folder: Path, media: Path) -> dict[str, Path]:
    """Every awkward input the issue names, in ``folder``; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    out["zero_byte"] = folder / "zero.mp4"
    out["zero_byte"].write_bytes(b"")
    out["text_as_mp4"] = folder / "notes.mp4"
    out["text_as_mp4"].write_text("this is not a video\n" * 20)
    src = (media / "videos" / "d0.mp4").read_bytes()
    out["truncated_mp4"] = folder / "truncated.mp4"
    out["truncated_mp4"].write_bytes(src[: len(src) // 3])
    face = Image.open(media / "images" / "s1.jpg").convert("RGB")
    out["cmyk_jpeg"] = folder / "cmyk.jpg"
    face.convert("CMYK").save(out["cmyk_jpeg"], "JPEG", quality=90)
    rgba16 = np.dstack(
        [np.asarray(face)[..., ::-1].astype(np.uint16) * 257, np.full(face.size[::-1], 65535, np.uint16)]
    )
    out["png16_alpha"] = folder / "deep.png"
    cv2.imwrite(str(out["png16_alpha"]), rgba16)
    big = cv2.resize(np.asarray(face)[..., ::-1], (12000, 12000), interpolation=cv2.INTER_LINEAR)
    out["huge_image"] = folder / "huge.jpg"
    cv2.imwrite(str(out["huge_image"]), big, [cv2.IMWRITE_JPEG_QUALITY, 70])
    del big
    frames, fps = read_frames(media / "videos" / "d0.mp4", limit=50)
    # Stored a quarter turn clockwise, with a display matrix that turns it back (counter-clockwise).
    out["rotated_video"] = write_video(
        folder / "rotated.mp4", [np.rot90(f, k=-1) for f in frames], fps, rotation_ccw=90
    )
    rng = np.random.default_rng(0)
    pts = np.cumsum(rng.choice([20, 40, 80], size=len(frames))).tolist()
    out["vfr_video"] = write_video(folder / "vfr.mp4", frames, fps, pts_ms=[int(p) for p in pts])
    shutil.copy(media / "images" / "s23.jpg", folder / "animal.jpg")
    return out
