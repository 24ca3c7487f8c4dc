"""Where a build's files live: a local folder or an object-store URI, as one pyarrow filesystem.

``resolve("s3://bucket/prefix")`` or ``resolve("/data/out")`` gives a :class:`Location`: the
filesystem, the root inside it, and the few operations the build needs (list, read, write
atomically, delete, upload, download). Paths below a location are relative, posix.

S3 credentials and endpoint come from the standard environment, as boto3 and the AWS CLI read
them: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``), ``AWS_REGION``
(or ``AWS_DEFAULT_REGION``) and ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for
S3-compatible servers. Other schemes go to ``pyarrow.fs.FileSystem.from_uri``; one it cannot
resolve, or a server that does not answer, is a :class:`StorageUnavailable` (one line).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import PortraitError

_COPY_CHUNK = 8 << 20


class StorageUnavailable(PortraitError):
    """A location that cannot be used: unknown scheme, unreachable server, no such bucket."""


def is_uri(text: str | os.PathLike) -> bool:
    """True for ``scheme://...`` other than ``file://`` (a Path never is one)."""
    if not isinstance(text, str):
        return False
    scheme = urlparse(text).scheme
    return "://" in text and len(scheme) > 1 and scheme != "file"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@cache
def s3_filesystem(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    """One S3 filesystem per endpoint and region (per process): credentials from the environment.

    Few retries and short connect timeouts: an unreachable server must fail in seconds with one
    line, not after minutes of back-off."""
    kwargs = dict(region=region or "us-east-1", connect_timeout=5, request_timeout=60,
                  retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3))
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs.update(access_key=key, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN"))
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else "https://" + endpoint)
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
    return pafs.S3FileSystem(**kwargs)


def _s3_from_env() -> pafs.S3FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    return s3_filesystem(endpoint, region)


