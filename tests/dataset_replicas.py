"""Mini replicas of the nine public face datasets, in their real layouts, from the fixture media.

Each builder copies fixture videos/images under the names the dataset uses and writes the
metadata in the dataset's own format, reusing the real excerpt lines from
``fixtures/datasets`` where they exist (BOM, trailing spaces and all) and adding the gotchas
the adapters must survive. Files are copied, not linked: adapters refuse links that point
out of the dataset root.

``build_all_replicas(tmp_path, fixtures_dir)`` builds all nine and returns ``{name: root}``.
``EXPECTED_ERRORS`` says how many metadata errors each replica is built to produce and
``EXPECTED_COUNTS`` what discovery must count for each. Variants in other layouts people
download (Kaggle CelebA, FFHQ without its JSON, VoxCeleb2 mp4 only) have builders of their own.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

# Metadata errors each replica contains on purpose (broken lines, missing media, escapes).
EXPECTED_ERRORS = {
    "ffhq": 3, "celeba": 2, "vggface2": 2, "celebvhq": 2, "hdtf": 1,
    "talkinghead1kh": 1, "mead": 4, "vfhq": 2, "voxceleb2": 1,
}

# Discovery counts per replica: (files found, sources, files without metadata, rows without a
# file, unparseable rows, skipped by reason).
EXPECTED_COUNTS = {
    "ffhq": (3, 3, 0, 1, 1, {}),
    "celeba": (6, 6, 0, 0, 1, {}),
    "vggface2": (4, 4, 0, 1, 1, {}),
    "celebvhq": (2, 2, 0, 1, 1, {}),
    "hdtf": (9, 9, 0, 0, 1, {}),
    "talkinghead1kh": (5, 5, 0, 0, 1, {}),
    "mead": (14, 12, 2, 0, 0, {"unsupported_extension": 2, "symlink_loop": 1, "link_out_of_root": 1}),
    "vfhq": (5, 3, 1, 1, 1, {}),
    "voxceleb2": (4, 4, 0, 0, 1, {}),
}

# Real identity_meta.csv rows as VGGFace2 ships them (every row ends with a comma), as quoted in
# the comment of a public VGGFace2 loader (the fixture excerpt has the trailing commas stripped).
VGGFACE2_META_RELEASED = [
    "Class_ID, Name, Sample_Num, Flag, Gender,",
    'n000001, "14th_Dalai_Lama",424,0, m,',
    'n000002, "A_Fine_Frenzy",315,1, f,',
    'n000003, "A._A._Gill",205,1, m,',
]

# FFHQ landmarks written into the replica's JSON (68 points at 1024 px, on an ellipse).
FFHQ_LANDMARKS = [
    (512 + 200 * math.cos(2 * math.pi * k / 68), 480 + 260 * math.sin(2 * math.pi * k / 68)) for k in range(68)
]


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def _write(path: Path, text: str, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _real_lines(fixtures: Path, rel: str) -> list[str]:
    """The excerpt's lines as stored (BOM and trailing spaces kept, newline removed)."""
    return (fixtures / "datasets" / rel).read_bytes().decode("utf-8").split("\n")[:-1]


def _pick(lines: list[str], *prefixes: str) -> list[str]:
    out = []
    for p in prefixes:
        hits = [ln for ln in lines if ln.lstrip("\ufeff").startswith(p)]
        if not hits:
            raise KeyError(f"no excerpt line starts with {p!r}")
        out.append(hits[0])
    return out


def _video(fixtures: Path, name: str) -> Path:
    return fixtures / "media" / "videos" / f"{name}.mp4"


def _image(fixtures: Path, name: str) -> Path:
    return fixtures / "media" / "images" / f"{name}.jpg"


def _extra_video(fixtures: Path, name: str) -> Path:
    return fixtures / "media-extra" / "videos" / f"{name}.mp4"


def _webm(src: Path, dst: Path) -> Path:
    """Re-encode to VP8 in WebM, as yt-dlp leaves most YouTube downloads."""
    import av

    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        v = inp.streams.video[0]
        stream = out.add_stream("libvpx", rate=v.average_rate)
        stream.width, stream.height, stream.pix_fmt = v.width, v.height, "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8"}
        for frame in inp.decode(v):
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


