"""Fine-tuned models side by side on a benchmark: per-task dev scores, averages, majority class.

Input: each model's t5 scores per checkpoint (``{step: {"task/metric": value}}``, as
``benchmark_averages.eval_scores`` reads them back from ``validation_eval``) and the
majority-class scores (``majority_baseline``, the same tags). The arithmetic of the averages is
t5's (``benchmark_averages.scores_table``); here only the presentation:

- ``side_by_side``: a row per t5 metric name ("CoLA", "MRPC (F1)", ..., the average last), a
  column per model at the checkpoint with the best benchmark average and at its last
  checkpoint, and the majority-class column;
- ``long_rows``: every value as (benchmark, model, step, metric, value), for the CSV;
- ``plot``: each benchmark's average against the fine-tuning step, one line per model.
"""

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import pandas as pd

from switch_experiments import benchmark_averages, repro_outputs

AVERAGES = {"glue": benchmark_averages.GLUE_AVERAGE,
            "super_glue": benchmark_averages.SUPER_GLUE_AVERAGE}
MAJORITY = "majority class"

Scores = Mapping[int, Mapping[str, float]]  # {step: {"task/metric": value}}


def chosen_steps(frame: pd.DataFrame, average: str) -> Dict[str, int]:
  """{"best": the step with the highest ``average`` (earliest on ties), "last": the last step}.

  Without that average (no task of the benchmark evaluated) the best is the last.
  """
  if frame.empty:
    raise ValueError("no evaluated checkpoints")
  last = int(frame.index.max())
  values = frame[average].dropna() if average in frame.columns else pd.Series(dtype=float)
  if values.empty:
    return {"best": last, "last": last}
  top = values.max()
  return {"best": int(min(s for s, v in values.items() if v == top)), "last": last}


def _cell(value: Optional[float]) -> str:
  return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else (
      f"{value:.2f}")


def side_by_side(frames: Mapping[str, pd.DataFrame], baseline: pd.DataFrame, average: str
                 ) -> Tuple[List[str], List[List[str]]]:
  """(header, rows) of the comparison table.

  Args:
    frames: {model: scores_table(...) of its checkpoints}, in the order to show.
    baseline: scores_table of the majority-class scores (one row).
    average: the benchmark's average column (AVERAGES[benchmark]).
  """
  metrics: List[str] = []
  for frame in [*frames.values(), baseline]:
    metrics += [c for c in frame.columns if c not in metrics and c != average]
  metrics.append(average)
  header, columns = ["metric"], []
  for model, frame in frames.items():
    steps = chosen_steps(frame, average)
    header += [f"{model} (best avg., step {steps['best']})",
               f"{model} (last, step {steps['last']})"]
    columns += [frame.loc[steps["best"]], frame.loc[steps["last"]]]
  header.append(MAJORITY)
  columns.append(baseline.iloc[0] if len(baseline) else pd.Series(dtype=float))
  rows = [[metric] + [_cell(column.get(metric)) for column in columns] for metric in metrics]
  return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def long_rows(benchmark: str, frames: Mapping[str, pd.DataFrame], baseline: pd.DataFrame
              ) -> List[list]:
  """[benchmark, model, step, metric, value] for every cell (the baseline's step is empty)."""
  rows = []
  for model, frame in [*frames.items(), (MAJORITY, baseline)]:
    for step, row in frame.iterrows():
      for metric, value in row.items():
        if not pd.isna(value):
          rows.append([benchmark, model, "" if model == MAJORITY else int(step), metric,
                       round(float(value), 4)])
  return rows


def plot(curves: Mapping[str, Mapping[str, pd.DataFrame]],
         baselines: Mapping[str, pd.DataFrame], path: str, title: str) -> None:
  """One panel per benchmark: its average against the step, a line per model, the majority
  class dashed (when defined).

  Args:
    curves: {benchmark: {model: scores_table}}; baselines: {benchmark: its baseline frame}.
  """
  plt = repro_outputs.pyplot()
  fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
  for axis, (benchmark, frames) in zip(axes[0], curves.items()):
    average = AVERAGES[benchmark]
    for model, frame in frames.items():
      if average in frame.columns:
        axis.plot(frame.index, frame[average], marker="o", label=model)
    base = baselines[benchmark]
    if average in base.columns and not base[average].isna().all():
      axis.axhline(float(base[average].iloc[0]), color="grey", linestyle="--", label=MAJORITY)
    axis.set_title(average)
    axis.set_xlabel("global step (pre-training + fine-tuning)")
    axis.set_ylabel("dev score")
    axis.grid(alpha=0.3)
    axis.legend()
  fig.suptitle(title)
  fig.tight_layout()
  repro_outputs.save(fig, path)


def frames_of(scores: Mapping[str, Scores]) -> Dict[str, pd.DataFrame]:
  """{model: benchmark_averages.scores_table(its scores)}."""
  return {model: benchmark_averages.scores_table(per_step) for model, per_step in scores.items()}
