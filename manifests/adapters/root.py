"""A dataset root as the adapters see it: a local folder or an object-store prefix (``s3://...``).

Adapters name everything below the root by its path relative to the root (posix); this turns
such a path into the name a user and the build see (a local path, or the file's full URI),
and answers the few questions adapters ask of metadata files and folders they look for by
name: does it exist, is it a file or a folder. Reads of metadata files go by that name
through :func:`textfiles.read_text`; listing is :class:`files.FileIndex`'s.

Local roots are plain ``pathlib`` tests, exactly as before object stores were supported
(link rules live in ``FileIndex``); remote ones go through ``manifests.storage``, where a
folder is a prefix with objects under it and there are no links.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


class DatasetRoot:
    def __init__(self, root: str | os.PathLike | DatasetRoot):
        from ..storage import is_uri, resolve

        if isinstance(root, DatasetRoot):
            root = root.given
        text = os.fspath(root)
        self.remote = is_uri(text)
        # As the user gave it: error rows and specs name local files as before (not resolved).
        self.given = text.rstrip("/") if self.remote else str(Path(text))
        self._location = resolve(text) if self.remote else None

    def __str__(self) -> str:
        return self.given

    def __repr__(self) -> str:
        return f"DatasetRoot({self.given!r})"

    def name(self, rel: str = "") -> str:
        """The full name of ``rel`` (a path below the root): a local path or a URI."""
        if not rel:
            return self.given
        return f"{self.given}/{rel}" if self.remote else str(Path(self.given) / rel)

    def is_file(self, rel: str) -> bool:
        return self._location.is_file(rel) if self.remote else Path(self.name(rel)).is_file()

    def is_dir(self, rel: str = "") -> bool:
        return self._location.is_dir(rel) if self.remote else Path(self.name(rel)).is_dir()

    def exists(self, rel: str) -> bool:
        """A file or a folder (on an object store: a prefix with objects under it)."""
        return self._location.exists(rel) if self.remote else Path(self.name(rel)).exists()

    def first_existing(self, candidates: Iterable[str]) -> str | None:
        """The first of ``candidates`` (paths below the root) that exists, file or folder."""
        return next((rel for rel in candidates if self.exists(rel)), None)
