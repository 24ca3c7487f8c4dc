"""Entry point for a cluster: ``ray submit ray_cluster.yaml pipeline/ray_entry.py build --address auto ...``.

`ray submit` copies this file to the head node and runs it with the head's ``python``; it is
the `portrait` command itself. The package is installed on every node by ray_cluster.yaml's
setup_commands (into ~/portrait-data/.venv); when the ``python`` that runs this file is not
that environment's, the file runs itself again with the project's interpreter
(``PORTRAIT_PYTHON``, else ~/portrait-data/.venv/bin/python).
"""
import os
import sys
from pathlib import Path


def _project_python() -> str | None:
    for candidate in (os.environ.get("PORTRAIT_PYTHON"), Path.home() / "portrait-data" / ".venv" / "bin" / "python"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


if __name__ == "__main__":
    try:
        from pipeline.cli import main
    except ImportError:
        python = None if os.environ.get("PORTRAIT_ENTRY_RERUN") else _project_python()
        if python is None:
            sys.exit("pipeline is not installed for this python: install the project (pip install -e .) "
                     "or set PORTRAIT_PYTHON to its environment's python")
        os.environ["PORTRAIT_ENTRY_RERUN"] = "1"  # once: that python must have the package
        os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])
    sys.exit(main())
