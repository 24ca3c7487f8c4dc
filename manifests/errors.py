"""The one base of every error this project raises on purpose.

Each error the command line can show derives from :class:`PortraitError` (here, or through a
package's own base: ``portrait_model.PortraitModelError``), so ``portrait`` catches this class
once and prints ``portrait: error: <message>``: the message is one line, written for the user,
and says what to change. Everything else that escapes is a bug and keeps its traceback.

It lives in ``manifests/``, the lowest layer (pipeline -> stages -> manifests;
portrait_model -> manifests), so every package can derive from it.
"""
from __future__ import annotations


class PortraitError(Exception):
    """A problem with the input, the configuration or the storage: ``str(error)`` is one line."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
