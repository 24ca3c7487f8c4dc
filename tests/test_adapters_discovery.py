"""Discovery on hostile and real-world folders: links, loops, unreadable folders, pictures we do
not decode, the layouts people actually download, and the per-dataset counts."""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from manifests.adapters import MetadataError, SourceSpec, make_adapter, probe
from pipeline.config import DatasetEntry
from pipeline.sources import discover
from tests.dataset_replicas import (
    EXPECTED_COUNTS,
    build_celeba_kaggle,
    build_celebvhq,
    build_ffhq_without_json,
    build_hdtf,
    build_mead,
    build_vggface2,
    build_voxceleb2_mp4_only,
)


def read(root: Path, name: str, **options) -> tuple[dict[str, SourceSpec], list[MetadataError]]:
    items = list(make_adapter(name, str(root), **options).iter_sources())
    return ({i.rel_path: i for i in items if isinstance(i, SourceSpec)},
            [i for i in items if isinstance(i, MetadataError)])


def kinds(errors: list[MetadataError]) -> list[str]:
    return sorted(e.kind for e in errors)


@pytest.fixture()
def photo_folder(tmp_path, fixtures_dir) -> Path:
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    shutil.copyfile(fixtures_dir / "media" / "images" / "s1.jpg", root / "sub" / "s1.jpg")
    return root


# -- links, loops, unreadable entries: counted error rows, never a traceback ---------------------
def test_symlink_loops_are_counted_errors(photo_folder):
    (photo_folder / "sub" / "back").symlink_to("..")  # folder loop
    (photo_folder / "a.mp4").symlink_to("b.mp4")  # file links pointing at each other
    (photo_folder / "b.mp4").symlink_to("a.mp4")
    found = discover([DatasetEntry(name="folder", root=str(photo_folder))], out=None)
    assert [s.rel_path for s in found.specs] == ["sub/s1.jpg"]
    assert kinds(found.metadata_errors) == ["symlink_loop"] * 3
    assert found.counts["photos"].skipped == {"symlink_loop": 3}
    assert all(Path(e.file).name in ("back", "a.mp4", "b.mp4") for e in found.metadata_errors)