def _mkv(src: Path, dst: Path) -> Path:
    """The same H.264 stream remuxed into Matroska (yt-dlp's merge container)."""
    import av

    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="matroska") as out:
        v = inp.streams.video[0]
        stream = out.add_stream_from_template(v)
        for packet in inp.demux(v):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
    return dst


# -- images ------------------------------------------------------------------------------
def build_ffhq(root: Path, fixtures: Path) -> Path:
    from PIL import Image

    files = {0: "s1", 1: "d9", 1000: "d19"}
    for idx, img in files.items():
        dst = root / "images1024x1024" / f"{idx // 1000 * 1000:05d}" / f"{idx:05d}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.open(_image(fixtures, img)).save(dst)

    def entry(idx: int, category: str) -> dict:
        return {
            "category": category,
            "metadata": {"photo_url": "https://www.flickr.com/photos/x/1", "license": "Attribution License"},
            "image": {
                "file_path": f"images1024x1024/{idx // 1000 * 1000:05d}/{idx:05d}.png",
                "file_size": 1,
                "pixel_size": [1024, 1024],
                "face_landmarks": [list(p) for p in FFHQ_LANDMARKS],
            },
            "thumbnail": {
                "file_path": f"thumbnails128x128/{idx // 1000 * 1000:05d}/{idx:05d}.png",
                "pixel_size": [128, 128],
            },
        }

    data = {"0": entry(0, "training"), "1": entry(1, "validation"), "1000": entry(1000, "training")}
    broken = entry(2, "training")
    del broken["category"]  # malformed: no category
    data["2"] = broken
    data["3"] = entry(3, "training")  # listed, not on disk
    data["4"] = entry(4, "training")
    data["4"]["image"]["file_path"] = "../outside/00004.png"  # would leave the root
    _write(root / "ffhq-dataset-v2.json", json.dumps(data, indent=2))
    return root


def build_ffhq_without_json(root: Path, fixtures: Path) -> Path:
    """An FFHQ copy without ffhq-dataset-v2.json (Kaggle / Hugging Face): the index fixes the split."""
    from PIL import Image

    for idx, img in {1: "s1", 59999: "d9", 60000: "d19", 69999: "s12"}.items():
        dst = root / "images1024x1024" / f"{idx // 1000 * 1000:05d}" / f"{idx:05d}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.open(_image(fixtures, img)).convert("RGB").resize((64, 64)).save(dst)
    _copy(_image(fixtures, "s30"), root / "images1024x1024" / "extra" / "cover.png")  # not an FFHQ index
    (root / "images1024x1024" / "01000").mkdir()
    (root / "images1024x1024" / "01000" / "01000.png").symlink_to("/etc/passwd")  # out of the root
    _write(root / "images1024x1024" / "00000" / "00002.gif", "GIF89a")  # a picture format we skip
    return root


def build_celeba(root: Path, fixtures: Path) -> Path:
    from PIL import Image

    wild = {"000001.jpg": "s1", "000002.jpg": "d9", "000003.jpg": "d19", "000004.jpg": "s12", "000005.jpg": "s2"}
    for name, img in wild.items():
        _copy(_image(fixtures, img), root / "Img" / "img_celeba" / name)
        aligned = root / "Img" / "img_align_celeba" / name
        aligned.parent.mkdir(parents=True, exist_ok=True)
        Image.open(_image(fixtures, img)).convert("RGB").resize((178, 218)).save(aligned, quality=90)
    anno = root / "Anno"
    identity = _real_lines(fixtures, "CelebA/identity_CelebA.txt")
    identity += ["000006.jpg", "../../../../outside.jpg 17"]  # broken (no id), escaping path
    _write(anno / "identity_CelebA.txt", "\n".join(identity) + "\n")
    for f in ("list_bbox_celeba.txt", "list_landmarks_align_celeba.txt", "list_attr_celeba.txt"):
        _write(anno / f, "\n".join(_real_lines(fixtures, f"CelebA/{f}")) + "\n")
    # Not in the excerpts: built in the official format, trailing spaces, no final newline.
    _write(root / "Eval" / "list_eval_partition.txt",
           "000001.jpg 0\n000002.jpg 0 \n000003.jpg 1\n000004.jpg 2\n000005.jpg 2")
    # CelebA-HQ (CelebAMask-HQ layout): HQ image 0 is CelebA's 000002.jpg.
    _write(
        root / "CelebA-HQ-to-CelebA-mapping.txt",
        "idx         orig_idx        orig_file\n0        1        000002.jpg\n",
    )
    _copy(_image(fixtures, "d9"), root / "CelebA-HQ-img" / "0.jpg")
    return root


