"""MediaPipe imported without matplotlib in the workers, and not at all in the driver
(stages/library_imports.py; albumentations without torch: tests/test_image_views.py).
Each check runs in a fresh process: this one has imported both."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_python(code: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, check=True).stdout.split()


def test_a_worker_runs_mediapipe_models_without_importing_pyplot_which_still_imports_after():
    out = run_python(
        "import sys, numpy as np\n"
        "from stages.faces import FaceAnalyzer\n"
        "faces = FaceAnalyzer()\n"
        "faces.setup()\n"
        "obs = faces.analyze(np.zeros((128, 128, 3), np.uint8))\n"  # the models run
        "print(obs.n_faces, 'matplotlib.pyplot' in sys.modules)\n"
        "import matplotlib.pyplot as plt\n"
        "from mediapipe.python.solutions import drawing_utils\n"
        # mediapipe's own drawing helpers reach the real pyplot on first use.
        "print(hasattr(plt, 'figure'), drawing_utils.plt.figure is plt.figure)\n")
    assert out == ["0", "False", "True", "True"]


def test_the_driver_names_mediapipe_without_importing_it():
    out = run_python(
        "import sys\n"
        "from stages.pose import PoseStage\n"
        "version = PoseStage().describe()['version']\n"
        "print('mediapipe' in sys.modules)\n"
        "import mediapipe\n"
        "print(version == mediapipe.__version__)\n")
    assert out == ["False", "True"]