@dataclass(frozen=True)
class Location:
    fs: pafs.FileSystem
    root: str  # the root inside ``fs`` ("bucket/prefix" for S3, an absolute path locally), no trailing /
    uri: str  # how to name it to a user (and to ``resolve`` it again)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def __fspath__(self) -> str:  # a local location is a path (os.path, Path(...) take it)
        if not self.is_local:
            raise TypeError(f"{self.uri} is not a local path")
        return self.root

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise ValueError(f"{self.uri} is not a local folder")
        return Path(self.root)

    def path(self, rel: str = "") -> str:
        """``rel`` inside the filesystem (what pyarrow calls take)."""
        return f"{self.root}/{rel}" if rel else self.root

    def url(self, rel: str = "") -> str:
        """``rel`` as a user (or DuckDB, through a registered filesystem) names it."""
        if self.is_local:
            return self.path(rel)
        return f"{self.uri}/{rel}" if rel else self.uri

    def child(self, rel: str) -> Location:
        return Location(self.fs, self.path(rel), self.url(rel))

    # -- reads ----------------------------------------------------------------------------
    def info(self, rel: str = "") -> pafs.FileInfo:
        return self.fs.get_file_info(self.path(rel))

    def exists(self, rel: str = "") -> bool:
        return self.info(rel).type != pafs.FileType.NotFound

    def is_dir(self, rel: str = "") -> bool:
        return self.info(rel).type == pafs.FileType.Directory

    def is_file(self, rel: str = "") -> bool:
        return self.info(rel).type == pafs.FileType.File

    def files(self, rel: str = "", recursive: bool = False) -> dict[str, int]:
        """Files under ``rel`` (one listing, however many there are): relative path -> size."""
        base = self.path(rel)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=recursive))
        except FileNotFoundError:
            return {}
        prefix = len(self.root) + 1
        return {i.path[prefix:]: i.size for i in infos if i.type == pafs.FileType.File}

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def open_input(self, rel: str):
        return self.fs.open_input_file(self.path(rel))

    def download(self, rel: str, dest: str | Path) -> None:
        with self.fs.open_input_stream(self.path(rel)) as src, open(dest, "wb") as dst:
            while block := src.read(_COPY_CHUNK):
                dst.write(block)

    # -- writes ---------------------------------------------------------------------------
    def makedirs(self, rel: str = "") -> None:
        if self.is_local:  # object stores have no folders
            os.makedirs(self.path(rel), exist_ok=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.fs.open_output_stream(self.path(rel)) as f:
            f.write(data)

    def upload(self, src: str | Path, rel: str) -> None:
        """Copy a local file to ``rel`` so that readers see the old file or the new one, never a
        part: locally a temporary name, flushed and renamed; an object-store PUT (or multipart
        upload) appears whole when it completes."""
        if self.is_local:
            final = self.path(rel)
            partial = f"{final}.{uuid.uuid4().hex[:8]}.partial"
            try:
                with open(src, "rb") as s, open(partial, "wb") as d:
                    shutil.copyfileobj(s, d, _COPY_CHUNK)
                    d.flush()
                    os.fsync(d.fileno())
                os.replace(partial, final)
                fsync_dir(os.path.dirname(final))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
                raise
            return
        with open(src, "rb") as s, self.fs.open_output_stream(self.path(rel)) as d:
            while block := s.read(_COPY_CHUNK):
                d.write(block)

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    def check(self) -> None:
        """Fail now, in one line, when the location cannot be reached (a server that does not
        answer, a bucket that does not exist), before anything is written anywhere."""
        try:
            info = self.fs.get_file_info(self.path())
            if not self.is_local:
                bucket = self.root.split("/", 1)[0]
                if self.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                    raise StorageUnavailable(f"{self.uri}: bucket {bucket!r} does not exist")
            if info.type == pafs.FileType.File:
                raise StorageUnavailable(f"{self.uri} is a file, not a folder")
        except OSError as e:
            raise StorageUnavailable(f"cannot reach {self.uri}: {_first_line(e)}") from None


def fsync_dir(folder: str | Path) -> None:
    """A rename is durable only once its folder is flushed."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def resolve(where: str | os.PathLike | Location) -> Location:
    """A local path (or file:// URI) or an object-store URI as a :class:`Location`."""
    if isinstance(where, Location):
        return where
    text = os.fspath(where)
    if not is_uri(text):
        if text.startswith("file://"):
            text = urlparse(text).path
        root = os.path.abspath(text)
        return Location(pafs.LocalFileSystem(), root.rstrip("/") or "/", root)
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    if scheme in ("s3", "s3a"):
        if not parsed.netloc:
            raise StorageUnavailable(f"{text}: no bucket named")
        root = (parsed.netloc + parsed.path).rstrip("/")
        return Location(_s3_from_env(), root, f"s3://{root}")
    try:
        fs, root = pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, ValueError, NotImplementedError, OSError) as e:
        raise StorageUnavailable(f"unsupported storage location {text!r} (local paths and s3:// URIs work): "
                                 f"{_first_line(e)}") from None
    return Location(fs, root.rstrip("/"), text.rstrip("/"))


def locate(uri: str) -> tuple[Location, str]:
    """(location of the folder holding a file, the file's name in it), for a file named by its
    full URI or local path: the file's own reads (``read_bytes``, ``open_input``) then go
    through that location."""
    text = os.fspath(uri)
    parent, name = text.rsplit("/", 1) if is_uri(text) else os.path.split(os.path.abspath(text))
    return resolve(parent), name


@contextlib.contextmanager
def fetched(uri: str) -> Iterator[str]:
    """A remote media file copied to a local temporary file (same extension: decoders look at
    it) for the duration of the block; removed after. Local paths are given as they are."""
    if not is_uri(uri):
        yield uri
        return
    parent, name = uri.rsplit("/", 1)
    loc = resolve(parent)
    fd, tmp = tempfile.mkstemp(prefix="portrait-media-", suffix=os.path.splitext(name)[1])
    os.close(fd)
    try:
        loc.download(name, tmp)
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def duckdb_filesystem(loc: Location):
    """An fsspec view of the location's pyarrow filesystem that DuckDB can read through
    (``con.register_filesystem``): DuckDB's httpfs is not available offline."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    scheme = loc.uri.split("://", 1)[0]

    class _Wrapped(ArrowFSWrapper):
        protocol = (scheme,)

        @classmethod
        def _strip_protocol(cls, path):
            path = path[len(scheme) + 3:] if isinstance(path, str) and path.startswith(scheme + "://") else path
            return path.rstrip("/")

    return _Wrapped(loc.fs)
