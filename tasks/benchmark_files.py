"""GLUE and SuperGLUE read from their official files into exactly the records TFDS yields.

TFDS's ``glue`` and ``super_glue`` builders download each task's zip and parse its files with
their own ``_generate_examples``; here that same method (of the installed TFDS, the builder at
the version t5's tasks ask for) parses the files already on disk, and the builder's own
``features`` encode each record. So the field names, the label encodings (class names to ids,
-1 where a test split has no label), ``idx`` (a dict for MultiRC) and WSC's span fixes
(``wsc.fixed``) are TFDS's. One exception: TFDS builds MRPC from the original MSR corpus
(``msr_paraphrase_train.txt`` + GLUE's ``dev_ids.tsv``) and numbers train and dev examples by
their line in that corpus; GLUE's ``MRPC/train.tsv`` and ``dev.tsv`` hold the same rows split
apart, so here their ``idx`` is the row's position in its own file (test is TFDS's exactly).

Directory layouts (what GLUE's ``download_glue_data.py`` and SuperGLUE's zips unpack to):

  GLUE:      CoLA/ SST-2/ MRPC/ QQP/ STS-B/ MNLI/ QNLI/ RTE/ WNLI/ diagnostic/diagnostic.tsv
  SuperGLUE: BoolQ/ CB/ COPA/ MultiRC/ ReCoRD/ RTE/ WiC/ WSC/ AX-b/AX-b.jsonl AX-g/AX-g.jsonl

A split whose file is absent is not among the source's ``splits`` (so t5's evaluation skips it),
and asking for it anyway raises FileNotFoundError naming the task and the file.
"""

import csv
import os
import tempfile
from typing import Dict, Iterator, Optional, Sequence, Tuple

from mtf_base import compat  # noqa: F401  (t5 and seqio import mesh_tensorflow)

# isort: split
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from tasks import registry

GLUE = "glue"
SUPER_GLUE = "super_glue"
# The TFDS versions t5's glue_*_v002 and super_glue_*_v102 tasks load.
TFDS_VERSIONS = {GLUE: "1.0.0", SUPER_GLUE: "1.0.2"}

_STANDARD_TSV = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
_STANDARD_JSONL = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}

# {TFDS config: (directory, {seqio split: file name})}.
GLUE_FILES: Dict[str, Tuple[str, Dict[str, str]]] = {
    "cola": ("CoLA", _STANDARD_TSV),
    "sst2": ("SST-2", _STANDARD_TSV),
    "mrpc": ("MRPC", _STANDARD_TSV),
    "qqp": ("QQP", _STANDARD_TSV),
    "stsb": ("STS-B", _STANDARD_TSV),
    "mnli": ("MNLI", {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                      "validation_mismatched": "dev_mismatched.tsv",
                      "test_matched": "test_matched.tsv",
                      "test_mismatched": "test_mismatched.tsv"}),
    "mnli_matched": ("MNLI", {"validation": "dev_matched.tsv", "test": "test_matched.tsv"}),
    "mnli_mismatched": ("MNLI", {"validation": "dev_mismatched.tsv",
                                 "test": "test_mismatched.tsv"}),
    "qnli": ("QNLI", _STANDARD_TSV),
    "rte": ("RTE", _STANDARD_TSV),
    "wnli": ("WNLI", _STANDARD_TSV),
    "ax": ("diagnostic", {"test": "diagnostic.tsv"}),
}
SUPER_GLUE_FILES: Dict[str, Tuple[str, Dict[str, str]]] = {
    "boolq": ("BoolQ", _STANDARD_JSONL),
    "cb": ("CB", _STANDARD_JSONL),
    "copa": ("COPA", _STANDARD_JSONL),
    "multirc": ("MultiRC", _STANDARD_JSONL),
    "record": ("ReCoRD", _STANDARD_JSONL),
    "rte": ("RTE", _STANDARD_JSONL),
    "wic": ("WiC", _STANDARD_JSONL),
    "wsc": ("WSC", _STANDARD_JSONL),
    "wsc.fixed": ("WSC", _STANDARD_JSONL),
    "axb": ("AX-b", {"test": "AX-b.jsonl"}),
    "axg": ("AX-g", {"test": "AX-g.jsonl"}),
}
FILES = {GLUE: GLUE_FILES, SUPER_GLUE: SUPER_GLUE_FILES}


def file_layout(benchmark: str, config: str) -> Tuple[str, Dict[str, str]]:
  """(directory, {split: file name}) of one TFDS config; a clear error for an unknown one."""
  if benchmark not in FILES:
    raise ValueError(f"Unknown benchmark {benchmark!r}: expected one of {tuple(FILES)}")
  if config not in FILES[benchmark]:
    raise ValueError(f"Unknown {benchmark} task {config!r}: expected one of "
                     f"{tuple(FILES[benchmark])}")
  return FILES[benchmark][config]


