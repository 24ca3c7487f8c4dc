"""Quality scorers on the real fixture media and on deterministic degraded variants of them.

Scores are aggregated as the clip stage stores them (medians, 90th percentile for occlusion)
and judged with ``manifests.verdicts.judge`` against the proposed default thresholds, so a
test fails when a clean fixture would be rejected or a degraded one kept.
"""
from __future__ import annotations

import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from manifests.schemas import CLIP_SCORES
from manifests.verdicts import judge
from pipeline.config import Thresholds
from stages.crop import plan_crop
from stages.quality import BackgroundMotion, QualityInputError, blur_score, lighting_stats, occlusion_score

sys.path.insert(0, str(Path(__file__).parent))
import degrade  # noqa: E402

# The defaults proposed for pipeline/config.py Thresholds (calibrated on every fixture, see the
# quality report); the test checks verdicts against exactly these.
PROPOSED = dict(
    min_lighting_mean=45.0,
    max_lighting_mean=220.0,
    min_lighting_std=10.0,
    max_lighting_clipped=0.2,
    max_occlusion=0.5,
    max_bg_motion=5.0,
    min_blur=30.0,
)
T = Thresholds(**PROPOSED)
HUMAN_IMAGES = ["d19", "d9", "s1", "s12", "s2"]  # photographs of real people


# ------------------------------------------------------------------------------------ helpers

@pytest.fixture(scope="module")
def analyzer():
    from stages.faces import FaceAnalyzer

    fa = FaceAnalyzer()
    fa.setup()
    yield fa
    fa.close()


@pytest.fixture(scope="module")
def motion():
    bm = BackgroundMotion()
    bm.setup()
    yield bm
    bm.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("degraded")


def sample(path, fps: float, max_frames: int | None = None, start_s: float = 0.0):
    """(t, rgb) of the frames shown at start_s, start_s + 1/fps, ..."""
    out = []
    with av.open(str(path)) as c:
        nxt = start_s
        for f in c.decode(video=0):
            t = float(f.time)
            if t + 1e-6 >= nxt:
                nxt += 1.0 / fps
                out.append((t, f.to_ndarray(format="rgb24")))
                if max_frames and len(out) >= max_frames:
                    break
    return out


def face_scores(analyzer, frames) -> dict:
    """Per-frame scores of the primary face, aggregated as the clip stage stores them."""
    occ, mean, std, clipped, blur, boxes = [], [], [], [], [], []
    prev = None
    for _, rgb in frames:
        obs = analyzer.analyze(rgb, previous=prev)
        if obs.landmarks is None:
            continue
        prev = obs.face_box
        boxes.append(obs.face_box)
        o = occlusion_score(rgb, obs.landmarks)
        occ.append(max(o["mouth"], o["eyes"]))
        light = lighting_stats(rgb, obs.landmarks)
        mean.append(light["mean"])
        std.append(light["std"])
        clipped.append(light["clipped"])
        blur.append(blur_score(rgb, obs.landmarks))
    assert boxes, "no face found in the sampled frames"
    return {
        "occlusion": float(np.percentile(occ, 90)),
        "lighting_mean": float(np.median(mean)),
        "lighting_std": float(np.median(std)),
        "lighting_clipped": float(np.median(clipped)),
        "blur": float(np.median(blur)),
        "boxes": np.array(boxes),
    }


def bg_motion(motion: BackgroundMotion, frames) -> float:
    motion.reset()
    values = [v for v in (motion.update(rgb, t) for t, rgb in frames) if v is not None]
    return float(np.median(values))


def verdict(scores: dict, media_type: str = "video") -> tuple[str, list[str]]:
    clip = {name: scores.get(name) for name, _ in CLIP_SCORES}
    clip.update(media_type=media_type, start_s=0.0, end_s=10.0)
    return judge(clip, T.as_params())


def landmarks_of(analyzer, rgb):
    obs = analyzer.analyze(rgb)
    assert obs.landmarks is not None
    return obs.landmarks


# ------------------------------------------------------------------------ clean fixtures kept

@pytest.mark.parametrize("name", ["d0", "d3", "d9", "s18", "s20"])
def test_clean_videos_are_kept(media_dir, analyzer, motion, name):
    path = media_dir / "videos" / f"{name}.mp4"
    scores = face_scores(analyzer, sample(path, fps=2.0, max_frames=16))
    scores["bg_motion"] = bg_motion(motion, sample(path, fps=5.0, max_frames=25))
    assert verdict(scores) == ("kept", []), scores