def build_celeba_kaggle(root: Path, fixtures: Path) -> Path:
    """The Kaggle copy (jessicali9530/celeba-dataset): images nested one level deeper, CSV
    annotations at the root, no identity file. Rows are the real excerpt rows as CSV."""
    from PIL import Image

    names = {"000001.jpg": "s1", "000002.jpg": "d9", "000003.jpg": "d19", "000004.jpg": "s12"}
    for name, img in names.items():
        dst = root / "img_align_celeba" / "img_align_celeba" / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.open(_image(fixtures, img)).convert("RGB").resize((178, 218)).save(dst, quality=90)

    def csv_of(rel: str, header: str) -> str:
        rows = [ln.split() for ln in _real_lines(fixtures, f"CelebA/{rel}")[2:]]
        return header + "\n" + "".join(",".join(r) + "\n" for r in rows if r and r[0] in names)

    attrs = _real_lines(fixtures, "CelebA/list_attr_celeba.txt")[1].split()
    _write(root / "list_attr_celeba.csv", csv_of("list_attr_celeba.txt", "image_id," + ",".join(attrs)))
    _write(root / "list_landmarks_align_celeba.csv", csv_of(
        "list_landmarks_align_celeba.txt",
        "image_id,lefteye_x,lefteye_y,righteye_x,righteye_y,nose_x,nose_y,leftmouth_x,leftmouth_y,rightmouth_x,rightmouth_y"))
    _write(root / "list_bbox_celeba.csv", csv_of("list_bbox_celeba.txt", "image_id,x_1,y_1,width,height"))
    _write(
        root / "list_eval_partition.csv", "image_id,partition\n000001.jpg,0\n000002.jpg,0\n000003.jpg,1\n000004.jpg,2\n"
    )
    return root


def build_vggface2(root: Path, fixtures: Path) -> Path:
    meta = list(VGGFACE2_META_RELEASED)
    meta += ['n000004, "Smith, John Jr.",  12, 1, m,', "n000005 broken line"]
    _write(root / "meta" / "identity_meta.csv", "\n".join(meta) + "\n")
    boxes = _real_lines(fixtures, "VGGFace2/loose_bb_test.csv")
    boxes += ['"n000002/0001_01",-20,-10,300,260']  # negative corner: runs out of the image
    _write(root / "bb_landmark" / "loose_bb_test.csv", "\n".join(boxes))  # no final newline
    for rel, img in {"n000001/0001_01": "s12", "n000001/0002_01": "d9", "n000001/0003_01": "d19",
                     "n000002/0001_01": "s1"}.items():
        _copy(_image(fixtures, img), root / "test" / f"{rel}.jpg")
    # n000001/0003_01 is listed but we drop it from disk: a missing-media error.
    (root / "test" / "n000001" / "0003_01.jpg").unlink()
    _copy(_image(fixtures, "s3"), root / "train" / "n000004" / "0001_01.jpg")  # no train box file: walked
    return root


