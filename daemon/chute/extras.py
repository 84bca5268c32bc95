"""What a bundled module says when chute's optional media extra is not installed.

The bundled modules use PyAV, numpy, Pillow and PySceneDetect,
which `pip install chute` leaves out and `pip install 'chute[media]'` brings.
A module calls `require_media()` before importing any of them, so that
without them it fails with one line instead of an ImportError's traceback.
"""

from __future__ import annotations

import os
import sys
from importlib.util import find_spec

# The import names of the `media` extra in pyproject.toml.
MEDIA = ("av", "numpy", "PIL", "scenedetect")
EXIT_FAILED = 1  # as modkit's: the machine, not the input


def missing(names: tuple[str, ...] = MEDIA) -> list[str]:
    """The import names that cannot be found (nothing is imported)."""
    return [name for name in names if find_spec(name) is None]


def require_media() -> None:
    """Exit with one line on stderr (status 1) unless the media extra is installed."""
    absent = missing()
    if absent:
        module = os.environ.get("CHUTE_MODULE") or os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0])))
        print(
            f"{module}: this module needs chute's media extra ({', '.join(absent)} not installed): "
            "pip install 'chute[media]'",
            file=sys.stderr,
        )
        sys.exit(EXIT_FAILED)
