"""`make demo`: a sample dataset from photographs an installed package ships, built end to end.

scikit-image ships a real portrait photograph (``astronaut``) and photographs without people
(``chelsea``, a cat; ``coffee``). From them we make images and short videos with deterministic
head motion (a smooth similarity warp around the face), plus a dark and a tiny variant so the
summary shows rejections with their reasons. Then the real build runs on the embedded default,
and the summary, a named query and a contact sheet are produced.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

FPS = 25
SECONDS = 3.0


def _head_mask(shape: tuple[int, int], centre: tuple[float, float], radii: tuple[int, int]) -> np.ndarray:
    """A soft ellipse around the head: the head moves, the room behind it stays still."""
    mask = np.zeros(shape, np.float32)
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), radii, 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), 12)[..., None]


def _head_motion(img: np.ndarray, t: float, centre: tuple[float, float], mask: np.ndarray) -> np.ndarray:
    """A nod, a turn and a slow zoom of the head: deterministic, smooth in time."""
    angle = 5.0 * np.sin(2 * np.pi * 0.5 * t)
    scale = 1.0 + 0.03 * np.sin(2 * np.pi * 0.3 * t)
    m = cv2.getRotationMatrix2D(centre, angle, scale)
    m[0, 2] += 6 * np.sin(2 * np.pi * 0.4 * t)
    m[1, 2] += 3 * np.sin(2 * np.pi * 0.7 * t)
    moved = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return (mask * moved + (1 - mask) * img).astype(np.uint8)


def _write_video(path: Path, frames) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = out.add_stream("libx264", rate=FPS)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "20"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_sample_set(folder: Path) -> list[Path]:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    (folder / "videos").mkdir(exist_ok=True)
    astronaut = data.astronaut()
    face_centre = (250.0, 120.0)  # roughly her face in the 512x512 photograph
    mask = _head_mask(astronaut.shape[:2], face_centre, (95, 120))
    written = []
    for name, img in {
        "astronaut.png": astronaut,
        "chelsea_cat.png": data.chelsea(),
        "coffee.png": data.coffee(),
    }.items():
        p = folder / "images" / name
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        written.append(p)
    n = int(FPS * SECONDS)
    variants = {
        "talking_astronaut.mp4": lambda f: f,
        "dark_astronaut.mp4": lambda f: (f.astype(np.float32) * 0.12).astype(np.uint8),
        "tiny_astronaut.mp4": lambda f: cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA),
    }
    for name, fn in variants.items():
        p = folder / "videos" / name
        _write_video(p, (fn(_head_motion(astronaut, i / FPS, face_centre, mask)) for i in range(n)))
        written.append(p)
    return written


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import main as portrait

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    media = out / "sample_media"
    files = make_sample_set(media)
    print(f"made {len(files)} sample files in {media}")
    build_out = out / "build"
    code = portrait(["build", "--input", str(media), "--out", str(build_out)])
    if code:
        return code
    print("\nNamed query `rethreshold` with looser lighting and blur thresholds (no recompute):")
    portrait(["query", "--catalog", str(build_out / "catalog.duckdb"), "--named", "rethreshold",
              "--param", "min_lighting_mean=10", "--param", "min_lighting_std=2", "--param", "min_sharpness=0.05"])
    from pipeline.reporting.contact_sheet import write_contact_sheet

    sheet = out / "contact_sheet.png"
    shown = write_contact_sheet(build_out, sheet)
    print(f"\ncontact sheet of {shown} kept clip(s): {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
