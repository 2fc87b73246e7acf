"""GLUE and SuperGLUE averages per checkpoint, as t5 and the papers compute them.

t5's ``eval_utils.compute_avg_glue`` does the arithmetic: each task's metrics are averaged first
(MRPC's F1 and accuracy, STS-B's Pearson and Spearman, CB's F1 and accuracy, MultiRC's F1 and
exact match; MNLI's matched and mismatched), then the mean is taken over tasks. t5 computes an
average only when every task of the benchmark was evaluated; here its table of metrics
(``eval_utils.METRIC_NAMES``) is first narrowed to the tasks that were, so the average is over
the tasks present, and ``average_groups`` names them. WNLI is not in t5's GLUE average (t5 trains
on WSC instead), nor are the diagnostic sets.

    python tools/benchmark_averages.py runs/glue/switch [runs/glue/dense ...]

prints a markdown table per model directory: one row per evaluated checkpoint, a column per
metric, the averages last (t5 writes each metric as ``eval/{task}/{metric}`` under
``{model_dir}/validation_eval``).
"""

import collections
import os
import sys
from typing import Dict, List, Mapping

import pandas as pd
from t5.evaluation import eval_utils

from switch_experiments import run_results

GLUE_AVERAGE = eval_utils.METRIC_NAMES["glue_average"].name  # "Average GLUE Score"
SUPER_GLUE_AVERAGE = eval_utils.METRIC_NAMES["super_glue_average"].name


def known_tags(scores: Mapping[str, float]) -> Dict[str, eval_utils.Metric]:
  """t5's METRIC_NAMES narrowed to the GLUE/SuperGLUE "task/metric" tags present in scores."""
  return {tag: metric for tag, metric in eval_utils.METRIC_NAMES.items()
          if "glue" in tag and (tag in scores or "average" in tag)}


def average_groups(scores: Mapping[str, float]) -> Dict[str, List[str]]:
  """{average name: the task groups it is taken over} for the tags in scores."""
  groups = {GLUE_AVERAGE: [], SUPER_GLUE_AVERAGE: []}
  for tag, metric in known_tags(scores).items():
    if "average" in tag:
      continue
    target = groups[SUPER_GLUE_AVERAGE if "super" in tag else GLUE_AVERAGE]
    if metric.group not in target:
      target.append(metric.group)
  return {name: members for name, members in groups.items() if members}


def scores_table(per_step: Mapping[int, Mapping[str, float]]) -> pd.DataFrame:
  """Rows = steps, columns = t5's metric names (e.g. "MRPC (F1)"), then the averages.

  Args:
    per_step: {step: {"task/metric" tag: value}}; tags t5 does not name are left out.
  """
  all_tags = set().union(*[set(s) for s in per_step.values()]) if per_step else set()
  names = known_tags({t: 0.0 for t in all_tags})
  rows = {step: {names[t].name: v for t, v in scores.items() if t in names}
          for step, scores in per_step.items()}
  frame = pd.DataFrame.from_dict(rows, orient="index").sort_index()
  frame.index.name = "step"
  frame = eval_utils.sort_columns(frame, names)
  return eval_utils.compute_avg_glue(frame, with_absent_benchmarks(names))


def with_absent_benchmarks(names: Dict[str, eval_utils.Metric]) -> Dict[str, eval_utils.Metric]:
  """names, plus t5's whole table of each benchmark none of whose tags are in names.

  compute_avg_glue takes a benchmark's average when all its metric names are columns; for a
  benchmark with no tag at all that test passes vacuously and it then divides None (a
  GLUE-only table raised TypeError). With the benchmark's own names added, which are no
  columns, t5 skips its average as it does for any benchmark not fully evaluated.
  """
  present = {"super" in tag for tag in names if "average" not in tag}
  extra = {tag: metric for tag, metric in eval_utils.METRIC_NAMES.items()
           if "glue" in tag and "average" not in tag and ("super" in tag) not in present}
  return {**names, **extra}


def eval_scores(model_dir: str, split: str = "validation") -> Dict[int, Dict[str, float]]:
  """{step: {"task/metric": value}} from the ``eval/{task}/{metric}`` summaries t5 writes."""
  scalars = run_results.read_scalars(os.path.join(model_dir, f"{split}_eval"))
  per_step: Dict[int, Dict[str, float]] = collections.defaultdict(dict)
  for tag, values in scalars.items():
    parts = tag.split("/")
    if len(parts) == 3 and parts[0] == "eval":
      for step, value in values.items():
        per_step[step][f"{parts[1]}/{parts[2]}"] = value
  return dict(per_step)


def markdown(frame: pd.DataFrame, title: str) -> str:
  header = ["step", *frame.columns]
  lines = [f"### {title}", "", "| " + " | ".join(header) + " |",
           "| " + " | ".join("---" for _ in header) + " |"]
  for step, row in frame.iterrows():
    cells = ["-" if pd.isna(v) else f"{v:.2f}" for v in row]
    lines.append(f"| {step} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  model_dirs = sys.argv[1:] if argv is None else argv
  if not model_dirs:
    raise SystemExit("usage: python tools/benchmark_averages.py MODEL_DIR [MODEL_DIR ...]")
  for model_dir in model_dirs:
    per_step = eval_scores(model_dir)
    if not per_step:
      raise SystemExit(f"{model_dir}: no eval/{{task}}/{{metric}} summaries under "
                       f"{os.path.join(model_dir, 'validation_eval')}")
    print(markdown(scores_table(per_step), model_dir))
    for name, groups in average_groups(next(iter(per_step.values()))).items():
      print(f"{name}: mean over {', '.join(groups)}")
  return 0
