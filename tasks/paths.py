"""Where the tasks find shared data and keep what they build (corpora, vocabularies).

Nothing here touches the file system beyond reading an environment variable: the tasks create
their cache directory only when they first need to write to it.
"""

import os
import pathlib

# Environment variable naming the directory where built corpora and vocabularies are cached.
CACHE_DIR_ENV = "MTF_SWITCH_CACHE_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "mtf_switch")

# The repository root is the parent of this package; shared data sits beside the repository.
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def cache_dir(directory=None) -> str:
  """Returns the directory for cached corpora and vocabularies.

  Args:
    directory: the caller's choice; when None, ``$MTF_SWITCH_CACHE_DIR`` or else
      ``~/.cache/mtf_switch``.

  Returns:
    An absolute path (not created here).
  """
  if directory is None:
    directory = os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
  return os.path.abspath(os.path.expanduser(os.fspath(directory)))


def shared_data_dir(directory=None) -> pathlib.Path:
  """Returns the shared data directory: the caller's, or ``../shared/data`` from the repo root."""
  if directory is None:
    return DEFAULT_SHARED_DATA_DIR
  return pathlib.Path(os.path.expanduser(os.fspath(directory))).resolve()
