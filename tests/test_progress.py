"""Progress a user sees on long work: inside a source (seconds of video curated, frames
featurised) and during discovery, not only a count of finished sources."""
from __future__ import annotations

import re
import time

from manifests.adapters.base import SourceSpec
from pipeline import progress
from pipeline.build import stage_plans
from pipeline.config import load_config
from pipeline.progress import BarUpdater, ProgressBoard, describe
from pipeline.ray_runner import ChainUDF
from pipeline.results import units_to_json
from pipeline.sources import dataset_entries, discover
from stages.probe import probe


class RecordingBoard(ProgressBoard):
    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def report(self, *args):
        self.calls.append(args)
        super().report(*args)


def test_a_video_being_curated_reports_how_far_it_got(media_dir, monkeypatch):
    monkeypatch.setattr(progress, "_EVERY_S", 0.0)  # every report, not one a second
    video = media_dir / "videos" / "d0.mp4"
    spec = SourceSpec(dataset="media", path=str(video), rel_path="videos/d0.mp4", media_type="video")
    (plan,) = stage_plans(load_config(None, {"features.enabled": False}), "r", 1)
    board = RecordingBoard()
    ChainUDF(plan.steps, "r", progress=board)({"unit": [0], "unit_json": units_to_json([[spec]])})
    duration = probe(str(video), "video").duration_s
    assert board.calls and {(c[0], c[1], c[3], c[4]) for c in board.calls} == {
        (spec.source_id, "d0.mp4", duration, "s")
    }
    seconds = [c[2] for c in board.calls]
    assert seconds == sorted(seconds) and seconds[-1] >= 0.8 * duration  # it moved through the video
    assert board.snapshot() == {}  # a finished source leaves the board


def test_the_bar_names_the_sources_in_flight_and_how_far_they_are():
    board = ProgressBoard()
    board.report("a", "long.mp4", 750, 3600, "s")
    board.report("b", "short.mp4", 10, 20, "frames")
    assert describe(board.snapshot()) == "long.mp4 12:30/1:00:00, short.mp4 10/20 frames"
    shown: list[str] = []
    with BarUpdater(board.snapshot, shown.append, every_s=0.05):
        deadline = time.monotonic() + 10
        while not shown and time.monotonic() < deadline:
            time.sleep(0.05)
    assert shown[-1] == "long.mp4 12:30/1:00:00, short.mp4 10/20 frames"


def test_discovery_counts_sources_while_it_is_still_listing(media_dir, capsys, monkeypatch):
    from pipeline import sources

    real = sources.make_adapter

    def slow_adapter(*args, **kwargs):  # a dataset that takes a while to list (a big one, a slow disk)
        adapter = real(*args, **kwargs)
        listing = adapter.iter_sources

        def iter_sources():
            for item in listing():
                time.sleep(0.3)
                yield item

        adapter.iter_sources = iter_sources
        return adapter

    monkeypatch.setattr(sources, "make_adapter", slow_adapter)
    entries = dataset_entries(load_config(), [str(media_dir / "images")], [])
    found = discover(entries, out=None, progress=True)
    counts = [int(n) for n in re.findall(r"discover: (\d+) sources", capsys.readouterr().err)]
    assert len(found.specs) > 3 and len(set(counts)) >= 3 and counts == sorted(counts)  # it moved while listing
