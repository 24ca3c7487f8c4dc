"""Cheap, cached look at a media file's size and frame rate, for metadata given in frames or
at a reference resolution. Only container headers are read (PyAV for video, Pillow for images).
Sizes are the coded width/height (display rotation is not applied: dataset boxes are given
on the stored frames). A file named by its URI (a dataset on an object store) is read through
``manifests.storage`` as a random-access file: only the ranges the header parser asks for are
fetched, never the whole file.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from .textfiles import EntryError

T = TypeVar("T")


@dataclass(frozen=True)
class MediaInfo:
    width: int
    height: int
    fps: float | None = None  # None for images


# Reads of a remote file are ranged requests: buffered, so that a parser's many small reads
# (JPEG markers, MP4 boxes) cost a few requests, not one each.
_REMOTE_BUFFER = 256 << 10


@contextlib.contextmanager
def _opened(path: str):
    """A local path as it is (the parsers open it themselves), a URI as a buffered file."""
    from ..storage import is_uri, locate

    if not is_uri(path):
        yield path
        return
    location, name = locate(path)
    with io.BufferedReader(location.open_input(name), _REMOTE_BUFFER) as f:  # closes the remote file too
        yield f


@lru_cache(maxsize=8192)
def video_info(path: str) -> MediaInfo:
    """Width, height and average frame rate of a video's first video stream."""
    import av

    try:
        with _opened(path) as source, av.open(source) as container:
            if not container.streams.video:
                raise EntryError(f"no video stream in {path}")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate or not stream.width or not stream.height:
                raise EntryError(f"cannot read frame rate or size of {path}")
            return MediaInfo(int(stream.width), int(stream.height), float(rate))
    except EntryError:
        raise
    except Exception as e:  # PyAV raises many kinds of errors on broken files
        raise EntryError(f"cannot open video {path}: {e}") from None


@lru_cache(maxsize=65536)
def image_info(path: str) -> MediaInfo:
    """Width and height of an image (header only)."""
    from PIL import Image

    try:
        with _opened(path) as source, Image.open(source) as im:
            w, h = im.size
    except Exception as e:
        raise EntryError(f"cannot open image {path}: {e}") from None
    return MediaInfo(int(w), int(h), None)


def with_headers(items: Iterable[T], path_of: Callable[[T], str | Path | None], what: str = "video",
                 batch: int = 2048) -> Iterator[T]:
    """Yield ``items`` in order, the headers of their files read ahead in a thread pool.

    Header reads wait on the disk (PyAV and Pillow release the GIL while reading), so threads
    overlap them: before each batch of items is handed to the adapter's own single-threaded
    loop, the batch's files are probed in parallel into the caches above, so the loop only hits
    the cache. Batches keep that within the cache size on million-file datasets. Failures are
    left for the loop to report with the entry's file and line. Progress shows on a terminal.
    """
    from tqdm import tqdm

    probe = video_info if what == "video" else image_info
    items = list(items)

    def one(path: str) -> None:
        try:
            probe(path)
        except EntryError:
            pass

    workers = min(32, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
            total=len(items), desc=f"reading {what} headers", unit=" files", disable=None,
            file=sys.stderr, leave=False) as bar:
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            paths = {str(p) for p in map(path_of, chunk) if p is not None}
            if len(paths) > 1:
                list(pool.map(one, sorted(paths)))
            bar.update(len(chunk))
            yield from chunk
