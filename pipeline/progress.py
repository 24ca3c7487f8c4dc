"""Progress inside long sources: how far each source in flight has got, on the build's bar.

The bar counts committed sources, which says nothing for an hour while one long video is
curated. So a stage reports how far it is through its source (``SourceWork.report``: seconds
of video, or frames), the runner sends that to a :class:`ProgressBoard` (a Ray actor with no
CPU, or a plain object in an inline build), and a thread of the driver shows the sources in
flight on the bar's postfix every second. Reports are throttled in the workers (one a second
per source) and best effort: a lost report costs a stale line, never the build.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

_EVERY_S = 1.0  # a worker reports a source's progress at most this often
_SHOWN = 2  # sources in flight named on the bar


class ProgressBoard:
    """Where workers report: {source: (name, done, total, unit)}. A Ray actor in a Ray build."""

    def __init__(self):
        self.items: dict[str, tuple[str, float, float | None, str]] = {}

    def report(self, source_id: str, name: str, done: float, total: float | None, unit: str) -> None:
        self.items[source_id] = (name, done, total, unit)

    def finish(self, source_id: str) -> None:
        self.items.pop(source_id, None)

    def snapshot(self) -> dict:
        return dict(self.items)


def reporter(board, source_id: str, name: str, remote: bool) -> Callable[[float, float | None, str], None]:
    """A stage's report hook for one source: throttled calls to ``board.report``."""
    last = [0.0]

    def report(done: float, total: float | None, unit: str = "s") -> None:
        now = time.monotonic()
        if now - last[0] < _EVERY_S:
            return
        last[0] = now
        try:
            if remote:
                board.report.remote(source_id, name, done, total, unit)
            else:
                board.report(source_id, name, done, total, unit)
        except Exception:  # progress is best effort (a dead board must not cost the source)
            pass

    return report


def finished(board, source_id: str, remote: bool) -> None:
    try:
        if remote:
            board.finish.remote(source_id)
        else:
            board.finish(source_id)
    except Exception:  # best effort, as report()
        pass


def _amount(value: float, unit: str) -> str:
    if unit == "s":
        m, s = divmod(int(value), 60)
        h, m = divmod(m, 60)
        return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
    return f"{int(value)}"


def describe(items: dict) -> str:
    """'a.mp4 12:30/1:00:00, b.mp4 0:40/2:10' for the sources furthest from done."""
    rows = sorted(items.values(), key=lambda r: (r[1] / r[2]) if r[2] else 0.0)[:_SHOWN]
    parts = [
        f"{name} {_amount(done, unit)}/{_amount(total, unit) if total else '?'}" + ("" if unit == "s" else f" {unit}")
        for name, done, total, unit in rows
    ]
    more = len(items) - len(rows)
    return ", ".join(parts) + (f" +{more}" if more > 0 else "")


class BarUpdater:
    """A driver thread that shows the board's sources in flight on the bar, every second."""

    def __init__(self, snapshot: Callable[[], dict], show: Callable[[str], None], every_s: float = 1.0):
        self.snapshot, self.show, self.every_s = snapshot, show, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="portrait-progress", daemon=True)

    def __enter__(self) -> BarUpdater:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.show(describe(self.snapshot()))
            except Exception:  # a board gone with its cluster: the build reports that, not us
                return