def test_a_root_that_is_a_link_loop_is_no_traceback(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    sources, errors = read(loop, "folder")
    assert not sources and len(errors) == 1


@pytest.mark.parametrize("name, build, outside", [
    ("ffhq", build_ffhq_without_json, "images1024x1024/01000/01000.png"),
    ("voxceleb2", build_voxceleb2_mp4_only, "dev/mp4/id00012/_raOc3-IRsw/00002.mp4"),
])
def test_links_out_of_the_root_are_refused_in_every_mode(tmp_path, fixtures_dir, name, build, outside):
    root = build(tmp_path / name, fixtures_dir)
    sources, errors = read(root, name)
    assert sources and outside not in sources
    assert all(Path(s.path).resolve().is_relative_to(root.resolve()) for s in sources.values())
    refused = [e for e in errors if e.kind == "link_out_of_root"]
    assert len(refused) == 1 and refused[0].file.endswith(outside) and "leaves the dataset root" in refused[0].message


def test_folder_refuses_a_link_to_a_system_file(photo_folder):
    (photo_folder / "passwd.jpg").symlink_to("/etc/passwd")
    found = discover([DatasetEntry(name="folder", root=str(photo_folder))], out=None)
    assert [s.path for s in found.specs] == [str((photo_folder / "sub" / "s1.jpg").resolve())]
    assert found.counts["photos"].skipped == {"link_out_of_root": 1}


def test_links_inside_the_root_are_one_source(photo_folder):
    (photo_folder / "alias").symlink_to("sub")  # a second name for a folder already listed
    (photo_folder / "again.jpg").symlink_to("sub/s1.jpg")
    sources, errors = read(photo_folder, "folder")
    assert list(sources) == ["sub/s1.jpg"] and not errors


def test_unreadable_folder_file_and_dangling_link_are_counted(photo_folder, monkeypatch):
    (photo_folder / "locked").mkdir()
    (photo_folder / "gone.jpg").symlink_to("nowhere.jpg")
    real_scandir = os.scandir

    def scandir(path):
        # Tests run as root here, where chmod 000 does not stop reading: refuse like the kernel would.
        if os.path.basename(str(path)) == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    shutil.copyfile(photo_folder / "sub" / "s1.jpg", photo_folder / "private.jpg")
    real_access = os.access
    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(
        os, "access", lambda path, mode: not str(path).endswith("private.jpg") and real_access(path, mode)
    )
    found = discover([DatasetEntry(name="folder", root=str(photo_folder))], out=None)
    assert [s.rel_path for s in found.specs] == ["sub/s1.jpg"]
    assert kinds(found.metadata_errors) == ["unreadable"] * 3
    assert found.counts["photos"].skipped == {"unreadable": 3}
    assert any("Permission denied" in e.message for e in found.metadata_errors)


def test_pictures_we_do_not_decode_are_recorded(photo_folder):
    for name in ("anim.gif", "photo.avif", "IMG_0001.HEIC", "clip.heif"):
        (photo_folder / name).write_bytes(b"\0" * 16)
    (photo_folder / "voice.m4a").write_bytes(b"\0")
    (photo_folder / "notes.txt").write_text("a note")
    found = discover([DatasetEntry(name="folder", root=str(photo_folder))], out=None)
    assert len(found.specs) == 1
    recorded = sorted(Path(e.file).name for e in found.metadata_errors)
    assert recorded == ["IMG_0001.HEIC", "anim.gif", "clip.heif", "photo.avif"]
    assert all(e.kind == "unsupported_extension" and "not decoded" in e.message for e in found.metadata_errors)
    # The audio file is counted too (no row); the note is not media.
    assert found.counts["photos"].skipped == {"unsupported_extension": 5}


# -- the layouts people download ------------------------------------------------------------------
def test_ffhq_without_json_takes_the_split_from_the_index(tmp_path, fixtures_dir):
    root = build_ffhq_without_json(tmp_path / "ffhq", fixtures_dir)
    found = discover([DatasetEntry(name="ffhq", root=str(root))], out=None)
    got = {s.rel_path: (s.split, s.labels["ffhq_index"]) for s in found.specs}
    assert got == {
        "images1024x1024/00000/00001.png": ("train", "00001"),
        "images1024x1024/59000/59999.png": ("train", "59999"),
        "images1024x1024/60000/60000.png": ("val", "60000"),
        "images1024x1024/69000/69999.png": ("val", "69999"),
    }
    c = found.counts["ffhq"]
    assert (c.files_found, c.sources, c.no_metadata) == (5, 4, 1)
    assert c.no_metadata_examples == ["images1024x1024/extra/cover.png"]
    assert c.skipped == {"link_out_of_root": 1, "unsupported_extension": 1}  # the link; the .gif


def test_celeba_kaggle_copy_nested_folder_and_csv_annotations(tmp_path, fixtures_dir):
    root = build_celeba_kaggle(tmp_path / "celeba", fixtures_dir)
    sources, errors = read(root, "celeba")
    assert not errors
    folder = "img_align_celeba/img_align_celeba"
    assert {k: (s.split, s.identity) for k, s in sources.items()} == {
        f"{folder}/000001.jpg": ("train", None), f"{folder}/000002.jpg": ("train", None),
        f"{folder}/000003.jpg": ("val", None), f"{folder}/000004.jpg": ("test", None)}
    first = sources[f"{folder}/000001.jpg"]
    # The real attribute row of 000001.jpg, read from the CSV: Smiling yes, Male no.
    attrs = first.labels["attributes"].split(",")
    assert "Smiling" in attrs and "Male" not in attrs
    assert first.clips[0].landmarks == [(69, 109), (106, 113), (77, 142), (73, 152), (108, 154)]


def test_vggface2_released_meta_rows_end_with_a_comma(tmp_path, fixtures_dir):
    root = build_vggface2(tmp_path / "vggface2", fixtures_dir)
    sources, _ = read(root, "vggface2")
    # 'n000002, "A_Fine_Frenzy",315,1, f,' : the name and the gender, not "A_Fine_Frenzy,315" and "".
    assert sources["test/n000002/0001_01.jpg"].labels == {"name": "A_Fine_Frenzy", "gender": "f"}
    assert sources["train/n000004/0001_01.jpg"].labels == {"name": "Smith, John Jr.", "gender": "m"}


def test_celebvhq_box_overrunning_the_frame_is_clamped(tmp_path, fixtures_dir):
    root = build_celebvhq(tmp_path / "celebvhq", fixtures_dir)
    sources, errors = read(root, "celebvhq")
    clip = {c.key: c for c in sources["downloaded_celebvhq/raw/-Ab_cd-EfGh.mp4"].clips}["-Ab_cd-EfGh_1"]
    assert (clip.box.x0, clip.box.y0, clip.box.x1, clip.box.y1) == (0.1964, 0.0, 1.0, 0.8815)
    assert not any("-Ab_cd-EfGh_1" in e.message for e in errors)


def test_voxceleb_box_units():
    from manifests.adapters.voxceleb2 import is_pixel_box

    assert not is_pixel_box(0.7, 0.1, 0.4, 0.7)  # normalised, past the right edge (x + w = 1.1)
    assert not is_pixel_box(-0.05, 0.0, 0.5, 0.9)  # normalised, past the left edge
    assert is_pixel_box(120.0, 40.0, 200.0, 260.0)  # VoxCeleb1 pixels


def test_raw_downloads_in_other_containers_and_namings(tmp_path, fixtures_dir):
    # CelebV-HQ raw video as yt-dlp may leave it (.webm name); HDTF raw video where
    # universome/HDTF's downloader puts it (_videos_raw/<subset>_<name>.mp4).
    celebvhq = build_celebvhq(tmp_path / "celebvhq", fixtures_dir)
    raw = celebvhq / "downloaded_celebvhq" / "raw"
    (raw / "-Ab_cd-EfGh.mp4").rename(raw / "-Ab_cd-EfGh.webm")
    sources, _ = read(celebvhq, "celebvhq")
    assert [c.key for c in sources["downloaded_celebvhq/raw/-Ab_cd-EfGh.webm"].clips] == [
        "-Ab_cd-EfGh_0",
        "-Ab_cd-EfGh_1",
    ]
    hdtf = build_hdtf(tmp_path / "hdtf", fixtures_dir)
    (hdtf / "_videos_raw").mkdir()
    (hdtf / "RD" / "Radio13.mp4").rename(hdtf / "_videos_raw" / "RD_Radio13.mp4")
    sources, errors = read(hdtf, "hdtf")
    assert [(c.key, c.start_s, c.end_s) for c in sources["_videos_raw/RD_Radio13.mp4"].clips] == [
        ("Radio13_0", 0.0, 35.0)
    ]
    assert len(errors) == 1  # only the planted broken time line


# -- counts and speed -----------------------------------------------------------------------------
def test_discovery_prints_and_keeps_one_count_line_per_dataset(tmp_path, fixtures_dir, capsys):
    root = build_mead(tmp_path / "mead", fixtures_dir)
    found = discover([DatasetEntry(name="mead", root=str(root))])
    line = capsys.readouterr().err.strip()
    assert line == ("mead: 14 files found, 12 sources, 2 files without metadata, 0 metadata rows without a file, "
                    "0 unparseable rows; skipped 1 link_out_of_root, 1 symlink_loop, 2 unsupported_extension")
    c = found.counts["mead"]
    assert (c.files_found, c.sources, c.no_metadata, c.rows_without_file, c.unparseable, c.skipped) == EXPECTED_COUNTS[
        "mead"
    ]


def test_stored_counts_give_back_the_printed_lines(tmp_path, fixtures_dir, capsys):
    import json

    from pipeline.sources import stored_discovery_lines

    root = build_mead(tmp_path / "mead", fixtures_dir)
    found = discover([DatasetEntry(name="mead", root=str(root))])
    printed = capsys.readouterr().err.strip().splitlines()
    assert stored_discovery_lines(json.dumps({"discovery": found.counts_json()})) == printed
    assert stored_discovery_lines(None) == []


def test_header_reads_run_in_threads_and_keep_order(monkeypatch):
    threads: set[int] = set()

    def slow_probe(path: str):
        threads.add(threading.get_ident())
        time.sleep(0.01)

    monkeypatch.setattr(probe, "video_info", slow_probe)
    items = [f"/videos/{i:03d}.mp4" for i in range(40)]
    assert list(probe.with_headers(items, lambda p: p, "video", batch=16)) == items
    assert len(threads) > 1
