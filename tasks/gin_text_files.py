"""Your own text files as a task, configured from gin alone (no ``--module_import``).

    switch_mesh_transformer --model_dir=/tmp/mine --gin_file=models/switch_tiny.gin \\
      --gin_file=mesh/cpu_data_parallel.gin \\
      --gin_param='MIXTURE_NAME = "text_files"' \\
      --gin_param='text_files.paths = ["my.txt"]' \\
      --gin_param='text_files.vocab_size = 8000'          # or text_files.vocabulary = "x.model"

``text_files`` is a gin configurable holding the task's settings; ``register_from_gin`` (the
command line calls it once the gin is parsed) validates them and registers the seqio task
``text_files`` over those files: UTF-8, one document per line, every 20th line held out as the
validation split (``tasks.lines``). Without ``text_files.vocabulary`` a SentencePiece model of
``vocab_size`` pieces is trained on the files' training split the first time it is needed and
cached in ``text_files.cache_dir`` (default ``$MTF_SWITCH_CACHE_DIR``); a later run on the same
files (same sizes and modification times) reuses it.
"""

import dataclasses
from typing import Optional

import gin
from tasks import lines as lines_lib
from tasks import objectives, text_files
from tasks import paths as paths_lib
from tasks import vocab as vocab_lib

TASK_NAME = "text_files"
DEFAULT_VOCAB_SIZE = 8000


@dataclasses.dataclass(frozen=True)
class TextFilesSettings:
  paths: tuple
  objective: str
  vocabulary: object  # a seqio.Vocabulary
  holdout_every: int


@gin.configurable("text_files")
def text_files_settings(paths=None, objective: str = objectives.SPAN_CORRUPTION,
                        vocab_size: int = DEFAULT_VOCAB_SIZE, vocabulary: Optional[str] = None,
                        model_type: str = "unigram", character_coverage: float = 1.0,
                        cache_dir: Optional[str] = None,
                        holdout_every: int = lines_lib.HOLDOUT_EVERY,
                        ) -> Optional[TextFilesSettings]:
  """The gin-bound settings, checked; None when ``text_files.paths`` is not bound.

  Args:
    paths: a text file path or a list of them (UTF-8, one document per line).
    objective: "span_corruption" (default), "prefix_lm" or "full_lm".
    vocab_size: pieces of the vocabulary trained on the files (ignored with ``vocabulary``).
    vocabulary: the path of an existing SentencePiece ``.model`` to use instead.
    model_type, character_coverage: SentencePiece options, see ``tasks.train_sentencepiece``.
    cache_dir: where the trained vocabulary is cached.
    holdout_every: every ``holdout_every``-th line of each file is the validation split.

  Raises:
    ValueError, TypeError, OSError: a bad setting; the message names it as ``text_files.x``.
  """
  if paths is None:
    return None
  try:
    objectives.check_objective(objective)
    files = lines_lib.normalize_paths(paths)
    lines_lib.check_holdout_every(holdout_every)
    if vocabulary is not None:
      vocab = vocab_lib.as_vocabulary(vocabulary)
    else:
      vocab = vocab_lib.cached_vocabulary(
          files, paths_lib.cache_dir(cache_dir), vocab_size, model_type=model_type,
          character_coverage=character_coverage, holdout_every=holdout_every)
  except (ValueError, TypeError, OSError) as e:
    raise type(e)(f"text_files: {e}") from None
  return TextFilesSettings(paths=files, objective=objective, vocabulary=vocab,
                           holdout_every=holdout_every)


def register_from_gin():
  """Registers the task ``text_files`` from the bound settings; None when none are bound.

  Call it after the gin is parsed (the command line does). Its files are validated now.
  """
  settings = text_files_settings()
  if settings is None:
    return None
  try:
    return text_files.register_text_file_task(  # reads and checks the files
        TASK_NAME, settings.paths, settings.vocabulary, settings.objective,
        holdout_every=settings.holdout_every)
  except (ValueError, TypeError, OSError) as e:
    raise type(e)(f"text_files.paths: {e}") from None
