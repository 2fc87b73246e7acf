"""Where the repository's gin/ directory is: found here once, for every layer.

gin/ (models/, mesh/, recipes/, repro/) sits at the repository root, beside the packages; the
command line and its workers add it to gin's search path, the library's ``parse_gin`` too, and
the released-checkpoint converter writes into it.
"""

import pathlib

# This package is a directory of the repository root.
REPO = pathlib.Path(__file__).resolve().parent.parent


def gin_dir() -> str:
  """The absolute path of the repository's gin/ directory (not checked for existence)."""
  return str(REPO / "gin")