# -- videos ------------------------------------------------------------------------------
def build_celebvhq(root: Path, fixtures: Path) -> Path:
    raw = root / "downloaded_celebvhq" / "raw"
    processed = root / "downloaded_celebvhq" / "processed"
    _copy(_video(fixtures, "d3"), raw / "-Ab_cd-EfGh.mp4")
    _copy(_video(fixtures, "d0"), processed / "_0tf2n3rlJU_0.mp4")
    appearance = ["Blurry", "Male", "Young", "Eyeglasses"]
    action = ["blow", "chew", "close_eyes", "talk"]

    def clip(ytb, start, end, box, app, act, emotion):
        return {"ytb_id": ytb, "duration": {"start_sec": start, "end_sec": end},
                "bbox": dict(zip(("top", "bottom", "left", "right"), box)),
                "attributes": {"appearance": app, "action": act, "emotion": emotion}, "version": "v0.1"}

    clips = {
        "-Ab_cd-EfGh_0": clip("-Ab_cd-EfGh", 0.5, 2.5, (0.1, 0.9, 0.2, 0.8), [0, 1, 1, 0], [0, 0, 0, 1],
                              {"sep_flag": False, "labels": "neutral"}),
        # Box overrunning the frame a little (top < 0, right > 1): clamped, not dropped.
        "-Ab_cd-EfGh_1": clip("-Ab_cd-EfGh", 3.0, 6.04, (-0.004, 0.8815, 0.1964, 1.0123), [0, 0, 1, 1], [0, 1, 0, 1],
                              {"sep_flag": False, "labels": "happy"}),
        "_0tf2n3rlJU_0": clip("_0tf2n3rlJU", 52.72, 56.1, (0.0, 0.8407, 0.5271, 1.0), [0, 0, 1, 0], [0, 0, 0, 1],
                              {"sep_flag": True, "labels": [{"emotion": "neutral", "start_sec": 0, "end_sec": 0.28},
                                                            {"emotion": "happy", "start_sec": 1.28, "end_sec": 3.28}]}),
        "zzzMissing1_0": clip("zzzMissing1", 1.0, 2.0, (0.1, 0.9, 0.1, 0.9), [0, 0, 0, 0], [0, 0, 0, 0],
                              {"sep_flag": False, "labels": "sad"}),
    }
    broken = clip("-Ab_cd-EfGh", 7.0, 8.0, (0.1, 0.9, 0.1, 0.9), [0, 0, 0, 0], [0, 0, 0, 0],
                  {"sep_flag": False, "labels": "sad"})
    del broken["bbox"]
    clips["-Ab_cd-EfGh_2"] = broken
    # The misspelt top key some copies carry.
    data = {"mete_info": {"appearance_mapping": appearance, "action_mapping": action}, "clips": clips}
    _write(root / "celebvhq_info.json", json.dumps(data, indent=1))
    return root


def build_hdtf(root: Path, fixtures: Path) -> Path:
    meta = root / "HDTF_dataset"
    ex = "HDTF"

    def real(subset: str, kind: str, *names: str) -> list[str]:
        return _pick(_real_lines(fixtures, f"{ex}/{subset}_{kind}.txt"), *names)

    # RD: Radio11 raw video with our own ranges that fit the media (second clip has no crop
    # row); Radio13 raw with its real line; a broken time line.
    _write(meta / "RD_video_url.txt", "\n".join(real("RD", "video_url", "Radio11 ", "Radio13 ")) + "\n")
    _write(meta / "RD_resolution.txt", "\n".join(real("RD", "resolution", "Radio11.mp4", "Radio13.mp4")) + "\n")
    _write(
        meta / "RD_annotion_time.txt",
        "\n".join(
            ["Radio11.mp4 00:01-00:04 00:06-00:09"]
            + real("RD", "annotion_time", "Radio13.mp4")
            + ["Radio99.mp4 00:xx-01:00"]
        )
        + "\n",
    )
    _write(meta / "RD_crop_wh.txt", "\n".join(real("RD", "crop_wh", "Radio11_0.mp4", "Radio13_0.mp4")) + "\n")
    # No final newline:
    _write(meta / "RD_crop_ratio.txt", "\n".join(real("RD", "crop_ratio", "Radio11_0.mp4", "Radio13_0.mp4")))
    _copy(_video(fixtures, "d3"), root / "RD" / "Radio11.mp4")
    _copy(_video(fixtures, "d9"), root / "RD" / "Radio13.mp4")
    # WDA: the BOM line (CarolynMaloney2, no time row) and BennieThompson1 (resolution, no time row).
    wda_url = _real_lines(fixtures, f"{ex}/WDA_video_url.txt")
    _write(meta / "WDA_video_url.txt", wda_url[0] + "\n")  # the real line with its BOM
    _write(
        meta / "WDA_resolution.txt",
        "\n".join(real("WDA", "resolution", "BennieThompson1.mp4", "AlexandriaOcasioCortez.mp4")) + "\n",
    )
    _write(meta / "WDA_annotion_time.txt", "\n".join(real("WDA", "annotion_time", "AlexandriaOcasioCortez.mp4")) + "\n")
    _write(meta / "WDA_crop_wh.txt", "\n".join(real("WDA", "crop_wh", "AlexandriaOcasioCortez_0.mp4")) + "\n")
    _write(meta / "WDA_crop_ratio.txt", "\n".join(real("WDA", "crop_ratio", "AlexandriaOcasioCortez_0.mp4")) + "\n")
    _copy(_video(fixtures, "s18"), root / "WDA" / "CarolynMaloney2.mp4")
    _copy(_video(fixtures, "d0"), root / "WDA" / "BennieThompson1.mp4")
    # universome/HDTF's downloader output: <subset>_<name>_<NNN>.mp4, already cut to the 512x512
    # face window (SadTalker ships this very file under this name).
    _copy(_extra_video(fixtures, "sadtalker_aoc"), root / "download" / "WDA_AlexandriaOcasioCortez_000.mp4")
    # WRA: only the split clips of AdamKinzinger2 (real time line with a trailing space); clip 1
    # is a landscape cut (gets the crop box), clips 0 and 2 square (already cropped: no box).
    # KevinMcCarthy1 is listed at resolution 0 in the released WRA_resolution.txt.
    _write(meta / "WRA_video_url.txt", "")
    _write(
        meta / "WRA_resolution.txt",
        "\n".join(real("WRA", "resolution", "AdamKinzinger2.mp4") + ["KevinMcCarthy1.mp4 0"]) + "\n",
    )
    _write(
        meta / "WRA_annotion_time.txt",
        "\n".join(real("WRA", "annotion_time", "AdamKinzinger2.mp4") + ["KevinMcCarthy1.mp4 00:01-00:04"]) + "\n",
    )
    _write(
        meta / "WRA_crop_wh.txt",
        "\n".join(
            real("WRA", "crop_wh", "AdamKinzinger2_0", "AdamKinzinger2_1", "AdamKinzinger2_2")
            + ["KevinMcCarthy1_0.mp4 300 400 100 400"]
        )
        + "\n",
    )
    _write(
        meta / "WRA_crop_ratio.txt", "\n".join(real("WRA", "crop_ratio", "AdamKinzinger2_0", "AdamKinzinger2_1")) + "\n"
    )
    for k in range(3):
        _copy(_video(fixtures, "s18" if k == 1 else "d0"), root / "WRA" / "clips" / f"AdamKinzinger2_{k}.mp4")
    _copy(_video(fixtures, "s18"), root / "WRA" / "KevinMcCarthy1.mp4")
    return root