def _tfds_split_argument(benchmark: str, split: str) -> str:
  """The ``split`` TFDS's _generate_examples expects: GLUE's file stem (CoLA's train and dev
  have no header, test has one), SuperGLUE's split name (only test may lack labels)."""
  if benchmark == SUPER_GLUE:
    return split
  if split == "train":
    return "train"
  return "dev" if split.startswith("validation") else "test"


def tfds_builder(benchmark: str, config: str) -> tfds.core.DatasetBuilder:
  """TFDS's builder of ``benchmark/config`` at t5's version; nothing is downloaded or read."""
  file_layout(benchmark, config)
  # The builder is only asked to parse and encode; its data_dir stays empty.
  return tfds.builder_cls(benchmark)(config=config, version=TFDS_VERSIONS[benchmark],
                                     data_dir=tempfile.gettempdir())


def _mrpc_examples(path: str, split: str) -> Iterator[dict]:
  """GLUE's MRPC TSV rows as TFDS's glue/mrpc records.

  Train and dev (header ``Quality  #1 ID  #2 ID  #1 String  #2 String`` after a UTF-8 BOM):
  label = Quality, idx = the row's position in this file. Test (header ``index  #1 ID ...``):
  label -1, idx = the row's position, as TFDS.
  """
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    for n, row in enumerate(reader):
      yield {"sentence1": row["#1 String"], "sentence2": row["#2 String"],
             "label": -1 if split == "test" else int(row["Quality"]), "idx": n}


class BenchmarkFilesSource(registry.PicklableLockMixin, seqio.DataSource):
  """One GLUE or SuperGLUE task's official files as TFDS-shaped records.

  Args:
    benchmark: "glue" or "super_glue".
    config: the TFDS config name ("cola", "wsc.fixed", ...).
    directory: the benchmark's directory (holding CoLA/, SST-2/, ... or BoolQ/, CB/, ...).
    splits: the seqio splits the task uses (default: all of the config's); those whose file is
      absent are left out of ``splits``.
    task_name: named in error messages.
  """

  def __init__(self, benchmark: str, config: str, directory, splits: Optional[Sequence[str]] = None,
               task_name: Optional[str] = None):
    subdirectory, names = file_layout(benchmark, config)
    wanted = list(names) if splits is None else list(splits)
    unknown = [s for s in wanted if s not in names]
    if unknown:
      raise ValueError(f"{benchmark}/{config} has no split(s) {unknown}: expected {tuple(names)}")
    self.benchmark, self.config = benchmark, config
    self.task_name = task_name or f"{benchmark}/{config}"
    root = os.path.join(os.fspath(directory), subdirectory)
    self._files = {split: os.path.join(root, names[split]) for split in wanted}
    self._counts: Dict[str, int] = {}
    self._builder = None
    self._init_lock()
    super().__init__(splits=tuple(s for s in wanted if os.path.isfile(self._files[s])),
                     caching_permitted=True)

  @property
  def files(self) -> Dict[str, str]:
    """{split: path} of every split the task uses, present or not."""
    return dict(self._files)

  def absent_files(self) -> Dict[str, str]:
    """{split: path} of the splits whose file is missing."""
    return {s: p for s, p in self._files.items() if s not in self.splits}

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def _path(self, split: str) -> str:
    if split not in self._files:
      raise ValueError(f"{self.task_name}: unknown split {split!r}; its splits are "
                       f"{tuple(self._files)}")
    path = self._files[split]
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{self.task_name}: the {split!r} split reads {path}, which is "
                              "absent (see ../shared/data/SOURCES.md for the files present)")
    return path

  def _get_builder(self) -> tfds.core.DatasetBuilder:
    with self._lock:
      if self._builder is None:
        self._builder = tfds_builder(self.benchmark, self.config)
      return self._builder

  def records(self, split: str) -> Iterator[dict]:
    """The split's records as TFDS encodes them (numpy values, labels as class ids)."""
    path = self._path(split)
    builder = self._get_builder()
    if self.benchmark == GLUE and self.config == "mrpc":
      raw = _mrpc_examples(path, split)
    else:
      # TFDS's own parser of the files it would have downloaded.
      generate = builder._generate_examples  # pylint: disable=protected-access
      raw = (example for _, example in generate(
          data_file=path, split=_tfds_split_argument(self.benchmark, split)))
    for example in raw:
      yield builder.info.features.encode_example(example)

  def num_input_examples(self, split: str) -> int:
    with self._lock:
      known = self._counts.get(split)
    if known is None:
      known = sum(1 for _ in self.records(split))
      with self._lock:
        self._counts[split] = known
    return known

  def list_shards(self, split: str):
    return [self._path(split)]

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    del shuffle, seed, sequence_length, use_cached, num_epochs  # seqio's Task shuffles
    self._path(split)
    spec = self._get_builder().info.features.get_tensor_spec()
    ds = tf.data.Dataset.from_generator(lambda: self.records(split), output_signature=spec)
    if shard_info:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    return ds
