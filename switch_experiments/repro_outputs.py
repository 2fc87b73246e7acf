"""What a reproduction writes: curves and tables as CSV, the quality plot, markdown tables."""

import csv
import os
from typing import Sequence


def write_curves_csv(path: str, curves: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["model", "step", "train_seconds", "cpu_seconds",
                     "eval_neg_log_perplexity"])
    for name, curve in curves.items():
      for row in curve:
        writer.writerow([name, row["step"], row["train_seconds"], row.get("cpu_seconds"),
                         row["neg_log_perplexity"]])


def write_rows_csv(path: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def pyplot():
  """matplotlib's pyplot on the Agg backend (no display on the training machine)."""
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  return plt


def save(fig, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  pyplot().close(fig)


def finish_quality_panels(fig, by_step, by_time, time_label: str, title: str, path: str) -> None:
  """Labels, grid and legend of the quality-against-steps and -against-time panels; saves."""
  by_step.set_xlabel("training step")
  by_time.set_xlabel(time_label)
  for axes in (by_step, by_time):
    axes.set_ylabel("eval neg log perplexity (higher is better)")
    axes.grid(alpha=0.3)
  by_step.legend(fontsize="small")
  fig.suptitle(title)
  fig.tight_layout()
  save(fig, path)


def plot_curves(path: str, curves: dict, title: str) -> None:
  """Two panels: eval neg log perplexity against steps and against training seconds."""
  fig, (by_step, by_time) = pyplot().subplots(1, 2, figsize=(12, 4.5))
  for name, curve in curves.items():
    # Step 0 is the random init; its perplexity would squash the scale of everything else.
    trained = [r for r in curve if r["step"] > 0]
    by_step.plot([r["step"] for r in trained], [r["neg_log_perplexity"] for r in trained],
                 marker=".", label=name)
    timed = [r for r in trained if r["train_seconds"] is not None]
    by_time.plot([r["train_seconds"] for r in timed], [r["neg_log_perplexity"] for r in timed],
                 marker=".", label=name)
  finish_quality_panels(fig, by_step, by_time, "training seconds (this machine, start-up excluded)",
                        title, path)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def _cell(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
  return str(value)


def write_markdown(path: str, parts: Sequence[str]) -> str:
  """Joins the non-empty parts with blank lines, writes them to path; returns the text."""
  text = "\n\n".join(part for part in parts if part)
  text = "\n\n".join(piece for piece in text.split("\n\n") if piece)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text + "\n")
  return text
