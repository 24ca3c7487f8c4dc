"""Entry point for a cluster: ``ray submit ray_cluster.yaml pipeline/ray_entry.py build --address auto ...``.

`ray submit` runs a script file on the head node; this one is the `portrait` command itself
(the package is installed there by ray_cluster.yaml's setup_commands).
"""
import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
