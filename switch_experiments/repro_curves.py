"""Figures drawn from a model's quality curve.

A curve is a list of rows, one per evaluated checkpoint, ascending by step:
``{"step", "train_seconds" (None if not recorded), "neg_log_perplexity"}``.
"""

from typing import Optional


def final_quality(curve: list) -> float:
  return curve[-1]["neg_log_perplexity"]


def first_step_reaching(curve: list, threshold: float) -> Optional[dict]:
  """The first evaluated checkpoint with quality >= threshold (None if never).

  Resolution is the checkpoint interval: no interpolation between checkpoints.
  """
  return next((row for row in curve if row["neg_log_perplexity"] >= threshold), None)


def examples_per_second(curve: list, batch_size: int) -> Optional[float]:
  """Training throughput between the first and the last checkpoint (start-up excluded)."""
  timed = [r for r in curve if r["train_seconds"] is not None]
  if len(timed) < 2 or timed[-1]["train_seconds"] <= timed[0]["train_seconds"]:
    return None
  steps = timed[-1]["step"] - timed[0]["step"]
  return steps * batch_size / (timed[-1]["train_seconds"] - timed[0]["train_seconds"])


def step_reaching(curve: list, threshold: float) -> Optional[float]:
  """The step at which the curve first reaches ``threshold``, linearly interpolated between
  the two checkpoints around the crossing (None if never; the first checkpoint's step if it
  is already there)."""
  previous = None
  for row in curve:
    if row["neg_log_perplexity"] >= threshold:
      if previous is None:
        return float(row["step"])
      rise = row["neg_log_perplexity"] - previous["neg_log_perplexity"]
      fraction = (threshold - previous["neg_log_perplexity"]) / rise
      return previous["step"] + fraction * (row["step"] - previous["step"])
    previous = row
  return None


def quality_at(curve: list) -> dict:
  """{step: quality} of a curve."""
  return {row["step"]: row["neg_log_perplexity"] for row in curve}


def mean_curve(curves: list) -> list:
  """Rows at the steps every curve has: mean quality and the sample standard deviation over
  the curves (0.0 for a single curve), and the mean seconds of both clocks."""
  common = sorted(set.intersection(*(set(quality_at(c)) for c in curves)))
  rows = []
  for step in common:
    at = [next(r for r in c if r["step"] == step) for c in curves]
    values = [r["neg_log_perplexity"] for r in at]
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(
        values) > 1 else 0.0
    row = {"step": step, "neg_log_perplexity": mean, "std": std, "seeds": len(values)}
    for clock in ("train_seconds", "cpu_seconds"):
      times = [r.get(clock) for r in at]
      row[clock] = sum(times) / len(times) if None not in times else None
    rows.append(row)
  return rows
