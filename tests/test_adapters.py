"""Dataset adapters over mini replicas of the nine datasets (tests/dataset_replicas.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from manifests.adapters import ADAPTERS, MetadataError, SourceSpec, make_adapter, media_type_of
from manifests.adapters.probe import image_info, video_info
from manifests.adapters.textfiles import EntryError, frame_span, parse_clock, parse_clock_range, read_lines
from tests.dataset_replicas import EXPECTED_ERRORS, FFHQ_LANDMARKS, build_all_replicas, build_mead

NINE = ["ffhq", "celeba", "vggface2", "celebvhq", "hdtf", "talkinghead1kh", "mead", "vfhq", "voxceleb2"]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, fixtures_dir) -> dict[str, Path]:
    return build_all_replicas(tmp_path_factory.mktemp("replicas"), fixtures_dir)


def read(root: Path, name: str, **options) -> tuple[dict[str, SourceSpec], list[MetadataError]]:
    items = list(make_adapter(name, str(root), **options).iter_sources())
    sources = {i.rel_path: i for i in items if isinstance(i, SourceSpec)}
    errors = [i for i in items if isinstance(i, MetadataError)]
    assert len(sources) + len(errors) == len(items)
    return sources, errors


def line_of(path: Path, needle: str) -> int:
    """1-based line of the first line containing needle."""
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in {path}")


def frame_box(spec_box, path: str) -> tuple:
    info = video_info(path) if media_type_of(path) == "video" else image_info(path)
    return spec_box.to_frame(info.width, info.height)


def _flat(values) -> list:
    if isinstance(values, (list, tuple)):
        return [x for v in values for x in _flat(v)]
    return [values]


class approx:
    """pytest.approx for nested tuples/lists (compared flattened, strings exactly)."""

    def __init__(self, expected, abs=1e-6):
        self.expected, self.abs = expected, abs

    def __eq__(self, actual) -> bool:
        if actual is None:
            return False
        a, e = _flat(actual), _flat(self.expected)
        return len(a) == len(e) and all(
            x == y if isinstance(y, str) else x == pytest.approx(y, abs=self.abs) for x, y in zip(a, e))

    def __repr__(self) -> str:
        return f"approx({self.expected!r})"


# -- all nine -----------------------------------------------------------------------------
def test_registry_names_every_dataset():
    assert set(ADAPTERS) == set(NINE) | {"folder"}


@pytest.mark.parametrize("name", NINE)
def test_every_replica_reads_with_exactly_its_planted_errors(replicas, name):
    root = replicas[name]
    sources, errors = read(root, name)
    assert sources, f"{name}: no sources"
    assert len(errors) == EXPECTED_ERRORS[name], [e.describe() for e in errors]
    for e in errors:
        assert Path(e.file).exists() and e.message
    for s in sources.values():
        assert s.dataset == name and Path(s.path).is_file()
        assert Path(s.path).resolve().is_relative_to(root.resolve())
        assert s.split in ("train", "val", "test")
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in s.labels.items())
        for c in s.clips or []:
            assert c.end_s is None or c.end_s > c.start_s >= 0
    # Deterministic order.
    again = [getattr(i, "rel_path", None) or i.describe() for i in make_adapter(name, str(root)).iter_sources()]
    first = [getattr(i, "rel_path", None) or i.describe() for i in make_adapter(name, str(root)).iter_sources()]
    assert again == first


def test_specs_survive_the_trip_to_workers(replicas):
    from pipeline.results import unit_specs, units_to_json

    sources, _ = read(replicas["vfhq"], "vfhq")
    spec = sources["videos/K_-9xq2ZmQw.mkv"]
    (back,) = unit_specs(units_to_json([[spec]])[0])  # what the first operator's actors receive
    assert [c.identity for c in back.clips] == [c.identity for c in spec.clips]
    assert back.clips[0].box == spec.clips[0].box and back.source_id == spec.source_id


# -- images -------------------------------------------------------------------------------
def test_ffhq_splits_landmarks_and_errors(replicas):
    root = replicas["ffhq"]
    sources, errors = read(root, "ffhq")
    assert {k: (s.split, s.identity) for k, s in sources.items()} == {
        "images1024x1024/00000/00000.png": ("train", None),
        "images1024x1024/00000/00001.png": ("val", None),
        "images1024x1024/01000/01000.png": ("train", None),
    }
    spec = sources["images1024x1024/00000/00000.png"]  # a 1145 px image, landmarks at 1024
    clip = spec.clips[0]
    assert clip.landmarks == approx(FFHQ_LANDMARKS)
    xs, ys = [p[0] for p in FFHQ_LANDMARKS], [p[1] for p in FFHQ_LANDMARKS]
    k = 1145 / 1024
    assert frame_box(clip.box, spec.path) == approx((min(xs) * k, min(ys) * k, max(xs) * k, max(ys) * k))
    meta = root / "ffhq-dataset-v2.json"
    by_line = {e.line: e.message for e in errors}
    assert "category" in by_line[line_of(meta, '"2": {')]
    assert "missing" in by_line[line_of(meta, '"3": {')] and "00003.png" in by_line[line_of(meta, '"3": {')]
    assert "leaves the dataset root" in by_line[line_of(meta, '"4": {')]


def test_ffhq_without_json_lists_the_folder(replicas, tmp_path):
    import shutil

    root = tmp_path / "ffhq"
    shutil.copytree(replicas["ffhq"] / "images1024x1024", root / "images1024x1024")
    sources, errors = read(root, "ffhq")
    assert not errors and len(sources) == 3
    assert all(s.split == "train" and s.identity is None and s.clips is None for s in sources.values())


def test_celeba_aligned_identities_partition_attributes_hq(replicas):
    root = replicas["celeba"]
    sources, errors = read(root, "celeba")
    got = {k: (s.identity, s.split) for k, s in sources.items()}
    assert got == {
        "Img/img_align_celeba/000001.jpg": ("2880", "train"),
        "Img/img_align_celeba/000002.jpg": ("2937", "train"),
        "Img/img_align_celeba/000003.jpg": ("8692", "val"),
        "Img/img_align_celeba/000004.jpg": ("5805", "test"),
        "Img/img_align_celeba/000005.jpg": ("9295", "test"),
        "CelebA-HQ-img/0.jpg": ("2937", "train"),
    }
    first = sources["Img/img_align_celeba/000001.jpg"]
    attrs = first.labels["attributes"].split(",")
    assert "Smiling" in attrs and "Male" not in attrs and "5_o_Clock_Shadow" not in attrs
    # Real aligned landmarks (178x218): 69 109 106 113 77 142 73 152 108 154.
    assert first.clips[0].landmarks == [(69, 109), (106, 113), (77, 142), (73, 152), (108, 154)]
    assert frame_box(first.clips[0].box, first.path) == approx((69, 109, 108, 154))
    hq = sources["CelebA-HQ-img/0.jpg"]
    assert hq.labels["celeba_file"] == "000002.jpg"
    assert hq.labels["attributes"] == sources["Img/img_align_celeba/000002.jpg"].labels["attributes"]
    ident = root / "Anno" / "identity_CelebA.txt"
    assert {(e.file, e.line) for e in errors} == {(str(ident), 6), (str(ident), 7)}
    assert any("leaves the dataset root" in e.message for e in errors)


def test_celeba_in_the_wild_boxes_in_image_pixels(replicas):
    sources, _ = read(replicas["celeba"], "celeba", images="wild")
    s5 = sources["Img/img_celeba/000005.jpg"]  # 2048 px; real row: 236 109 120 166
    assert frame_box(s5.clips[0].box, s5.path) == approx((236, 109, 356, 275))
    s1 = sources["Img/img_celeba/000001.jpg"]  # real row: 95 71 226 313
    assert frame_box(s1.clips[0].box, s1.path) == approx((95, 71, 321, 384))
    s4 = sources["Img/img_celeba/000004.jpg"]  # real row 622 257 564 781 on a 375x500 image
    assert s4.clips[0].box.to_frame(375, 500) is None  # entirely outside once clamped


def test_vggface2_identities_names_and_loose_boxes(replicas):
    root = replicas["vggface2"]
    sources, errors = read(root, "vggface2")
    assert {k: (s.identity, s.split) for k, s in sources.items()} == {
        "test/n000001/0001_01.jpg": ("n000001", "test"),
        "test/n000001/0002_01.jpg": ("n000001", "test"),
        "test/n000002/0001_01.jpg": ("n000002", "test"),
        "train/n000004/0001_01.jpg": ("n000004", "train"),
    }
    assert sources["test/n000001/0001_01.jpg"].labels == {"name": "14th_Dalai_Lama", "gender": "m"}
    assert sources["train/n000004/0001_01.jpg"].labels["name"] == "Smith, John Jr."  # comma inside quotes
    s = sources["test/n000001/0001_01.jpg"]  # real row 60,60,79,109
    assert frame_box(s.clips[0].box, s.path) == approx((60, 60, 139, 169))
    neg = sources["test/n000002/0001_01.jpg"]  # -20,-10,300,260: clamped at the image edge
    assert frame_box(neg.clips[0].box, neg.path) == approx((0, 0, 280, 250))
    lines = {(Path(e.file).name, e.line) for e in errors}
    assert lines == {("identity_meta.csv", 6), ("loose_bb_test.csv", 4)}


# -- videos -------------------------------------------------------------------------------
def test_celebvhq_raw_and_processed_clips(replicas):
    root = replicas["celebvhq"]
    sources, errors = read(root, "celebvhq")
    raw = sources["downloaded_celebvhq/raw/-Ab_cd-EfGh.mp4"]
    assert raw.identity == "-Ab_cd-EfGh" and raw.split == "train"
    assert [(c.key, c.start_s, c.end_s) for c in raw.clips] == [
        ("-Ab_cd-EfGh_0", 0.5, 2.5),
        ("-Ab_cd-EfGh_1", 3.0, 6.04),
    ]
    # Normalised top/bottom/left/right on a 512x512 raw video.
    assert frame_box(raw.clips[0].box, raw.path) == approx((0.2 * 512, 0.1 * 512, 0.8 * 512, 0.9 * 512))
    # Attribute names come from the misspelt 'mete_info'.
    assert raw.clips[0].labels["appearance"] == "Male,Young" and raw.clips[1].labels["action"] == "chew,talk"
    assert raw.clips[1].labels["emotion"] == "happy"
    done = sources["downloaded_celebvhq/processed/_0tf2n3rlJU_0.mp4"]
    assert done.identity == "_0tf2n3rlJU"
    assert [(c.start_s, c.end_s, c.box) for c in done.clips] == [(0.0, None, None)]  # already cut and cropped
    assert done.labels["emotion"] == "neutral,happy" and "1.28" in done.labels["emotion_segments"]
    meta = root / "celebvhq_info.json"
    by_line = {e.line: e.message for e in errors}
    assert "bbox" in by_line[line_of(meta, '"-Ab_cd-EfGh_2"')]
    assert "zzzMissing1.mp4" in by_line[line_of(meta, '"zzzMissing1_0"')]


def test_hdtf_times_crops_resolutions_and_gotchas(replicas):
    root = replicas["hdtf"]
    sources, errors = read(root, "hdtf")
    r11 = sources["RD/Radio11.mp4"]
    assert r11.identity == "Radio11" and r11.labels["youtube_id"] == "XtySvTwIOfw"
    assert [(c.key, c.start_s, c.end_s) for c in r11.clips] == [("Radio11_0", 1.0, 4.0), ("Radio11_1", 6.0, 9.0)]
    assert r11.clips[1].box is None  # no crop row for clip 1
    # Real crop row 412 599 0 599 at 720p; the file is 512x512, so scaled by 512/720.
    k = 512 / 720
    assert frame_box(r11.clips[0].box, r11.path) == approx((412 * k, 0, 512, 599 * k))
    assert r11.clips[0].labels["zoom_ratio"] == "1.2"
    r13 = sources["RD/Radio13.mp4"]  # real line 00:00-00:35; 512x480 file, crops at 720p (768x720)
    assert [(c.start_s, c.end_s) for c in r13.clips] == [(0.0, 35.0)]
    assert frame_box(r13.clips[0].box, r13.path) == approx((500 * 480 / 720, 0, 512, 368 * 480 / 720))
    assert r13.clips[0].labels["zoom_ratio"] == "1.2"  # from the file without a final newline
    bom = sources["WDA/CarolynMaloney2.mp4"]  # BOM line; no time row
    assert bom.identity == "CarolynMaloney" and bom.labels["youtube_id"] == "RApGxN-O9Qc"
    assert bom.clips is None and bom.labels["time_annotation"] == "missing"
    assert sources["WDA/BennieThompson1.mp4"].clips is None
    # Trailing-space time line with three ranges, only the split clips on disk.
    split_clips = [sources[f"WRA/clips/AdamKinzinger2_{k}.mp4"] for k in range(3)]
    assert all(
        s.identity == "AdamKinzinger" and s.clips[0].start_s == 0 and s.clips[0].end_s is None for s in split_clips
    )
    assert "zoom_ratio" not in split_clips[2].clips[0].labels  # no ratio row for clip 2
    # Clip 1 is a landscape cut (1280x720): real crop row 416 498 12 498 at 720p applies.
    assert frame_box(split_clips[1].clips[0].box, split_clips[1].path) == approx((416, 12, 914, 510))
    # Clips 0 and 2 are square: already cropped to the window, which is not applied again.
    assert split_clips[0].clips[0].box is None and split_clips[0].labels["cropped"] == "true"
    assert split_clips[2].clips[0].box is None
    assert [(Path(e.file).name, e.line) for e in errors] == [("RD_annotion_time.txt", 3)]


def test_hdtf_resolution_zero_and_universome_clips(replicas):
    sources, _ = read(replicas["hdtf"], "hdtf")
    # "KevinMcCarthy1.mp4 0" in WRA_resolution.txt: the crop is taken at the file's own size.
    kevin = sources["WRA/KevinMcCarthy1.mp4"]
    assert [(c.start_s, c.end_s) for c in kevin.clips] == [(1.0, 4.0)]
    assert frame_box(kevin.clips[0].box, kevin.path) == approx((300, 100, 700, 500))
    # universome/HDTF names clips <subset>_<name>_<NNN>.mp4 and cuts them to the square window.
    aoc = sources["download/WDA_AlexandriaOcasioCortez_000.mp4"]
    assert aoc.identity == "AlexandriaOcasioCortez" and aoc.labels["subset"] == "WDA"
    assert [(c.key, c.start_s, c.end_s, c.box) for c in aoc.clips] == [("AlexandriaOcasioCortez_0", 0.0, None, None)]
    assert aoc.clips[0].labels["zoom_ratio"] == "1.2"


def test_talkinghead1kh_tubes_to_seconds_and_boxes(replicas):
    root = replicas["talkinghead1kh"]
    sources, errors = read(root, "talkinghead1kh")
    y9 = sources["train/1min_clips/--Y9imYnfBw_0000.mp4"]  # 30 fps, 512x480; tubes at 1280x720
    assert y9.identity == "--Y9imYnfBw" and y9.split == "train"
    assert [(c.start_s, c.end_s) for c in y9.clips] == approx(
        [(0, 272 / 30), (272 / 30, 424 / 30), (424 / 30, 483 / 30)]
    )
    sx, sy = 512 / 1280, 480 / 720
    assert frame_box(y9.clips[0].box, y9.path) == approx((504 * sx, 63 * sy, 792 * sx, 351 * sy))
    two = sources["train/1min_clips/-8lgFak3RwU_0000.mp4"]
    assert len(two.clips) == 2 and two.clips[0].start_s == two.clips[1].start_s == 1.0
    assert {c.box.x0 for c in two.clips} == {253, 640}
    a0 = sources["train/1min_clips/-A0jrCGS_TE_0000.mp4"]  # id with '_': a 25 fps chunk
    assert a0.identity == "-A0jrCGS_TE" and (a0.clips[0].start_s, a0.clips[0].end_s) == approx((0, 60 / 25))
    raw = sources["train/raw_videos/-5Lm-oibjJQ.mp4"]  # no chunk file: the raw video, chunk 0
    assert (raw.clips[0].start_s, raw.clips[0].end_s) == approx((220 / 30, 256 / 30))
    assert [(Path(e.file).name, e.line) for e in errors] == [("train_video_tubes.txt", 8)]
    # The repository's 'small' unit-test list is read too: training videos, labelled as such.
    small = sources["small/1min_clips/--Y9imYnfBw_0000.mp4"]
    assert (small.split, small.labels["list"], small.identity) == ("train", "small", "--Y9imYnfBw")
    assert [(c.start_s, c.end_s) for c in small.clips] == approx([(0, 272 / 30)])


def test_mead_labels_from_the_path(replicas):
    root = replicas["mead"]
    sources, errors = read(root, "mead")
    s = sources["MEAD/M030/video/front/surprised/level_3/001.mp4"]  # under a wrapper folder
    assert s.identity == "M030" and s.clips is None and s.split == "train"
    assert s.labels == {"view": "front", "emotion": "surprised", "level": "3", "gender": "male", "utterance": "001"}
    w = sources["MEAD/W009/video/front/happy/level_3/001.mp4"]
    assert (w.identity, w.labels["emotion"], w.labels["gender"]) == ("W009", "happy", "female")
    misfits = sorted(Path(e.file).name for e in errors if e.kind == "no_metadata")
    assert misfits == ["001.mp4", "README.mp4"]
    assert {e.kind for e in errors} == {"no_metadata", "symlink_loop", "link_out_of_root"}


def test_mead_split_follows_the_published_protocol_not_the_download(replicas):
    """The replica holds utterances 001-010 of each group: all before the test sentences
    (025-030 of an emotion's level, 031-040 of neutral; tests/test_adapters_splits.py), so all
    train, whatever else was downloaded; the old fraction rule stays on request."""
    sources, _ = read(replicas["mead"], "mead")
    group = {s.labels["utterance"]: s.split for k, s in sources.items() if "front/surprised/level_3" in k}
    assert group == {f"{n:03d}": "train" for n in range(1, 11)}
    assert sources["MEAD/M030/video/left_30/surprised/level_3/010.mp4"].split == "train"
    assert sources["MEAD/W009/video/front/happy/level_3/001.mp4"].split == "train"
    old, _ = read(replicas["mead"], "mead", test_fraction=0.1)
    # Every view of a test sentence is test: the views are one take, filmed at once.
    assert old["MEAD/M030/video/front/surprised/level_3/010.mp4"].split == "test"
    assert old["MEAD/M030/video/left_30/surprised/level_3/010.mp4"].split == "test"
    off, _ = read(replicas["mead"], "mead", test_fraction=0)
    assert {s.split for s in off.values()} == {"train"}


def test_vfhq_clips_people_and_frames(replicas):
    root = replicas["vfhq"]
    sources, errors = read(root, "vfhq")
    raw = sources["videos/K_-9xq2ZmQw.mkv"]  # two people in one raw video, merged into .mkv
    # The official extractor keeps frames s+1..e-1 of F<s>-<e>.
    assert [(c.identity, c.start_s, c.end_s) for c in raw.clips] == approx(
        [("K_-9xq2ZmQw+P0", 31 / 30, 89 / 30), ("K_-9xq2ZmQw+P1", 121 / 30, 209 / 30)])
    s = 512 / 1920, 512 / 1080
    assert frame_box(raw.clips[0].box, raw.path) == approx((600 * s[0], 200 * s[1], 1400 * s[0], 1000 * s[1]))
    # Rows are FRAME INDEX X0 Y0 W H + 5 landmarks: the first landmark of frame 31, not INDEX.
    assert raw.clips[0].landmarks == [(900.0, 500.0), (1000.0, 500.0), (950.0, 560.0), (910.0, 610.0), (990.0, 610.0)]
    assert raw.split == "train"
    one = sources["videos/xyz_-A1b2C3.webm"]  # header only, .webm: F0-59 keeps 1..58 at 25 fps
    assert one.identity == "xyz_-A1b2C3+P0" and one.split == "test"  # its txt is in meta_info/test
    assert (one.clips[0].start_s, one.clips[0].end_s) == approx((1 / 25, 59 / 25))
    cut = sources["clips/Clip+QwErTy12345+P2+C3+F100-199.mp4"]
    assert cut.identity == "QwErTy12345+P2" and (cut.clips[0].start_s, cut.clips[0].end_s, cut.clips[0].box) == (
        0.0,
        None,
        None,
    )
    by_name = {Path(e.file).name: e for e in errors}
    assert by_name["Clip+BrokenFps01+P0+C0+F0-9.txt"].line == 4
    assert "NoVideo0001.mp4" in by_name["Clip+NoVideo0001+P0+C0+F0-9.txt"].message


def test_voxceleb2_utterances_and_raw_videos(replicas):
    root = replicas["voxceleb2"]
    sources, errors = read(root, "voxceleb2")
    real = sources["dev/mp4/id00012/_raOc3-IRsw/00001.mp4"]  # the real txt: frames 349..350
    assert (real.identity, real.split, real.labels["youtube_id"], real.labels["av_offset"]) == (
        "id00012",
        "train",
        "_raOc3-IRsw",
        "2",
    )
    assert (real.clips[0].start_s, real.clips[0].end_s) == approx((0, 2 / 25))
    assert real.clips[0].box is None  # the utterance is already the face track
    assert sources["mp4/id00017/-xY_z123abc/00001.mp4"].split == "test"  # the test archive's layout
    raw = sources["raw_videos/Ab-_cdEFgh1.mp4"]  # normalised boxes on the 1280x720 source
    assert raw.identity == "id00020"
    assert (raw.clips[0].start_s, raw.clips[0].end_s) == approx((25 / 25, 100 / 25))
    # 0.7 + 0.4 runs past the right edge: still normalised, clamped at the edge.
    assert frame_box(raw.clips[0].box, raw.path) == approx((0.7 * 1280, 0.1 * 720, 1280, 0.8 * 720))
    assert [(Path(e.file).name, e.line) for e in errors] == [("00002.txt", 9)]


# -- gotchas in isolation -------------------------------------------------------------------
def test_links_out_of_the_root_are_refused(tmp_path, fixtures_dir):
    root = build_mead(tmp_path / "mead", fixtures_dir)
    link = root / "M005" / "video" / "top" / "sad" / "level_2" / "001.mp4"
    link.parent.mkdir(parents=True)
    os.symlink(fixtures_dir / "media" / "videos" / "d0.mp4", link)
    sources, errors = read(root, "mead")
    assert "M005/video/top/sad/level_2/001.mp4" not in sources
    assert any("leaves the dataset root" in e.message for e in errors)


def test_read_lines_absorbs_bom_blanks_trailing_spaces_crlf(tmp_path):
    p = tmp_path / "x.txt"
    p.write_bytes(b"\xef\xbb\xbfa 1  \r\n\r\n  \nb\t2 \t\nc 3")
    lines = list(read_lines(p))
    assert [(ln.number, ln.fields) for ln in lines] == [(1, ["a", "1"]), (4, ["b", "2"]), (5, ["c", "3"])]


def test_clock_and_frame_conventions():
    assert parse_clock("01:35") == 95 and parse_clock("1:02:03") == 3723
    assert parse_clock_range("00:30-01:00") == (30, 60)
    for bad in ("00:xx", "1:75", "00:30", "01:00-00:30"):
        with pytest.raises(EntryError):
            parse_clock_range(bad)
    assert frame_span(0, 271, 30) == (0, 272 / 30)  # inclusive end -> exclusive seconds
    with pytest.raises(EntryError):
        frame_span(10, 9, 25)