def build_talkinghead1kh(root: Path, fixtures: Path) -> Path:
    lists = root / "data_list"
    _write(
        lists / "train_video_ids.txt",
        "\n".join(_real_lines(fixtures, "TalkingHead-1KH/data_list/train_video_ids.txt")) + "\n",
    )
    tubes = _real_lines(fixtures, "TalkingHead-1KH/data_list/train_video_tubes.txt")
    y9 = [t for t in tubes if t.startswith("--Y9imYnfBw_0000") and int(t.split(",")[3]) <= 482]
    lines = y9 + [t for t in tubes if t.startswith("-5Lm-oibjJQ_0000")] + [
        "-8lgFak3RwU_0000, 720, 1280, 30, 120, 253, 0, 861, 464",  # two people, one time range
        "-8lgFak3RwU_0000, 720, 1280, 30, 120, 640, 144, 992, 496",
        "-A0jrCGS_TE_0000, 720, 1280, 0, 59, 100, 100, 400, 400",  # id with '_', a 25 fps chunk
        "--Y9imYnfBw_0001, 720, 1280, 0",  # broken
    ]
    _write(lists / "train_video_tubes.txt", "\n".join(lines) + "\n")
    chunks = root / "train" / "1min_clips"
    _copy(_video(fixtures, "d9"), chunks / "--Y9imYnfBw_0000.mp4")
    _copy(_video(fixtures, "s18"), chunks / "-8lgFak3RwU_0000.mp4")
    _copy(_video(fixtures, "d0"), chunks / "-A0jrCGS_TE_0000.mp4")
    _copy(_video(fixtures, "d3"), root / "train" / "raw_videos" / "-5Lm-oibjJQ.mp4")  # no chunk: raw fallback
    # The repository's unit-test list ("bash videos_download_and_crop.sh small"), a real tube line.
    _write(lists / "small_video_tubes.txt", y9[0] + "\n")
    _copy(_video(fixtures, "d9"), root / "small" / "1min_clips" / "--Y9imYnfBw_0000.mp4")
    return root


