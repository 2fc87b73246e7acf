"""Plots of the expert-scaling runs: quality with a seed band, step speed-ups, expert load.

    plot_quality_with_seeds   eval quality against steps and CPU seconds; models run with
                              several seeds drawn as their mean with a +-1 std band
    plot_speedups             the step speed-up to the dense final quality per expert count
                              (the paper's Figure 4 right, in steps)
    plot_expert_load          one heatmap per Switch layer: each expert's load over training
                              (1.0 = balanced), with the dropped fraction beneath
"""

import json
import math
import os
import re
from typing import Optional

from switch_experiments import repro_curves
from switch_experiments.repro_outputs import finish_quality_panels, pyplot, save

LOAD_TAG = re.compile(r"moe/(?P<layer>.+)/expert_load/(?P<expert>\d+)")
DROPPED_TAG = re.compile(r"moe/(?P<layer>.+)/dropped_fraction")
CPU_SECONDS_LABEL = "training CPU seconds of the trainer process (start-up excluded)"


def draw_seed_curves(by_step, by_time, groups: dict, emphasised=()) -> dict:
  """Each model's mean eval quality against steps (a +-1 std band where it ran with several
  seeds) and against CPU seconds; emphasised models (e.g. the dense baseline) are drawn
  thicker, without markers. groups: {model: [curve per seed]}; returns {model: colour}."""
  colors = {}
  for model, curves in groups.items():
    mean = [r for r in repro_curves.mean_curve(curves) if r["step"] > 0]
    label = model + (f" ({len(curves)} seeds, mean +- std)" if len(curves) > 1 else "")
    steps = [r["step"] for r in mean]
    quality = [r["neg_log_perplexity"] for r in mean]
    marker = None if model in emphasised else "."
    (line,) = by_step.plot(steps, quality, marker=marker, label=label,
                           linewidth=2.2 if model in emphasised else 1.5)
    colors[model] = line.get_color()
    if len(curves) > 1:
      by_step.fill_between(steps, [q - r["std"] for q, r in zip(quality, mean, strict=True)],
                           [q + r["std"] for q, r in zip(quality, mean, strict=True)],
                           color=line.get_color(), alpha=0.25, linewidth=0)
    timed = [r for r in mean if r.get("cpu_seconds") is not None]
    by_time.plot([r["cpu_seconds"] for r in timed], [r["neg_log_perplexity"] for r in timed],
                 marker=marker, color=line.get_color(), label=label)
  return colors


def plot_quality_with_seeds(path: str, groups: dict, title: str) -> None:
  """groups: {model: [curve per seed]}; two panels, against steps and CPU seconds."""
  plt = pyplot()
  fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.8))
  draw_seed_curves(by_step, by_time, groups)
  finish_quality_panels(fig, by_step, by_time, CPU_SECONDS_LABEL, title, path)


def draw_speedup_per_expert_count(axes, points: list, ylabel: str, title: str,
                                  seed_points: Optional[dict] = None) -> None:
  """points: [(experts, speed-up, is a lower bound)]; the speed-up against the number of
  experts (log 2), each point labelled ("> " before a lower bound), 1x dashed.

  seed_points: {experts: [each seed's speed-up]}, drawn as small grey dots beside the line
  (the line is the seed mean's speed-up), so the spread over seeds shows.
  """
  if points:
    points = sorted(points)
    axes.plot([p[0] for p in points], [p[1] for p in points], marker="o",
              label="seed mean" if seed_points else None)
    for experts, speedup, bound in points:
      axes.annotate(("> " if bound else "") + f"{speedup:.2f}x", (experts, speedup),
                    textcoords="offset points", xytext=(4, 4), fontsize="small")
  if seed_points:
    xs = [e for e, values in sorted(seed_points.items()) for _ in values]
    ys = [v for _, values in sorted(seed_points.items()) for v in values]
    axes.scatter(xs, ys, s=14, color="grey", zorder=3, label="each seed")
    axes.legend(fontsize="small")
  axes.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
  axes.set_xscale("log", base=2)
  axes.set_xlabel("experts per Switch layer")
  axes.set_ylabel(ylabel)
  axes.set_title(title)
  axes.grid(alpha=0.3)


def plot_speedups(path: str, rows: list) -> None:
  """rows: speedup_rows of repro_expert_scaling (model first, then the columns of
  SPEEDUP_HEADER); draws the interpolated step speed-up against the number of experts."""
  plt = pyplot()
  points = [(int(row[0].split("_")[1]), float(row[7].rstrip("x")), False) for row in rows
            if row[0].startswith("switch_") and row[7] != "-"]
  fig, axes = plt.subplots(figsize=(5.5, 4))
  draw_speedup_per_expert_count(axes, points, "step speed-up to dense final quality",
                                "Step speed-up over the dense model")
  fig.tight_layout()
  save(fig, path)


