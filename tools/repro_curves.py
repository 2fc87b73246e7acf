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
