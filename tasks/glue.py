"""GLUE and SuperGLUE fine-tuning mixtures, and SST-2 read from GLUE's own TSV files.

The mixtures reuse t5's registered ``glue_*_v002`` and ``super_glue_*_v102`` tasks with t5's
examples-proportional weights (the training-set sizes in ``t5.data.glue_utils``), i.e. T5's
``glue_v002_proportional`` and ``super_glue_v102_proportional``, which is how the Switch
Transformer paper fine-tunes (it follows T5's fine-tuning set-up). When those tasks read the
official files (``tasks.benchmark_tasks``), the mixtures hold the tasks whose files are present.

The SST-2 TSV task turns each ``sentence<TAB>label`` row into the record TFDS's ``glue/sst2``
yields (``sentence``, ``label``, ``idx``) and then runs ``glue_sst2_v002``'s own preprocessor,
postprocessor and metric, so its examples are exactly t5's: inputs ``"sst2 sentence: ..."``,
targets ``"negative"``/``"positive"``, accuracy. Splits: ``train`` = train.tsv and
``validation`` = dev.tsv (GLUE's test labels are not public).
"""

import os
from typing import Optional

from mtf_base import compat  # noqa: F401  (t5 imports mesh_tensorflow)

# isort: split
import seqio
import t5.data.tasks  # noqa: F401  (registers the glue_*_v002 and super_glue_*_v102 tasks)
import tensorflow as tf
import tensorflow_datasets as tfds
from t5.data import glue_utils

from tasks import benchmark_tasks
from tasks import paths as paths_lib
from tasks import registry
from tasks import vocab as vocab_lib

GLUE_MIXTURE = "switch_glue_v002_proportional"
SUPER_GLUE_MIXTURE = "switch_super_glue_v102_proportional"
SST2_TASK = "switch_sst2_tsv"

_SST2_CONFIG = tfds.text.glue.Glue.builder_configs["sst2"]
SST2_LABELS = tuple(_SST2_CONFIG.label_classes)  # ("negative", "positive")
SST2_HEADER = "sentence\tlabel"
SST2_FILES = {"train": "train.tsv", "validation": "dev.tsv"}


def register_glue_mixtures(replace: bool = True) -> tuple[seqio.Mixture, seqio.Mixture]:
  """Registers the GLUE and SuperGLUE mixtures (t5's tasks, examples-proportional rates).

  While a benchmark's tasks read its official files (``tasks.benchmark_tasks``), its mixture
  holds only the tasks whose files are present, and one printed line names the others.
  """
  mixtures = []
  for name, weights, benchmark in (
      (GLUE_MIXTURE, glue_utils.get_glue_weight_mapping(), benchmark_tasks.GLUE),
      (SUPER_GLUE_MIXTURE, glue_utils.get_super_glue_weight_mapping(),
       benchmark_tasks.SUPER_GLUE)):
    kept, left_out = benchmark_tasks.split_members(weights, benchmark)
    if replace or name not in seqio.MixtureRegistry.names():
      benchmark_tasks.announce_left_out(name, left_out)
    mixtures.append(registry.add_mixture(name, list(kept.items()), replace=replace))
  return mixtures[0], mixtures[1]


