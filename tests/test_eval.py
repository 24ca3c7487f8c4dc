"""`portrait devset` + build + `portrait eval` on a small labelled subset of the fixtures, and
the pieces of the curation that the figures rest on (occluded-stretch splitting, source reasons,
precision/recall arithmetic)."""
from __future__ import annotations

import csv

import pytest

from pipeline.cli import main as portrait
from pipeline.evaluation.evaluate import EvalReport, FileResult
from stages.curate import _source_reasons, occlusion_runs


def test_occluded_stretches_split_the_track_and_flickers_do_not():
    clean, occ = 0.1, 0.9
    frames = [clean] * 10 + [occ] * 6 + [clean] * 10
    assert occlusion_runs(frames, 0.5, min_run=4) == [(0, 10), (10, 16), (16, 26)]
    flicker = [clean] * 10 + [occ] * 2 + [clean] * 10
    assert occlusion_runs(flicker, 0.5, min_run=4) == [(0, 22)]
    # A short clean gap between two occluded stretches is one occluded stretch (a hand going down and up).
    gap = [clean] * 6 + [occ] * 5 + [clean] * 2 + [occ] * 5 + [clean] * 6
    assert occlusion_runs(gap, 0.5, min_run=4) == [(0, 6), (6, 18), (18, 24)]


def test_source_reasons_come_from_judged_clips_not_fragments():
    from types import SimpleNamespace as Clip  # the fields of a ClipRow that the rule reads

    clips = [
        Clip(media_type="video", start_s=0.0, end_s=5.0, reasons=["lighting"]),
        Clip(media_type="video", start_s=5.0, end_s=5.3, reasons=["too_short", "background_motion"]),
    ]
    assert _source_reasons(clips, 1.0) == ["lighting"]
    assert _source_reasons(clips[1:], 1.0) == ["background_motion"]  # fragments only: what they show
    only_fragment = Clip(media_type="video", start_s=5.0, end_s=5.3, reasons=["too_short"])
    assert _source_reasons([only_fragment], 1.0) == ["too_short"]


def test_a_source_without_a_persons_face_is_no_face_whatever_it_shows():
    """Pictures without a (human) face: blown out is lighting; blurred is blur only where the
    pose model finds a person in at least a fifth of them (a strongly blurred talking head), a
    soft scene without people is no_face; a source whose clips all show a face that is not a
    person's is judged so, unless the face is too bright to tell."""
    from types import SimpleNamespace as Clip

    from stages.curate import _shows_no_person, faceless_reasons

    t = {"min_sharpness": 0.036, "max_lighting_mean": 220.0, "min_face_human": 0.5, "min_face_conf": 0.6,
         "min_face_person": 0.5}
    soft = {"sharpness": 0.01, "blown": 0.0}
    assert faceless_reasons([{**soft, "person": 0.98}] * 3 + [{**soft, "person": 0.0}] * 9, t) == ["blur"]
    assert faceless_reasons([{**soft, "person": 0.97}] + [{**soft, "person": 0.0}] * 16, t) == ["no_face"]
    assert faceless_reasons([{"sharpness": 0.08, "blown": 0.9, "person": 0.0}] * 4, t) == ["lighting"]
    assert faceless_reasons([{"sharpness": 0.08, "blown": 0.0, "person": 0.0}] * 4, t) == ["no_face"]
    assert faceless_reasons([soft] * 4, t) == ["blur"]  # nobody asked: as before
    dog = Clip(face_human=0.9, face_conf=0.8, face_person=0.0, lighting_mean=110.0)
    blown = Clip(face_human=0.04, face_conf=0.8, face_person=0.0, lighting_mean=245.0)
    person = Clip(face_human=1.0, face_conf=0.9, face_person=None, lighting_mean=130.0)
    assert _shows_no_person(dog, t) and not _shows_no_person(blown, t) and not _shows_no_person(person, t)