def routing_records(records_dir: str, curves: dict) -> dict:
  """{model: (scalars, source)} of the Switch models, scalars being {tag: {step: value}}.

  From the training summaries kept in the model's record (written by repro_runs), else from a
  replay of its checkpoints (``{name}.routing_replay.json``, tools/replay_routing.py). The
  source is "" for training summaries, else a phrase that says how the replay measured them.
  """
  found = {}
  for name in curves:
    if name.startswith("dense"):
      continue
    scalars, source = {}, ""
    path = os.path.join(records_dir, f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        scalars = json.load(f).get("training_scalars", {})
    replay_path = os.path.join(records_dir, f"{name}.routing_replay.json")
    if not scalars and os.path.exists(replay_path):
      with open(replay_path) as f:
        replay = json.load(f)
      scalars = replay["scalars"]
      source = (f"replayed at each checkpoint: training-mode routing on {replay['batches']} "
                f"fixed {replay['split']} batches of {replay['batch_size']}")
    # A record cut at a shorter run's steps (repro_runs.read_record) holds statistics of
    # later steps too: only those of the curve's steps are this run's.
    last = max((row["step"] for row in curves[name]), default=None)
    if scalars:
      found[name] = ({tag: {int(s): v for s, v in values.items()
                            if last is None or int(s) <= last}
                      for tag, values in scalars.items()}, source)
  return found


def load_by_layer(scalars: dict) -> dict:
  """{layer: (steps, [[load of expert e at each step] for e], dropped at each step)}."""
  layers = {}
  for tag, values in scalars.items():
    if found := LOAD_TAG.fullmatch(tag):
      layers.setdefault(found["layer"], {})[int(found["expert"])] = values
  table = {}
  for layer, experts in sorted(layers.items()):
    steps = sorted(set.intersection(*(set(v) for v in experts.values())))
    loads = [[experts[e][s] for s in steps] for e in sorted(experts)]
    dropped_values = scalars.get(f"moe/{layer}/dropped_fraction", {})
    dropped = [dropped_values.get(s) for s in steps]
    table[layer] = (steps, loads, dropped)
  return table


def routing_summary(name: str, scalars: dict) -> str:
  """One line: each layer's dropped tokens and busiest expert's load, first and last step."""
  parts = []
  for layer, (steps, loads, dropped) in load_by_layer(scalars).items():
    if not steps:
      continue
    busiest = [max(row[i] for row in loads) for i in (0, -1)]
    drop = ["?" if d is None else f"{100 * d:.1f}%" for d in (dropped[0], dropped[-1])]
    parts.append(f"`{_short_layer(layer)}` drops {drop[0]} of tokens at step {steps[0]} and "
                 f"{drop[1]} at step {steps[-1]}; its busiest expert carries {busiest[0]:.2f}x "
                 f"then {busiest[1]:.2f}x the balanced load")
  return f"{name}: " + "; ".join(parts) + "." if parts else ""


def plot_expert_load(path: str, scalars: dict, name: str, source: str = "") -> bool:
  """Writes the heatmaps; False (nothing written) when there are no per-expert loads.

  source: how the scalars were measured when not by the training summaries (a subtitle).
  """
  table = load_by_layer(scalars)
  if not table:
    return False
  plt = pyplot()
  from matplotlib import colors, ticker

  fig, axes = plt.subplots(2, len(table), figsize=(5.5 * len(table), 6.5), squeeze=False,
                           gridspec_kw={"height_ratios": [3, 1]})
  image = None
  for column, (layer, (steps, loads, dropped)) in enumerate(table.items()):
    heat, line = axes[0][column], axes[1][column]
    # Load 0 (an idle expert) has no logarithm; clip it to the bottom of the scale.
    floor = 1 / 8
    image = heat.imshow([[max(v, floor) for v in row] for row in loads], aspect="auto",
                        interpolation="nearest", cmap="RdBu_r",
                        norm=colors.LogNorm(vmin=floor, vmax=8.0),
                        extent=(steps[0], steps[-1], len(loads) - 0.5, -0.5))
    heat.set_title(_short_layer(layer), fontsize="small")
    heat.set_ylabel("expert")
    heat.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    line.plot(steps, [100 * d if d is not None else math.nan for d in dropped], marker=".")
    line.set_ylabel("tokens dropped (%)")
    line.set_xlabel("training step")
    line.set_xlim(steps[0], steps[-1])
    line.grid(alpha=0.3)
  # One colour bar for the whole figure, so that every layer's panels keep the same width and
  # the dropped-token plots stay under their heatmaps.
  bar = fig.colorbar(image, ax=[a for row in axes for a in row], shrink=0.7,
                     label="expert load (1.0 = balanced)")
  ticks = [1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8]
  bar.set_ticks(ticks, labels=["1/8", "1/4", "1/2", "1", "2", "4", "8"])
  fig.suptitle(f"{name}: expert load per Switch layer during training"
               + (f"\n({source})" if source else ""))
  save(fig, path)
  return True


def _short_layer(layer: str) -> str:
  """'encoder/block_000/layer_003/SwitchFFN' stays readable; longer scopes lose the front."""
  return layer if len(layer) <= 48 else "..." + layer[-45:]