def scan_sst2_tsv(path: str) -> int:
  """Checks a GLUE SST-2 TSV file (UTF-8, header, two fields, label 0/1); returns its rows.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: anything else wrong, with the path and 1-based line number.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"SST-2 TSV file not found: {path!r}")
  rows = 0
  with open(path, "rb") as f:
    for line_number, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError as e:
        raise ValueError(f"SST-2 TSV file {path!r} is not valid UTF-8 at line {line_number}: "
                         f"{e.reason}") from None
      if line_number == 1:
        if line != SST2_HEADER:
          raise ValueError(f"SST-2 TSV file {path!r} must start with the header "
                           f"{SST2_HEADER!r}, found {line[:80]!r}")
        continue
      fields = line.split("\t")
      if len(fields) != 2 or fields[1] not in ("0", "1"):
        raise ValueError(f"SST-2 TSV file {path!r}, line {line_number}: expected "
                         f"'sentence<TAB>0|1', found {line[:80]!r}")
      rows += 1
  if rows == 0:
    raise ValueError(f"SST-2 TSV file {path!r} has no examples after its header")
  return rows


class Sst2TsvDataSource(registry.PicklableLockMixin, seqio.DataSource):
  """GLUE's SST-2 TSV files as TFDS ``glue/sst2``-shaped records: sentence, label, idx.

  ``idx`` is the row's 0-based position in its file, as in TFDS. The files are checked the first
  time they are used (or at construction with ``validate=True``).
  """

  def __init__(self, data_dir: Optional[str] = None, *, validate: bool = True):
    sst2_dir = os.path.join(os.fspath(paths_lib.shared_data_dir(data_dir)), "glue", "SST-2")
    self._files = {split: os.path.join(sst2_dir, name) for split, name in SST2_FILES.items()}
    self._counts: Optional[dict[str, int]] = None
    self._init_lock()
    super().__init__(splits=tuple(SST2_FILES), caching_permitted=True)
    if validate:
      self.counts()

  @property
  def files(self) -> dict[str, str]:
    return dict(self._files)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def counts(self) -> dict[str, int]:
    with self._lock:
      if self._counts is None:
        self._counts = {split: scan_sst2_tsv(path) for split, path in self._files.items()}
      return self._counts

  def num_input_examples(self, split: str) -> int:
    return self.counts()[split]

  def list_shards(self, split: str):
    return [self._files[split]]

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    del shuffle, seed, sequence_length, use_cached, num_epochs
    if split not in self._files:
      raise ValueError(f"Unknown split {split!r}: expected one of {tuple(self._files)}")
    self.counts()

    def parse(idx, line):
      # GLUE's SST-2 has no quoting: a tab separates the sentence from its 0/1 label.
      sentence, label = tf.io.decode_csv(line, record_defaults=["", tf.constant(0, tf.int64)],
                                         field_delim="\t", use_quote_delim=False)
      return {"sentence": sentence, "label": label, "idx": tf.cast(idx, tf.int32)}

    ds = tf.data.TextLineDataset(self._files[split]).skip(1).enumerate()
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    if shard_info:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    return ds


def register_sst2_tsv_task(name: str = SST2_TASK, data_dir: Optional[str] = None,
                           vocabulary=None, *, validate: bool = True,
                           replace: bool = True) -> seqio.Task:
  """Registers SST-2 from ``{data_dir}/glue/SST-2/{train,dev}.tsv`` in glue_sst2_v002's format.

  Args:
    name: the task name.
    data_dir: the shared data directory; default ``../shared/data`` from the repository root.
    vocabulary: a seqio.Vocabulary or ``.model`` path; default T5's (loaded lazily).
    validate: check the files now (else on first use); errors name the file.
    replace: replace a task already registered under ``name`` (else keep it).

  Returns:
    The registered task (splits "train" and "validation").
  """
  vocabulary = vocab_lib.t5_vocabulary() if vocabulary is None else vocabulary
  vocabulary = vocab_lib.as_vocabulary(vocabulary)
  features = {
      "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
      "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }
  return registry.add_task(
      name, replace=replace, source=Sst2TsvDataSource(data_dir, validate=validate),
      output_features=features,
      preprocessors=[
          glue_utils.get_glue_text_preprocessor(_SST2_CONFIG),
          seqio.preprocessors.tokenize,
          seqio.CacheDatasetPlaceholder(),
          seqio.preprocessors.append_eos_after_trim,
      ],
      postprocess_fn=glue_utils.get_glue_postprocess_fn(_SST2_CONFIG),
      metric_fns=glue_utils.get_glue_metric("sst2"))
