"""Reading back what a ``switch_mesh_transformer`` run left in its model directory.

The one place the tools (and the tests) read results from: checkpoint files, and the
TensorBoard event files t5 and the Estimator write. Evaluation results are read from the
events of the evaluation directories, never parsed out of a log:

    model_dir/model.ckpt-{step}.index          checkpoint_steps
    model_dir/events.out.tfevents.*            training scalars (loss, moe/... statistics)
    model_dir/eval_{name}/events.out.tfevents.* perplexity_eval: one directory per evaluation
                                               name (``{dataset}_{split}_{examples}``)
    model_dir/validation_eval/events...        eval (decoding): ``eval/{task}/{metric}``
"""

import os
import re
import sys
from typing import Dict, List, Optional

Scalars = Dict[str, Dict[int, float]]  # {tag: {step: value}}
NEG_LOG_PERPLEXITY = "neg_log_perplexity"


def checkpoint_steps(model_dir: str) -> List[int]:
  """Global steps of the checkpoints saved in model_dir, ascending."""
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(m.group(1)) for f in os.listdir(model_dir)
                if (m := re.fullmatch(r"model\.ckpt-(\d+)\.index", f)))


def read_scalars(directory: str) -> Scalars:
  """{tag: {step: value}} from the TensorBoard event files directly in ``directory``.

  Reads both summary kinds TensorFlow writes (``simple_value`` and a scalar tensor). A later
  event for the same tag and step (a rerun) replaces an earlier one. A file whose last record
  is cut short (the process was killed while writing it; the resumed run writes a new file) is
  read up to that record, with a warning naming it; any other damage is an error.
  """
  import tensorflow.compat.v1 as tf  # only here: it takes seconds to import

  from mtf_switch import compat  # noqa: F401  (TensorFlow's import goes through the repair)

  scalars: Scalars = {}
  if not os.path.isdir(directory):
    return scalars
  for name in sorted(os.listdir(directory)):
    if not name.startswith("events.out.tfevents"):
      continue
    path = os.path.join(directory, name)
    events = tf.train.summary_iterator(path)
    while True:
      try:
        event = next(events)
      except StopIteration:
        break
      except tf.errors.DataLossError as err:
        if "truncated record" not in str(err):
          raise
        print(f"warning: {path} ends in a truncated record (a run killed while writing it); "
              "read the events before it", file=sys.stderr)
        break
      for value in event.summary.value:
        if value.HasField("simple_value"):
          scalars.setdefault(value.tag, {})[event.step] = value.simple_value
        elif value.HasField("tensor") and value.tensor.float_val:
          scalars.setdefault(value.tag, {})[event.step] = value.tensor.float_val[0]
  return scalars


def scalar_mean(directory: str, tag_pattern: str) -> Optional[float]:
  """Mean over steps and tags of every scalar in ``directory`` whose tag fully matches
  ``tag_pattern`` (e.g. every sparse layer's ``moe/.*/dropped_fraction``); None if none."""
  pattern = re.compile(tag_pattern)
  values = [v for tag, by_step in read_scalars(directory).items() if pattern.fullmatch(tag)
            for v in by_step.values()]
  return sum(values) / len(values) if values else None


def eval_dirs(model_dir: str, prefix: str = "eval_") -> List[str]:
  """The Estimator's evaluation directories under model_dir (one per evaluation name)."""
  if not os.path.isdir(model_dir):
    return []
  return sorted(os.path.join(model_dir, d) for d in os.listdir(model_dir)
                if d.startswith(prefix) and os.path.isdir(os.path.join(model_dir, d)))


def perplexity_evaluations(model_dir: str) -> Dict[str, Dict[int, float]]:
  """{evaluation name: {step: neg log perplexity}} of every perplexity_eval under model_dir.

  The name is the evaluation directory's (``eval_{dataset}_{split}_{examples}``): one per
  task of a mixture evaluated with ``eval_dataset_fn``, else a single ``eval_eval_...``.
  """
  found = {}
  for directory in eval_dirs(model_dir):
    values = read_scalars(directory).get(NEG_LOG_PERPLEXITY)
    if values:
      found[os.path.basename(directory)] = values
  return found


def perplexity_at(model_dir: str, step: int) -> Dict[str, float]:
  """{evaluation name: neg log perplexity} of the checkpoint at ``step`` (empty if none)."""
  return {name: values[step] for name, values in perplexity_evaluations(model_dir).items()
          if step in values}


def decode_metrics(model_dir: str, task: str) -> Dict[int, float]:
  """{step: value} of the task's first t5 metric (accuracy for SST-2) from ``eval`` mode, which
  tags its summaries ``eval/{task}/{metric}`` under model_dir/validation_eval."""
  scalars = read_scalars(os.path.join(model_dir, "validation_eval"))
  tags = sorted(t for t in scalars if t.startswith(f"eval/{task}/"))
  return scalars[tags[0]] if tags else {}