def test_precision_recall_and_keep_rate_arithmetic():
    files = [
        FileResult("a", "kept", set(), "clean", status="kept"),
        FileResult("b", "kept", set(), "clean", status="rejected", fired={"blur"}),
        FileResult("c", "rejected", {"blur", "resolution"}, "down4up", status="rejected", fired={"resolution"}),
        FileResult("d", "rejected", {"lighting"}, "dark", status="rejected", fired={"lighting", "blur"}),
        FileResult("e", "rejected", {"lighting"}, "dark", status="kept"),
    ]
    fig = EvalReport(files).filter_figures()
    assert fig["blur"]["precision"] == 0.0  # fired on b (clean) and d (dark): neither is a blur file
    assert fig["blur"]["recall"] == 1.0  # c was rejected for an acceptable reason
    assert fig["resolution"]["precision"] == 1.0
    assert fig["lighting"]["precision"] == 1.0 and fig["lighting"]["recall"] == 0.5
    assert EvalReport(files).keep_rate() == (1, 2)


@pytest.fixture(scope="module")
def small_devset(fixtures_dir, tmp_path_factory):
    from pipeline.evaluation.devset import make_devset

    root = tmp_path_factory.mktemp("devset")
    base = root / "base.csv"
    base.write_text("path,label,reasons,note\n"
                    "media/videos/d0.mp4,clean,,talking head\n"
                    "media/images/s1.jpg,clean,,photo\n"
                    "media/images/s30.jpg,reject,no_face,dog\n")
    labels = make_devset(base, fixtures_dir, root / "set", kinds=["dark", "occl_eyes", "down4up"],
                         degraded_seconds=2.0, with_no_face=False, progress=False, workers=1)
    out = root / "build"
    assert portrait(["build", "--input", str(root / "set" / "media"), "--out", str(out), "--no-progress",
                     "--set", "features.enabled=false", "--set", "ray.executor=inline"]) == 0
    return labels, out


def test_devset_labels_every_file_it_writes(small_devset):
    labels, _ = small_devset
    with open(labels) as f:
        rows = list(csv.DictReader(f))
    files = {r["file"] for r in rows}
    media = labels.parent / "media"
    assert files == {p.relative_to(media).as_posix() for p in media.rglob("*") if p.is_file()}
    kinds = sorted(r["kind"] for r in rows)
    # 2 clean + 1 real reject + 3 degradations of each clean file, less s1's down-and-up: its
    # 386-px face keeps 97 px of a 4x smaller source, ambiguous against the 100-px minimum
    assert kinds == sorted(["clean", "clean", "reject"] + ["dark", "occl_eyes"] * 2 + ["down4up"])


def test_scaled_variants_are_labelled_by_the_pixels_they_keep():
    """Judged at training scale: a variant 2x or 4x smaller (or enlarged back) keeps the pixels
    of a source that many times smaller, against the build's 100-px face and 256-px crop."""
    from pipeline.evaluation.devset import scaled_label

    assert scaled_label(face=275, short=512, factor=4) == "rejected"  # a 512-px talking head: 128-px crop
    assert scaled_label(face=275, short=512, factor=2) == "kept"  # 256-px crop and a 137-px face, as MEAD's
    assert scaled_label(face=518, short=2048, factor=4) == "kept"  # a 2048-px photo: 130-px face, 414-px crop
    assert scaled_label(face=386, short=1145, factor=4) is None  # a 97-px face: ambiguous, not made
    assert scaled_label(face=450, short=720, factor=4) == "rejected"  # a 180-px crop


def test_eval_prints_figures_that_match_the_build(small_devset, capsys):
    labels, out = small_devset
    assert portrait(["eval", "--labels", str(labels), "--catalog", str(out), "--all"]) == 0
    text = capsys.readouterr().out
    assert "clean keep-rate: 2/2 = 1.000" in text, text
    lines = {
        ln.split()[0]: ln.split()
        for ln in text.splitlines()
        if ln and ln.split()[0] in ("lighting", "occlusion", "no_face")
    }
    # filter precision recall fired right hits/positives
    assert lines["lighting"][2] == "1" and lines["occlusion"][2] == "1" and lines["no_face"][2] == "1", text
    assert "every file:" in text and "videos/d0__dark.mp4" in text


def test_eval_refuses_bad_labels_with_one_line(tmp_path, capsys):
    bad = tmp_path / "labels.csv"
    bad.write_text("file,expected\nx.mp4,maybe\n")
    assert portrait(["eval", "--labels", str(bad), "--catalog", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected must be" in err[0]
