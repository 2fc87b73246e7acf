"""A model's own SentencePiece vocabulary for the fine-tuning tasks, chosen in gin.

    --gin_param='finetune_vocabulary.path = "/models/switch-base-8/spiece.model"'

The fine-tuning tasks encode with a vocabulary fixed when they were registered: t5's GLUE and
SuperGLUE tasks (and so the project's ``switch_glue_v002_proportional`` and
``switch_super_glue_v102_proportional`` mixtures) with T5's SentencePiece model, read from
a ``gs://`` path, and the SST-2 TSV tasks with the default corpus's or T5's. A model imported
from Hugging Face (``python -m mtf_switch.convert from-hf``) brings its own ``spiece.model``,
and the ``model.gin`` the import writes binds this setting to it, so that the model and its
data share one vocabulary and nothing is read from the network. Binding it re-registers
those tasks under their own names with the given vocabulary; the mixtures are rebuilt from
them. The command line calls ``register_from_gin`` once the gin is parsed.
"""

from typing import List, Optional

import seqio
from t5.data import glue_utils

import gin
from tasks import glue, registry
from tasks import vocab as vocab_lib
from tasks.shared_data import SST2_T5_VOCAB_TASK

SST2_TASKS = (glue.SST2_TASK, SST2_T5_VOCAB_TASK)


@gin.configurable("finetune_vocabulary")
def finetune_vocabulary_path(path: Optional[str] = None) -> Optional[str]:
  """The bound SentencePiece model path, or None (the tasks keep their vocabularies)."""
  if path is not None and not (isinstance(path, str) and path):
    raise TypeError(f"finetune_vocabulary.path must be a SentencePiece .model path, got {path!r}")
  return path


def finetuning_task_names() -> List[str]:
  """The registered tasks that the fine-tuning mixtures and recipes read."""
  names = set(glue_utils.get_glue_weight_mapping()) | set(
      glue_utils.get_super_glue_weight_mapping())
  names |= {name for name in SST2_TASKS if name in seqio.TaskRegistry.names()}
  return sorted(names)


def with_vocabulary(task: seqio.Task, vocabulary: seqio.Vocabulary) -> seqio.Task:
  """The same task (name, source, preprocessing, metrics) with every feature's vocabulary
  replaced."""
  return registry.rebuilt_task(task, vocabulary=vocabulary)


def use_vocabulary(vocabulary) -> List[str]:
  """Re-registers the fine-tuning tasks and mixtures with ``vocabulary``; returns the tasks.

  Args:
    vocabulary: a seqio.Vocabulary or the path of a SentencePiece ``.model`` (checked now).
  """
  vocabulary = vocab_lib.as_vocabulary(vocabulary)
  names = finetuning_task_names()
  for name in names:
    registry.replace_registered(with_vocabulary(seqio.TaskRegistry.get(name), vocabulary))
  glue.register_glue_mixtures(replace=True)
  return names


def register_from_gin() -> Optional[List[str]]:
  """Applies ``finetune_vocabulary.path`` if it is bound; None when it is not."""
  path = finetune_vocabulary_path()
  if path is None:
    return None
  try:
    return use_vocabulary(path)
  except (ValueError, TypeError, OSError) as e:
    raise type(e)(f"finetune_vocabulary.path: {e}") from None