@pytest.mark.parametrize("name", HUMAN_IMAGES)
def test_clean_photos_are_kept(media_dir, analyzer, name):
    from stages.decode import read_image

    rgb = read_image(str(media_dir / "images" / f"{name}.jpg"), 4096)
    scores = face_scores(analyzer, [(0.0, rgb)])
    assert verdict(scores, "image") == ("kept", []), scores


# ------------------------------------------------------------------------- degraded rejected

def test_darkened_d3_is_rejected_for_lighting(media_dir, analyzer, work):
    src = media_dir / "videos" / "d3.mp4"
    dark = degrade.darken(src, work / "d3_dark.mp4", factor=0.25, max_frames=150)
    clean = face_scores(analyzer, sample(src, fps=3.0, max_frames=15))
    darkened = face_scores(analyzer, sample(dark, fps=3.0, max_frames=15))
    assert darkened["lighting_mean"] < 0.5 * clean["lighting_mean"]
    assert "lighting" not in verdict(clean)[1]
    assert "lighting" in verdict(darkened)[1]


def test_moving_background_on_d0_is_rejected(media_dir, motion, work):
    src = media_dir / "videos" / "d0.mp4"
    moving = degrade.replace_green_background(src, work / "d0_bg.mp4", texture_seed=3)
    # The composite keeps the frame count and rate of the source.
    assert degrade._count_frames(moving) == degrade._count_frames(src)
    clean = bg_motion(motion, sample(src, fps=12.5))
    replaced = bg_motion(motion, sample(moving, fps=12.5))
    assert replaced > 3 * max(clean, 1.0)
    assert verdict({"bg_motion": clean}) == ("kept", [])
    assert verdict({"bg_motion": replaced})[1] == ["background_motion"]


def test_mouth_patch_on_d9_is_rejected_for_occlusion(media_dir, analyzer, work):
    src = media_dir / "videos" / "d9.mp4"
    patched = degrade.mouth_patch(src, work / "d9_patch.mp4", fraction=0.8, colour=(200, 170, 150),
                                  analyzer=analyzer, max_frames=120)
    clean = face_scores(analyzer, sample(src, fps=5.0, max_frames=20))
    covered = face_scores(analyzer, sample(patched, fps=5.0, max_frames=20))
    assert "occlusion" not in verdict(clean)[1]
    assert "occlusion" in verdict(covered)[1]


def test_downscaled_d3_is_rejected_for_resolution(media_dir, analyzer, work):
    src = media_dir / "videos" / "d3.mp4"
    small = degrade.downscale(src, work / "d3_small.mp4", factor=4, max_frames=60)
    for path, expected in ((src, False), (small, True)):
        frames = sample(path, fps=2.0, max_frames=4)
        h, w = frames[0][1].shape[:2]
        scores = face_scores(analyzer, frames)
        crop = plan_crop(scores["boxes"], w, h, scale=3.2, shift_down=0.35)
        sides = np.maximum(scores["boxes"][:, 2] - scores["boxes"][:, 0], scores["boxes"][:, 3] - scores["boxes"][:, 1])
        scores.update(crop_source_px=float(crop.size), face_px=float(np.median(sides)))
        assert ("resolution" in verdict(scores)[1]) == expected, scores


# ----------------------------------------------------------------------- occluders on images

OCCLUDERS = {
    "black patch": lambda rgb, lm, where: degrade.paint_patch(rgb, lm, where, (10, 10, 10)),
    "white patch": lambda rgb, lm, where: degrade.paint_patch(rgb, lm, where, (245, 245, 245)),
    "blue patch": lambda rgb, lm, where: degrade.paint_patch(rgb, lm, where, (40, 60, 200)),
    "red patch": lambda rgb, lm, where: degrade.paint_patch(rgb, lm, where, (200, 40, 40)),
    "skin-tone patch": lambda rgb, lm, where: degrade.paint_patch(rgb, lm, where, "skin"),
    "hand": degrade.paint_hand,
}