def build_mead(root: Path, fixtures: Path) -> Path:
    # Under one wrapper folder, as the per-actor archives are often unpacked. Real MEAD clips
    # (dreamtalk ships them) under their real names; M030's surprised level_3 has utterances
    # 001-010, all before MEAD's test sentences (025-030 of each emotion and level), so all train
    # (010 also in a second view, the same take).
    base = root / "MEAD"
    for n in range(1, 11):
        _copy(
            _extra_video(fixtures, "dreamtalk_m030_surprised"),
            base / "M030" / "video" / "front" / "surprised" / "level_3" / f"{n:03d}.mp4",
        )
    _copy(
        _extra_video(fixtures, "dreamtalk_m030_surprised"),
        base / "M030" / "video" / "left_30" / "surprised" / "level_3" / "010.mp4",
    )
    _copy(
        _extra_video(fixtures, "dreamtalk_w009_happy"),
        base / "W009" / "video" / "front" / "happy" / "level_3" / "001.mp4",
    )
    _write(base / "M030" / "audio" / "surprised" / "level_3" / "001.m4a", "not a video")
    _write(base / "W009" / "audio" / "happy" / "level_3" / "001.m4a", "not a video")
    # neutral has level_1 only: an error naming the file (counted as a file without metadata).
    _write(base / "M030" / "video" / "front" / "neutral" / "level_2" / "001.mp4", "placeholder")
    _write(base / "M030" / "video" / "front" / "README.mp4", "placeholder")  # a stray file
    # A link loop and a link out of the root: counted error rows, never followed.
    (base / "M030" / "video" / "front" / "again").symlink_to("..")
    (base / "W009" / "video" / "front" / "happy" / "level_3" / "002.mp4").symlink_to(_video(fixtures, "d0"))
    return root


def _vfhq_txt(h: int, w: int, fps: float | str, crop: tuple, frames: range | None, start_marks=(900.0, 500.0)) -> str:
    """A VFHQ clip txt: header, per-frame rows ``FRAME INDEX X0 Y0 W H`` + 5 landmarks, CROP last."""
    lines = ["Video: source", f"H: {h}", f"W: {w}", f"FPS: {fps}"]
    if frames is not None:
        lines.append("FRAME INDEX X0 Y0 W H LM1X LM1Y LM2X LM2Y LM3X LM3Y LM4X LM4Y LM5X LM5Y")
        x, y = start_marks
        for f in frames:
            pts = [(x, y), (x + 100, y), (x + 50, y + 60), (x + 10, y + 110), (x + 90, y + 110)]
            lines.append(f"{f} 0 {x - 50:.1f} {y - 80:.1f} 200.0 260.0 " + " ".join(f"{a:.1f} {b:.1f}" for a, b in pts))
    lines.append("CROP: " + " ".join(str(v) for v in crop))
    return "\n".join(lines) + "\n"


def build_vfhq(root: Path, fixtures: Path) -> Path:
    meta = root / "meta_info"
    # One raw video (30 fps, 512x512 on disk, annotated at 1920x1080) with two people, as yt-dlp
    # merges it (.mkv).
    _write(
        meta / "train" / "Clip+K_-9xq2ZmQw+P0+C0+F30-89.txt",
        _vfhq_txt(1080, 1920, 30, (600, 200, 1400, 1000), range(30, 90)),
    )
    _write(
        meta / "train" / "Clip+K_-9xq2ZmQw+P1+C1+F120-209.txt",
        _vfhq_txt(1080, 1920, 30, (100, 100, 500, 500), range(120, 210)),
    )
    # Header only (no per-frame rows), 25 fps, no final newline, from the test list; .webm video.
    _write(
        meta / "test" / "Clip+xyz_-A1b2C3+P0+C0+F0-59.txt",
        _vfhq_txt(512, 512, 25, (50, 60, 450, 470), None).rstrip("\n"),
    )
    # Already cut clip video: used whole.
    _write(meta / "train" / "Clip+QwErTy12345+P2+C3+F100-199.txt", _vfhq_txt(720, 1280, 30, (10, 20, 300, 310), None))
    _write(meta / "train" / "Clip+BrokenFps01+P0+C0+F0-9.txt", _vfhq_txt(720, 1280, "abc", (10, 20, 300, 310), None))
    _write(meta / "train" / "Clip+NoVideo0001+P0+C0+F0-9.txt", _vfhq_txt(720, 1280, 30, (10, 20, 300, 310), None))
    _mkv(_video(fixtures, "d3"), root / "videos" / "K_-9xq2ZmQw.mkv")
    _webm(_video(fixtures, "d0"), root / "videos" / "xyz_-A1b2C3.webm")
    # Footage no other replica uses: an eval candidate nothing ties to training.
    _copy(_extra_video(fixtures, "retalking_face4"), root / "clips" / "Clip+QwErTy12345+P2+C3+F100-199.mp4")
    _write(root / "videos" / "BrokenFps01.mp4", "placeholder")
    _copy(_video(fixtures, "d0"), root / "videos" / "Unlisted0001.mp4")  # a download no txt names
    return root


