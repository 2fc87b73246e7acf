"""Span-corruption pre-training on C4 (TFDS ``c4/en``) with T5's vocabulary.

The same data, version and preprocessing as t5's ``c4_v220_span_corruption``: the Switch
Transformer pre-trains with T5's span-corruption objective (15% of tokens dropped, in spans of
mean length 3, each replaced by one sentinel) on C4. (The paper's C4 additionally removed
duplicated text within examples; that variant is not public, so this is TFDS's ``c4/en``.)
The TFDS data must be prepared beforehand (hundreds of GB); registering never touches it.
"""

from typing import Optional

import seqio

from tasks import objectives as objectives_lib
from tasks import registry
from tasks import vocab as vocab_lib

C4_TFDS_NAME = "c4/en:2.2.0"  # the version t5's C4 tasks read
TASK_NAME = "switch_c4_span_corruption"


def c4_source(tfds_name: str = C4_TFDS_NAME, tfds_data_dir: Optional[str] = None,
              ) -> seqio.TfdsDataSource:
  """C4's TFDS source: records with a ``text`` field (and url, timestamp, ...)."""
  return seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir)


def register_c4_task(name: str = TASK_NAME, vocabulary=None,
                     objective: str = objectives_lib.SPAN_CORRUPTION, *,
                     tfds_name: str = C4_TFDS_NAME, tfds_data_dir: Optional[str] = None,
                     replace: bool = True) -> seqio.Task:
  """Registers a C4 pre-training task.

  Args:
    name: the task name.
    vocabulary: a seqio.Vocabulary or a ``.model`` path; default T5's (loaded lazily).
    objective: "span_corruption" (default), "prefix_lm" or "full_lm".
    tfds_name: TFDS name and version.
    tfds_data_dir: TFDS data directory holding the prepared dataset (default: TFDS's).
    replace: replace a task already registered under ``name`` (else keep it).

  Returns:
    The registered task (splits "train" and "validation").
  """
  vocabulary = vocab_lib.t5_vocabulary() if vocabulary is None else vocabulary
  vocabulary = vocab_lib.as_vocabulary(vocabulary)
  return registry.add_task(
      name, replace=replace, source=c4_source(tfds_name, tfds_data_dir),
      output_features=objectives_lib.output_features(vocabulary, objective),
      preprocessors=objectives_lib.text_preprocessors(objective, "text"), metric_fns=[])