@pytest.fixture(scope="module")
def faces(media_dir, analyzer):
    """Real faces: the human photographs and one frame of each talking-head video."""
    from stages.decode import read_image

    out = {}
    for name in HUMAN_IMAGES:
        rgb = read_image(str(media_dir / "images" / f"{name}.jpg"), 4096)
        out[f"image {name}"] = (rgb, landmarks_of(analyzer, rgb))
    for name in ("d3", "s18", "s20"):
        _, rgb = sample(media_dir / "videos" / f"{name}.mp4", fps=1.0, max_frames=3)[-1]
        out[f"video {name}"] = (rgb, landmarks_of(analyzer, rgb))
    return out


def test_clean_faces_score_low_occlusion(faces):
    for name, (rgb, lm) in faces.items():
        o = occlusion_score(rgb, lm)
        assert set(o) == {"mouth", "eyes"}
        assert max(o.values()) < T.max_occlusion, (name, o)


@pytest.mark.parametrize("where", ["mouth", "eyes"])
@pytest.mark.parametrize("occluder", sorted(OCCLUDERS))
def test_occluders_score_high(faces, occluder, where):
    for name, (rgb, lm) in faces.items():
        covered = OCCLUDERS[occluder](rgb, lm, where)
        o = occlusion_score(covered, lm)
        assert o[where] > T.max_occlusion, (name, occluder, o)


@pytest.mark.parametrize("angle", [30.0, 60.0, 110.0])
def test_microphone_over_mouth_scores_high(faces, angle):
    for name, (rgb, lm) in faces.items():
        o = occlusion_score(degrade.paint_microphone(rgb, lm, angle), lm)
        assert o["mouth"] > T.max_occlusion, (name, angle, o)


# ---------------------------------------------------------------------- lighting, blur, motion

def test_lighting_follows_exposure(faces):
    rgb, lm = faces["image s1"]
    base = lighting_stats(rgb, lm)
    assert 0 <= base["clipped"] <= 1 and base["std"] > 0
    dark = lighting_stats((rgb * 0.3).astype(np.uint8), lm)
    blown = lighting_stats(np.clip(rgb.astype(np.int32) * 3, 0, 255).astype(np.uint8), lm)
    assert dark["mean"] < base["mean"] < blown["mean"]
    assert blown["clipped"] > T.max_lighting_clipped > base["clipped"]


def test_blur_is_resolution_independent_and_sees_blur(faces):
    rgb, lm = faces["image s1"]
    sharp = blur_score(rgb, lm)
    half = cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    assert 0.6 < blur_score(half, lm * 0.5) / sharp < 1.6  # same face, half the pixels
    blurred = cv2.GaussianBlur(rgb, (0, 0), rgb.shape[0] / 150)
    assert blur_score(blurred, lm) < T.min_blur < sharp


def test_camera_shake_counts_as_background_motion(faces, motion):
    rgb, _ = faces["video s18"]
    h, w = rgb.shape[:2]
    motion.reset()
    still = [motion.update(rgb, i / 12.5) for i in range(4)]
    assert still[0] is None and max(still[1:]) < 0.5
    # The whole frame jitters by ~1% of its diagonal per sample (a shaking camera).
    motion.reset()
    rng = np.random.default_rng(0)
    shaken = []
    for i in range(6):
        dx, dy = rng.uniform(-1, 1, 2) * 0.01 * np.hypot(h, w)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        shaken.append(motion.update(cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT), i / 12.5))
    assert np.median(shaken[1:]) > T.max_bg_motion


def test_bad_inputs_raise_clear_errors(faces):
    rgb, lm = faces["image s1"]
    with pytest.raises(QualityInputError, match="landmarks"):
        occlusion_score(rgb, lm[:10])
    with pytest.raises(QualityInputError, match="uint8"):
        lighting_stats(rgb.astype(np.float32), lm)
    bad = lm.copy()
    bad[0, 0] = np.nan
    with pytest.raises(QualityInputError, match="NaN"):
        blur_score(rgb, bad)


def test_face_quality_matches_the_single_scorers(faces):
    from stages.quality import face_quality

    rgb, lm = faces["video s20"]
    together = face_quality(rgb, lm)
    occ, light = occlusion_score(rgb, lm), lighting_stats(rgb, lm)
    assert together == pytest.approx({
        "occlusion_mouth": occ["mouth"], "occlusion_eyes": occ["eyes"], "lighting_mean": light["mean"],
        "lighting_std": light["std"], "lighting_clipped": light["clipped"], "blur": blur_score(rgb, lm),
    })