def _vox_txt(ident: str, ytid: str, rows: list[tuple[int, float, float, float, float]], extra: str = "") -> str:
    head = (f"Identity  : \t{ident}\nReference : \t{ytid}\nOffset    : \t0\nFV Conf   : \t15.100\t(1)\n"
            f"ASD Conf  : \t3.210\n\nFRAME \tX \tY \tW \tH \n")
    body = "".join(f"{f:06d} \t{x:.3f} \t{y:.3f} \t{w:.3f} \t{h:.3f} \n" for f, x, y, w, h in rows)
    return head + body + extra


def build_voxceleb2(root: Path, fixtures: Path) -> Path:
    real = (fixtures / "datasets" / "VoxCeleb2" / "00001.txt").read_text(encoding="utf-8")
    _write(root / "txt" / "id00012" / "_raOc3-IRsw" / "00001.txt", real)
    _write(root / "txt" / "id00012" / "_raOc3-IRsw" / "00002.txt",
           _vox_txt("id00012", "_raOc3-IRsw", [(f, 0.319, 0.067, 0.424, 0.753) for f in range(400, 475)]))
    _write(root / "txt" / "id00017" / "-xY_z123abc" / "00001.txt",
           _vox_txt("id00017", "-xY_z123abc", [(f, 0.2, 0.1, 0.5, 0.8) for f in range(0, 50)]))
    # Raw source video instead of the utterance: the normalised box and 25 fps frames apply.
    # A face at the right edge: x + w = 1.1, still a normalised box.
    _write(root / "txt" / "id00020" / "Ab-_cdEFgh1" / "00001.txt",
           _vox_txt("id00020", "Ab-_cdEFgh1", [(f, 0.7, 0.1, 0.4, 0.7) for f in range(25, 100)]))
    _write(root / "txt" / "id00020" / "Ab-_cdEFgh1" / "00002.txt",
           _vox_txt("id00020", "Ab-_cdEFgh1", [(110, 0.25, 0.1, 0.4, 0.7)], extra="000111 \t0.3 \t0.1 \n"))
    _copy(_video(fixtures, "d0"), root / "dev" / "mp4" / "id00012" / "_raOc3-IRsw" / "00001.mp4")
    _copy(_video(fixtures, "d0"), root / "dev" / "mp4" / "id00012" / "_raOc3-IRsw" / "00002.mp4")
    # vox2_test_mp4.zip unpacks to mp4/<id>/... with no test/ level.
    _copy(_video(fixtures, "d0"), root / "mp4" / "id00017" / "-xY_z123abc" / "00001.mp4")
    _copy(_video(fixtures, "s18"), root / "raw_videos" / "Ab-_cdEFgh1.mp4")
    return root


def build_voxceleb2_mp4_only(root: Path, fixtures: Path) -> Path:
    """Only the mp4 archives (dev and test), no txt; one utterance linked in from outside."""
    _copy(_video(fixtures, "d0"), root / "dev" / "mp4" / "id00012" / "_raOc3-IRsw" / "00001.mp4")
    _copy(_video(fixtures, "d0"), root / "mp4" / "id00017" / "-xY_z123abc" / "00001.mp4")
    link = root / "dev" / "mp4" / "id00012" / "_raOc3-IRsw" / "00002.mp4"
    link.symlink_to(_video(fixtures, "d3"))
    return root


BUILDERS = {
    "ffhq": build_ffhq, "celeba": build_celeba, "vggface2": build_vggface2, "celebvhq": build_celebvhq,
    "hdtf": build_hdtf, "talkinghead1kh": build_talkinghead1kh, "mead": build_mead, "vfhq": build_vfhq,
    "voxceleb2": build_voxceleb2,
}


def build_all_replicas(tmp_path: Path, fixtures_dir: Path) -> dict[str, Path]:
    """All nine replicas under ``tmp_path/<name>``; returns {adapter name: dataset root}."""
    tmp_path, fixtures_dir = Path(tmp_path), Path(fixtures_dir)
    return {name: build(tmp_path / name, fixtures_dir) for name, build in BUILDERS.items()}
