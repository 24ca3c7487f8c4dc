"""What is on disk under a dataset root: a safe, counted listing shared by every adapter.

Adapters never walk folders or test paths themselves: they scan the folders their layout uses
once, then look files up here (by path relative to the root, or by file name). That gives every
adapter the same rule for links (:func:`base.link_verdict`), the same treatment of loops and
unreadable folders (an error row each, never a traceback), and the counts a user checks after
discovery: media files found, files no metadata row claimed, files skipped by reason.

Only names are kept (relative path strings), so a million-image dataset costs tens of MB.
A root may be an object-store URI (``s3://bucket/prefix``): it is listed with one recursive
listing per folder (no links there); files are then named by their URIs.
"""
from __future__ import annotations

import os
import posixpath
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from .base import (
    LINK_LOOP,
    MEDIA_EXTENSIONS,
    METADATA_EXTENSIONS,
    OUTSIDE_ROOT,
    UNREADABLE,
    UNSUPPORTED,
    UNSUPPORTED_PICTURES,
    MetadataError,
    link_verdict,
)
from .root import DatasetRoot

# A link to a folder already listed by its real path: not followed again (its files would be
# listed twice under two names), counted only.
DUPLICATE_LINK = "link_to_listed_folder"


class FileIndex:
    """Media files under some folders of a dataset root, found once, looked up many times."""

    def __init__(self, root: str | Path | DatasetRoot, dataset: str):
        from ..storage import is_uri

        root = root.given if isinstance(root, DatasetRoot) else root
        self.remote = is_uri(root)
        self.root = str(root).rstrip("/") if self.remote else Path(root)
        self.real_root = self.root if self.remote else os.path.realpath(self.root)
        self.dataset = dataset
        self.files: dict[str, str] = {}  # rel as listed (a link's own name too) -> real rel
        self.outside: set[str] = set()  # listed rels of links that leave the root
        self.problems: list[MetadataError] = []  # loops, unreadable entries, links out, pictures we skip
        self.skipped: Counter = Counter()  # reason -> files (and folders) discovery did not list
        self.claimed: set[str] = set()  # real rels some metadata row (or path rule) used
        self.metadata_files: list[str] = []  # listed rels of text/CSV/JSON files, in walk order
        self._names: dict[str, list[str]] | None = None
        self._visited: set[str] = set()

    # -- scanning --------------------------------------------------------------------------
    @classmethod
    def scan(cls, root: str | Path | DatasetRoot, dataset: str, folders: Iterable[str | Path] = ("",),
             extensions: frozenset[str] = MEDIA_EXTENSIONS) -> FileIndex:
        """List ``extensions`` files under each of ``folders`` (relative to root; missing ones
        are ignored: layouts vary). Progress shows on a terminal only."""
        from tqdm import tqdm

        index = cls(root, dataset)
        bar = tqdm(desc=f"listing {dataset}", unit=" files", disable=None, file=sys.stderr, leave=False)
        try:
            if index.remote:
                for folder in folders:
                    index._list_remote(str(folder).strip("/"), extensions, bar)
                return index
            for folder in folders:
                top = os.path.join(index.root, str(folder)) if str(folder) else str(index.root)
                if os.path.isdir(top):
                    index._walk(top, extensions, bar)
        finally:
            bar.close()
        return index

    def _problem(self, kind: str, path: str, message: str) -> None:
        self.skipped[kind] += 1
        self.problems.append(MetadataError(self.dataset, path, None, message, kind=kind))

    def _walk(self, top: str, extensions: frozenset[str], bar) -> None:
        # Iterative, sorted (deterministic), hidden entries skipped; folders entered once by
        # their real path, so a link back to an ancestor cannot recurse. Relative paths are
        # built by joining names (os.path.relpath per file would dominate on a million files).
        stack = [top]
        while stack:
            folder = stack.pop()
            problem, real = link_verdict(self.real_root, folder)
            if problem is not None:
                self._problem(problem, folder, _MESSAGES[problem].format(what="folder"))
                continue
            if real in self._visited:
                self.skipped[DUPLICATE_LINK] += 1
                continue
            self._visited.add(real)
            try:
                with os.scandir(folder) as it:
                    entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
            except OSError as e:
                self._problem(UNREADABLE, folder, f"cannot list folder: {e.strerror or e}")
                continue
            listed_dir = _rel(folder, str(self.root))
            real_dir = _rel(real, self.real_root)
            subfolders = []
            for entry in entries:
                try:
                    is_link = entry.is_symlink()
                    is_dir = entry.is_dir()  # follows links; False for dangling ones and loops
                except OSError:
                    is_link, is_dir = True, False
                if is_dir:
                    if is_link and _is_ancestor(os.path.realpath(entry.path), entry.path):
                        self._problem(
                            LINK_LOOP, entry.path, "link loop: the folder link points back to a folder above it"
                        )
                    else:
                        subfolders.append(entry.path)
                    continue
                self._file(entry, listed_dir, real_dir, is_link, extensions)
                bar.update(1)
            stack.extend(reversed(subfolders))

    def _list_remote(self, folder: str, extensions: frozenset[str], bar) -> None:
        """An object-store folder: one recursive listing, hidden names skipped, in the order the
        local walk meets files (so adapters that keep listing order give the same specs)."""
        from ..storage import resolve

        loc = resolve(self.root)
        try:
            found = loc.files(folder, recursive=True)
        except OSError as e:
            self._problem(UNREADABLE, loc.url(folder), f"cannot list folder: {str(e).splitlines()[0]}")
            return
        for rel in sorted(found, key=_walk_order):
            if any(part.startswith(".") for part in rel.split("/")):
                continue
            name = posixpath.basename(rel)
            ext = os.path.splitext(name)[1].lower()
            metadata = ext in METADATA_EXTENSIONS and ext not in extensions
            if ext not in extensions and not metadata:
                if ext in UNSUPPORTED_PICTURES:
                    self._problem(
                        UNSUPPORTED, loc.url(rel), f"unsupported picture format {ext}: not decoded by this build"
                    )
                else:
                    self.skipped[UNSUPPORTED] += 1
                continue
            if metadata:
                self.metadata_files.append(rel)
            else:
                self.files[rel] = rel
            bar.update(1)
        self._names = None

    def _file(self, entry: os.DirEntry, listed_dir: str, real_dir: str, is_link: bool,
              extensions: frozenset[str]) -> None:
        name, path = entry.name, entry.path
        ext = os.path.splitext(name)[1].lower()
        metadata = ext in METADATA_EXTENSIONS and ext not in extensions
        if ext not in extensions and not metadata:
            if ext in UNSUPPORTED_PICTURES:
                self._problem(UNSUPPORTED, path, f"unsupported picture format {ext}: not decoded by this build")
            else:  # audio, archives, or media of the other kind than this dataset's
                self.skipped[UNSUPPORTED] += 1
            return
        listed = f"{listed_dir}/{name}" if listed_dir else name
        # The real path names the source (its id): a file reached through a folder link inside
        # the root is the same source as by its own path.
        if is_link:
            problem, real = link_verdict(self.real_root, path)
            if problem is not None:
                if problem == OUTSIDE_ROOT:
                    self.outside.add(listed)
                self._problem(problem, path, _MESSAGES[problem].format(what="file"))
                return
            real_rel = _rel(real, self.real_root)
        else:
            real_rel = f"{real_dir}/{name}" if real_dir else name
        if not os.access(path, os.R_OK):
            self._problem(UNREADABLE, path, "cannot read file: permission denied")
            return
        if metadata:  # per-file metadata (VFHQ, VoxCeleb2 txt): listed, not counted as media
            self.metadata_files.append(listed)
            return
        self.files[listed] = real_rel
        self._names = None

    # -- lookups ---------------------------------------------------------------------------
    def real(self, listed: str) -> tuple[str, str]:
        """(absolute path, real rel) of a listed file, marked as claimed by metadata."""
        rel = self.files[listed]
        self.claimed.add(rel)
        return f"{self.real_root}/{rel}" if self.remote else os.path.join(self.real_root, rel), rel

    def path_of(self, listed: str) -> str | None:
        """Absolute real path of a listed file, None when not listed (not marked claimed: for
        reading headers ahead)."""
        rel = self.files.get(listed)
        if rel is None:
            return None
        return f"{self.real_root}/{rel}" if self.remote else os.path.join(self.real_root, rel)

    def find(self, rel: str) -> tuple[str, str] | None:
        """A file named by metadata, relative to the root; None when not on disk. Raises
        ValueError (message for the user) when the path would leave the root."""
        norm = posixpath.normpath(rel.replace("\\", "/"))
        if norm.startswith("/") or norm == ".." or norm.startswith("../") or (len(norm) > 1 and norm[1] == ":"):
            raise ValueError(f"path {rel!r} leaves the dataset root")
        if norm in self.outside:
            raise ValueError(f"path {rel!r} is a link that leaves the dataset root")
        if norm not in self.files:
            return None
        return self.real(norm)

    def by_name(self, name: str) -> list[str]:
        """Listed rels of every file called ``name`` (for layouts that put files anywhere)."""
        if self._names is None:
            self._names = {}
            for listed in sorted(self.files):
                self._names.setdefault(posixpath.basename(listed), []).append(listed)
        return self._names.get(name, [])

    def listed(self, under: str = "") -> list[str]:
        """Listed rels under a folder (relative to the root), sorted."""
        prefix = under.rstrip("/") + "/" if under else ""
        return sorted(k for k in self.files if k.startswith(prefix))

    def restrict(self, folders: Iterable[str]) -> None:
        """Forget files outside ``folders`` (relative to the root): parts of the dataset an
        option leaves out (CelebA's in-the-wild images when reading the aligned ones) are
        neither sources nor files without metadata."""
        prefixes = tuple(f.rstrip("/") + "/" for f in folders)
        self.files = {k: v for k, v in self.files.items() if k.startswith(prefixes)}
        self._names = None

    # -- counts ----------------------------------------------------------------------------
    def media_count(self) -> int:
        return len(set(self.files.values()))

    def unclaimed(self) -> list[str]:
        """Real rels of media files that no metadata row used, sorted."""
        return sorted(set(self.files.values()) - self.claimed)


def _rel(path: str, base: str) -> str:
    """``path`` relative to ``base`` (which contains it), posix, '' for ``base`` itself."""
    return "" if path == base else os.path.relpath(path, base).replace(os.sep, "/")


def _walk_order(rel: str) -> tuple:
    """Sort key of the local walk: a folder's files by name, then its subfolders by name."""
    *folders, name = rel.split("/")
    return (*((1, f) for f in folders), (0, name))


def _is_ancestor(real_target: str, link_path: str) -> bool:
    here = os.path.realpath(os.path.dirname(link_path))
    return here == real_target or here.startswith(real_target.rstrip(os.sep) + os.sep)


_MESSAGES = {
    OUTSIDE_ROOT: "{what} is a link that leaves the dataset root: not followed",
    LINK_LOOP: "link loop: the {what} link cannot be resolved",
    UNREADABLE: "cannot read {what}: dangling link or no permission",
}
