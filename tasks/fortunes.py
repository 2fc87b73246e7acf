"""A multilingual text mixture over the shared data's nine fortune files, mixed as in mT5.

``{data_dir}/multilingual/fortunes_{lang}.txt`` (one saying per line, see SOURCES.md there) for
en, de, es, it, pl, ru, cs, zh and pt become tasks ``switch_fortunes_{lang}`` and the mixture
``switch_fortunes_span_corruption``, sampling language ``l`` proportionally to ``n_l ** 0.3``.
Splits: every 20th line of each file is ``validation`` (``tasks.lines``).

The default vocabulary is a SentencePiece model trained on the training lines of all nine files
(character coverage 0.9995, SentencePiece's advice for Chinese) the first time it is used, and
cached in the cache directory (``tasks.paths.cache_dir``).
"""

import os
from typing import Optional

import seqio

from tasks import mixing, text_files
from tasks import objectives as objectives_lib
from tasks import paths as paths_lib
from tasks import vocab as vocab_lib

LANGUAGES = ("en", "de", "es", "it", "pl", "ru", "cs", "zh", "pt")
TASK_PREFIX = "switch_fortunes"
MIXTURE_NAME = "switch_fortunes_span_corruption"
VOCAB_SIZE = 16000
CHARACTER_COVERAGE = 0.9995


def fortunes_paths(data_dir: Optional[str] = None) -> dict[str, str]:
  """Language -> ``{data_dir}/multilingual/fortunes_{lang}.txt`` (not checked here)."""
  directory = os.path.join(os.fspath(paths_lib.shared_data_dir(data_dir)), "multilingual")
  return {lang: os.path.join(directory, f"fortunes_{lang}.txt") for lang in LANGUAGES}


def fortunes_vocabulary(data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
                        vocab_size: int = VOCAB_SIZE) -> vocab_lib.CachedSentencePieceVocabulary:
  """A SentencePiece vocabulary of all nine files, trained and cached on first use."""
  return vocab_lib.cached_vocabulary(
      list(fortunes_paths(data_dir).values()), paths_lib.cache_dir(cache_dir), vocab_size,
      character_coverage=CHARACTER_COVERAGE, name="fortunes")


def register_fortunes(data_dir: Optional[str] = None, vocabulary=None,
                      cache_dir: Optional[str] = None,
                      objective: str = objectives_lib.SPAN_CORRUPTION, *,
                      alpha: float = mixing.MT5_ALPHA, validate: bool = True,
                      replace: bool = True) -> seqio.Mixture:
  """Registers ``switch_fortunes_{lang}`` tasks and their temperature-sampled mixture.

  Args:
    data_dir: the shared data directory; default ``../shared/data`` from the repository root.
    vocabulary: a seqio.Vocabulary or ``.model`` path; default ``fortunes_vocabulary``.
    cache_dir: where the default vocabulary is cached (see ``tasks.paths.cache_dir``).
    objective: "span_corruption" (default), "prefix_lm" or "full_lm".
    alpha: the mixing exponent; mT5's 0.3 by default.
    validate: check the files now (else on first use); errors name the file.
    replace: replace tasks and mixture already registered under these names (else keep them).

  Returns:
    The registered mixture.
  """
  paths = fortunes_paths(data_dir)
  for path in paths.values():
    if not os.path.isfile(path):
      raise FileNotFoundError(f"Fortunes file not found: {path!r}")
  if vocabulary is None:
    vocabulary = fortunes_vocabulary(data_dir, cache_dir)
  name = MIXTURE_NAME if objective == objectives_lib.SPAN_CORRUPTION else (
      f"{TASK_PREFIX}_{objective}")
  suffix = "" if objective == objectives_lib.SPAN_CORRUPTION else f"_{objective}"
  return text_files.register_text_files_mixture(
      name, {f"{TASK_PREFIX}_{lang}{suffix}": path for lang, path in paths.items()},
      vocabulary, objective, alpha=alpha, validate=validate, replace=replace)
