"""Quiet by default: what a CLI user did not ask for (Ray's startup notices, glog/TFLite lines of
mediapipe, C++ log lines of Ray's core worker, deprecation warnings of libraries) is shown only
with ``--verbose``. Errors still print: a failing build says why in one line.

Environment variables are set only where the user has not set them, before Ray or mediapipe
is imported (they read them once, at import or process start).
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

# glog (mediapipe's C++), TensorFlow Lite, Ray's C++ core worker in the driver, diffusers.
# (Not RAY_BACKEND_LOG_LEVEL: setting it makes Ray print a line saying so.)
QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3", "DIFFUSERS_VERBOSITY": "error",
             "TRANSFORMERS_VERBOSITY": "error"}
_NOISY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "absl", "filelock", "urllib3")


def quiet(verbose: bool) -> None:
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # Ray Data configures its logger from this file when it is imported (its console at ERROR).
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(Path(__file__).with_name("ray_data_logging.yaml")))
    # Library deprecations are for the people who upgrade the pins, not for a build's user. A
    # filter is not enough: Ray inserts its own ("module") in front when it is imported.
    shown = warnings.showwarning

    def showwarning(message, category, *args, **kwargs):
        if not issubclass(category, (DeprecationWarning, FutureWarning)):
            shown(message, category, *args, **kwargs)

    warnings.showwarning = showwarning
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def silence_native_stderr() -> None:
    """Native libraries write their notices straight to file descriptor 2, past every Python
    filter: mediapipe's TFLite/absl lines in an inline build, Ray's C++ core worker in the
    driver. For the rest of the process, fd 2 goes to /dev/null, while Python's ``sys.stderr``
    (the progress bar, warnings of ours, one-line errors, tracebacks) keeps writing where it
    did, through a duplicate of the descriptor. Processes started from here (Ray's own) inherit
    the silence; they log to their files. For the console script only (a process of its own),
    and only while ``sys.stderr`` is the process's own."""
    if sys.stderr is not sys.__stderr__:
        return
    try:
        fd = sys.stderr.fileno()
        sys.stderr.flush()
        kept = os.dup(fd)
    except (AttributeError, OSError, ValueError):  # no real stderr (embedded, closed): nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    sys.stderr = sys.__stderr__ = os.fdopen(kept, "w", buffering=1, encoding=sys.stderr.encoding,
                                           errors="backslashreplace")


def local_ray_auth(address: str | None) -> None:
    """A local Ray instance turns token auth on by itself and warns that it did; asking for it
    explicitly keeps it on without the warning. Not for a cluster (--address / RAY_ADDRESS):
    there, the cluster's own setting and token apply. Only before Ray is imported: Ray reads
    the mode at import and again at ``ray.init``, and a process that saw two modes (a test
    session, an API user calling the CLI in-process) is refused by its own instances."""
    if not address and not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
