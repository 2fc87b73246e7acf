"""Each GLUE / SuperGLUE task's majority-class baseline, scored by the task's own t5 metrics.

The baseline predicts, for every example of a split, the most common answer of that split's
targets. "Answer" is a target after the task's t5 postprocessor (a class id, STS-B's score,
WSC's 0/1 referent check, MultiRC's answer label within its question group), so the constant
prediction goes through exactly the metrics fine-tuning is scored by (t5's ``metric_fns``):
CoLA's Matthews correlation is 0, MRPC's F1 is that of always "equivalent", and a correlation
(STS-B) with a constant is undefined (NaN, shown as "-").

    majority_baseline(seqio.get_mixture_or_task("glue_rte_v002"), "validation")
"""

import collections
from typing import Dict, List, Sequence, Tuple

import seqio


def _answer(target) -> object:
  """The value a postprocessed target votes for (MultiRC's targets are {"group", "value"})."""
  return target["value"] if isinstance(target, dict) else target


def plain(value):
  """A postprocessed answer as a plain Python value, so the report's JSON can hold it (WSC's
  postprocessor returns numpy integers)."""
  return value.item() if hasattr(value, "item") and hasattr(value, "dtype") else value


def majority_predictions(targets: Sequence) -> Tuple[object, List]:
  """(the most common answer, one prediction of it per target).

  Args:
    targets: postprocessed targets: class ids, floats, or dicts with a "value" (and whatever
      else the metric reads, e.g. MultiRC's "group", which each prediction keeps).

  Ties go to the smallest answer, so the result does not depend on the file's order.
  """
  if not targets:
    raise ValueError("no targets to take the majority of")
  counts = collections.Counter(_answer(t) for t in targets)
  top = max(counts.values())
  answer = min(a for a, n in counts.items() if n == top)
  predictions = [{**t, "value": answer} if isinstance(t, dict) else answer for t in targets]
  return answer, predictions


def majority_baseline(task: seqio.Task, split: str = "validation") -> Dict[str, object]:
  """The task's t5 metrics for always predicting the split's most common answer.

  Reads the split's examples (the dev file, for "validation") through the task's source and
  preprocessors, and postprocesses each ``targets_pretokenized`` as t5's evaluation does.

  Returns:
    {"answer": the answer predicted, "examples": how many, "counts": {answer: count},
     "scores": {"{task}/{metric}": value}} (the tags t5 writes under validation_eval).
  """
  if split not in task.splits:
    raise ValueError(f"{task.name} has no {split!r} split (its splits: {tuple(task.splits)})")
  dataset = task.get_dataset(sequence_length=None, split=split, shuffle=False)
  targets = [task.postprocess_fn(ex["targets_pretokenized"].decode("utf-8"), example=ex,
                                 is_target=True)
             for ex in dataset.as_numpy_iterator()]
  answer, predictions = majority_predictions(targets)
  scores = {}
  for metric_fn in task.predict_metric_fns:
    scores.update(metric_fn(targets, predictions))
  counts = collections.Counter(_answer(t) for t in targets)
  return {"answer": plain(answer), "examples": len(targets),
          "counts": {str(a): n for a, n in sorted(counts.items(), key=lambda kv: -kv[1])},
          "scores": {f"{task.name}/{name}": float(value) for name, value in scores.items()}}


def evaluated_tasks(mixture_or_task: str, split: str = "validation") -> List[seqio.Task]:
  """The tasks t5's evaluation scores for a mixture: its subtasks that have the split (the rule
  of t5's ``mesh_eval_dataset_fn``)."""
  return [task for task in seqio.get_subtasks(seqio.get_mixture_or_task(mixture_or_task))
          if split in task.splits]
