"""Tasks over the user's own text files: UTF-8, one document per line.

    import tasks
    tasks.register_text_file_task(
        "my_corpus_span_corruption", ["/data/a.txt", "/data/b.txt"],
        vocabulary=tasks.cached_vocabulary(["/data/a.txt", "/data/b.txt"], "/tmp/vocabs", 8000))

Splits: ``train`` and ``validation``, by the fixed line-number rule of ``tasks.lines`` (every 20th
line of each file, 0-based lines 19, 39, ..., is held out). Blank lines are skipped.
"""

from typing import Callable, Mapping, Optional, Sequence

import seqio
import tensorflow as tf
from absl import logging

from tasks import lines as lines_lib
from tasks import mixing, objectives, registry
from tasks import vocab as vocab_lib

TEXT_KEY = "text"
_BOM = "\ufeff"


def _read_split(path: str, split: str, holdout_every: int) -> tf.data.Dataset:
  """``{"text": ...}`` records of one split of one file, in file order."""
  want_validation = split == lines_lib.VALIDATION

  def in_split(line_number, line):
    del line
    held_out = tf.equal(line_number % holdout_every, holdout_every - 1)
    return tf.equal(held_out, want_validation)

  def to_record(line_number, line):
    del line_number
    # Same normalisation as tasks.lines._strip: a leading BOM, then ASCII whitespace.
    text = tf.strings.regex_replace(line, f"^{_BOM}", "")
    return {TEXT_KEY: tf.strings.strip(text)}

  ds = tf.data.TextLineDataset(path).enumerate()
  ds = ds.filter(in_split).map(to_record, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.filter(lambda ex: tf.strings.length(ex[TEXT_KEY]) > 0)


class TextLinesDataSource(registry.PicklableLockMixin, seqio.DataSource):
  """A seqio DataSource of ``{"text": document}`` records, one per non-blank line of the files.

  The files are validated (exist, non-empty, UTF-8) and counted the first time the source is used
  or its example counts are asked for, or at construction with ``validate=True``. A
  ``prepare_fn(*prepare_args)`` runs before that first use: it lets a task be registered for a
  file that is only written when needed (the default corpus). Several files are read one after
  the other, or, with an ``interleave_seed``, interleaved at random in proportion to their
  documents (the same interleaving for every run with that seed).
  """

  def __init__(self, paths, holdout_every: int = lines_lib.HOLDOUT_EVERY, *,
               validate: bool = True, prepare_fn: Optional[Callable[..., object]] = None,
               prepare_args: tuple = (), interleave_seed: Optional[int] = None):
    self._paths = lines_lib.normalize_paths(paths)
    self._holdout_every = holdout_every
    self._interleave_seed = interleave_seed
    self._prepare_fn = prepare_fn
    self._prepare_args = tuple(prepare_args)
    self._stats: Optional[list[lines_lib.TextFileStats]] = None
    self._init_lock()
    super().__init__(splits=lines_lib.SPLITS, caching_permitted=True)
    if validate:
      self.file_stats()

  @property
  def paths(self) -> tuple[str, ...]:
    return self._paths

  @property
  def holdout_every(self) -> int:
    return self._holdout_every

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def file_stats(self) -> list[lines_lib.TextFileStats]:
    """Prepares (if needed), validates and counts the files, once."""
    with self._lock:
      if self._stats is None:
        if self._prepare_fn is not None:
          self._prepare_fn(*self._prepare_args)
        self._stats = lines_lib.scan_text_files(self._paths, self._holdout_every)
        for stats in self._stats:
          if stats.validation_documents == 0:
            logging.warning(
                "%s has %d lines, so its validation split (every %dth line) is empty",
                stats.path, stats.lines, self._holdout_every)
      return self._stats

  def num_input_examples(self, split: str) -> int:
    lines_lib.check_split(split)
    return sum(stats.documents_in(split) for stats in self.file_stats())

  def list_shards(self, split: str) -> Sequence[str]:
    lines_lib.check_split(split)
    return list(self._paths)

  def get_dataset(self, split: str = lines_lib.TRAIN, shuffle: bool = True,
                  seed: Optional[int] = None, shard_info: Optional[seqio.ShardInfo] = None,
                  *, sequence_length=None, use_cached: bool = False,
                  num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    """The split's records, files in the given order (seqio's Task shuffles the examples)."""
    del shuffle, seed, sequence_length, use_cached, num_epochs
    lines_lib.check_split(split)
    self.file_stats()
    files = [_read_split(path, split, self._holdout_every) for path in self._paths]
    if self._interleave_seed is None or len(files) == 1:
      ds = files[0]
      for other in files[1:]:
        ds = ds.concatenate(other)
    else:
      # Each file's documents in its own order, the files drawn at random in proportion to
      # their sizes: a pass reads every document once, and every stretch of it holds all files
      # in their proportions (concatenated, a model would see one file, then the next).
      sizes = [stats.documents_in(split) for stats in self.file_stats()]
      ds = tf.data.Dataset.sample_from_datasets(
          files, weights=[n / sum(sizes) for n in sizes], seed=self._interleave_seed,
          stop_on_empty_dataset=False)
    if shard_info:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    return ds


def text_task_kwargs(source: seqio.DataSource, vocabulary,
                     objective: str = objectives.SPAN_CORRUPTION) -> dict:
  """The ``seqio.TaskRegistry.add`` arguments of an unsupervised task over ``{"text"}`` records."""
  vocabulary = vocab_lib.as_vocabulary(vocabulary)
  return dict(source=source,
              output_features=objectives.output_features(vocabulary, objective),
              preprocessors=objectives.text_preprocessors(objective, TEXT_KEY),
              metric_fns=[])


def register_text_file_task(name: str, paths, vocabulary,
                            objective: str = objectives.SPAN_CORRUPTION, *,
                            holdout_every: int = lines_lib.HOLDOUT_EVERY,
                            replace: bool = True) -> seqio.Task:
  """Registers an unsupervised task over UTF-8 text files, one document per line.

  Args:
    name: the seqio task name (letters, digits, ``_``, ``.`` and ``:``).
    paths: one path or a sequence of paths. They are validated now: a missing, empty or
      non-UTF-8 file raises an error naming it.
    vocabulary: a seqio.Vocabulary (e.g. from ``cached_vocabulary``) or the path of a
      SentencePiece ``.model`` file (given 100 sentinel ids).
    objective: "span_corruption" (default), "prefix_lm" or "full_lm" (targets only).
    holdout_every: every ``holdout_every``-th line of each file is the validation split.
    replace: replace a task already registered under ``name`` (else keep it).

  Returns:
    The registered seqio.Task, with splits "train" and "validation".
  """
  objectives.check_objective(objective)
  source = TextLinesDataSource(paths, holdout_every, validate=True)
  return registry.add_task(name, replace=replace,
                           **text_task_kwargs(source, vocabulary, objective))


def register_text_files_mixture(mixture_name: str, paths_by_task: Mapping[str, object],
                                vocabulary, objective: str = objectives.SPAN_CORRUPTION, *,
                                alpha: float = mixing.MT5_ALPHA,
                                holdout_every: int = lines_lib.HOLDOUT_EVERY,
                                validate: bool = True, replace: bool = True) -> seqio.Mixture:
  """Registers one text-file task per entry and a mixture of them with temperature sampling.

  Task ``t`` is sampled at a rate proportional to ``n_t ** alpha``, ``n_t`` being the number of
  documents in its training split (mT5's rule, ``tasks.mixing``); the counts are read from the
  files when the mixture is first used.

  Args:
    mixture_name: the mixture's name.
    paths_by_task: task name -> a path or a sequence of paths (e.g. one language each).
    vocabulary: shared by all tasks; a seqio.Vocabulary or a ``.model`` path.
    objective: "span_corruption" (default), "prefix_lm" or "full_lm".
    alpha: the mixing exponent (1 / temperature); mT5's 0.3 by default.
    holdout_every: every ``holdout_every``-th line of each file is the validation split.
    validate: check the files now (else on first use); errors name the file.
    replace: replace tasks and mixture already registered under these names (else keep them).

  Returns:
    The registered mixture.
  """
  if not paths_by_task:
    raise ValueError(f"Mixture {mixture_name!r} needs at least one task")
  objectives.check_objective(objective)
  vocabulary = vocab_lib.as_vocabulary(vocabulary)
  rate = mixing.temperature_rate_fn(alpha)  # checks alpha before anything is registered
  for name, paths in paths_by_task.items():
    source = TextLinesDataSource(paths, holdout_every, validate=validate)
    registry.add_task(name, replace=replace, **text_task_kwargs(source, vocabulary, objective))
  return registry.add_mixture(mixture_name, list(paths_by_task), default_rate=rate,
                              replace=replace)
