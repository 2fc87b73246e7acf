"""The paper's headline measurement: how many dense steps buy a Switch model's quality.

Section 3.1 / Figure 4 (right) of the paper: Switch-Base with 64 experts reaches at step 60k
the quality T5-Base reaches at step 450k, a 7.5x step speed-up. Measured here the same way:
a dense T5 trained 4x longer than its FLOP-matched Switch twins (4, 16, 64 and 128 experts of
the dense d_ff each), all on one schedule whose value at step N does not depend on the run's
length (gin/repro/constant_rsqrt.gin), the same data order, the same fixed validation batches
at every checkpoint. For each Switch checkpoint S: the dense step at which the dense model
first reaches the Switch model's quality at S (interpolated between dense checkpoints), over
S. Where dense never gets there within its steps, the speed-up is reported as "> N x", with
N = dense steps / S.

    python tools/repro_speedup.py                        # the committed run (hours, resumable)
    python tools/repro_speedup.py --only dense --only switch_16     # a part of it

Rerunning resumes: trained models and evaluated checkpoints are not redone, and a model whose
record is committed under results/repro_speedup/models/ is not trained again on another machine.
"""

import json
import os
import time
from typing import Optional

from switch_experiments import (
  paths,
  repro_curves,
  repro_expert_scaling,
  repro_main,
  repro_report,
  repro_scaling_plots,
)
from switch_experiments import repro_outputs as outputs
from switch_experiments.repro_expert_scaling import _suffix, grouped
from switch_experiments.repro_settings import DEFAULT_TASK, Variant

SCRIPT = "repro_speedup"
# tasks.ENGLISH_TASKS["full_lm"] (tasks/shared_data.py): every English text file of
# ../shared/data. Named here so the script does not import TensorFlow.
TASK = "switch_english_full_lm"
DENSE_GIN = "models/t5_tiny_lm.gin"
SWITCH_GIN = "models/switch_tiny_lm.gin"
SCHEDULE_GIN = "repro/constant_rsqrt.gin"
# The Switch models' experts initialised as the dense FFN is (init scale 1.0, not the paper's
# 0.1 for the experts alone): why, and what it measured, in the gin file.
TWIN_INIT_GIN = "repro/twin_init.gin"
EXPERT_COUNTS = (4, 16, 64, 128)
SEEDED_EXPERTS = (16, 64)  # Switch models run with every seed, beside dense
SEEDS = (1, 2, 3)
DENSE_STEPS_FACTOR = 4  # dense trains this many times the Switch models' steps
# Switch 1000 steps, dense 4000: what fits the machine. Quiet, a step of these models costs
# 0.8-1.2 s, so dense takes about an hour and each Switch model 15-25 min, ~6 h for every
# model and seed. A model's checkpoints live only as long as the machine, which has been a
# session (at most 3 h, CI included): each model must train to the end within one, and the
# 2000 / 8000 design planned first (dense 8000 steps ~2.5 h) lost its dense run with the
# machine at step 4250. switch_16's record of that design (2000 steps) stands in, cut at
# 1000 (cut_longer_records: the schedule does not depend on the run's length), and the report
# reads its step-2000 quality against the dense curve as well.
DEFAULT_SIZES = {"steps": 1000, "checkpoint_every": 250, "batch_size": 32, "eval_batches": 16}
# Each model is trained in parts of this many steps, its new checkpoints evaluated after each:
# a model that outlasts a session then needs only its last checkpoint to resume.
EVALUATE_EVERY = 1000
SEQUENCE_LENGTH = 160  # t5_tiny_lm.gin's targets length
PAPER_CLAIM = (
    "Switch-Base with 64 experts reaches at step 60k the quality T5-Base reaches at step "
    "450k: a 7.5x step speed-up, growing with the number of experts (Section 3.1, Figure 4 "
    "right, pre-training on C4).")


def model_variants(expert_counts=EXPERT_COUNTS, seeds=SEEDS, seeded_experts=SEEDED_EXPERTS,
                   switch_steps: int = DEFAULT_SIZES["steps"],
                   dense_steps: Optional[int] = None) -> list:
  """Dense (``dense_steps``) and Switch (``switch_steps``) variants; seed 1 of every model
  first, then the other seeds of dense and the ``seeded_experts`` models."""
  dense_steps = dense_steps or DENSE_STEPS_FACTOR * switch_steps
  gin_files = (SCHEDULE_GIN,)

  def dense(seed):
    return Variant("dense" + _suffix(seed), (DENSE_GIN, *gin_files), (),
                   f"dense ({DENSE_GIN}), seed {seed}", data_seed=seed, steps=dense_steps)

  def switch(n, seed):
    return Variant(f"switch_{n}" + _suffix(seed), (SWITCH_GIN, *gin_files, TWIN_INIT_GIN),
                   (f"mtf_switch.SwitchFFN.num_experts = {n}",),
                   f"{n} experts ({SWITCH_GIN}), seed {seed}", data_seed=seed,
                   steps=switch_steps)

  variants = [switch(n, seeds[0]) for n in expert_counts]
  # Dense first: every speed-up is read off its curve.
  variants.insert(0, dense(seeds[0]))
  for seed in seeds[1:]:
    variants += [switch(n, seed) for n in seeded_experts if n in expert_counts]
  for seed in seeds[1:]:
    variants.append(dense(seed))
  return variants


def usable_dense(dense_mean: list) -> tuple:
  """The part of the dense seed-mean curve the speed-ups are read from, and a sentence.

  A dense model that makes several passes over the data may start to overfit: its validation
  quality then falls after a best checkpoint. The comparison stops there (the curve is cut at
  its best checkpoint) when the last checkpoint is worse than the best by more than the
  seeds' spread (or, with one seed, at all).
  """
  best = max(dense_mean, key=lambda r: r["neg_log_perplexity"])
  last = dense_mean[-1]
  drop = best["neg_log_perplexity"] - last["neg_log_perplexity"]
  noise = max(best["std"], last["std"])
  if best is last or drop <= noise:
    return dense_mean, (f"No overfitting: the dense validation curve is at its best at step "
                        f"{best['step']} of {last['step']}" +
                        (f" (the last checkpoint within {drop:.4f} nats of it, inside the "
                         f"seeds' spread {noise:.4f})" if best is not last else "") + ".")
  cut = [r for r in dense_mean if r["step"] <= best["step"]]
  return cut, (f"The dense validation curve peaks at step {best['step']} and ends "
               f"{drop:.4f} nats lower at step {last['step']} (seeds' spread {noise:.4f}): it "
               f"overfits, so the comparison uses dense only up to step {best['step']}.")


def speedup_at(switch_quality: float, step: int, dense_curve: list) -> dict:
  """One Switch checkpoint against the dense curve.

  Returns {"dense_step": interpolated dense step reaching switch_quality, or None,
  "speedup": dense_step / step, or None, "lower_bound": dense's last step / step when dense
  never reaches it (the speed-up is then larger than that)}.
  """
  dense_step = repro_curves.step_reaching(dense_curve, switch_quality)
  if dense_step is not None:
    return {"dense_step": dense_step, "speedup": dense_step / step, "lower_bound": None}
  return {"dense_step": None, "speedup": None, "lower_bound": dense_curve[-1]["step"] / step}


def speedup_text(result: dict) -> str:
  if result["speedup"] is not None:
    return f"{result['speedup']:.2f}x"
  return f"> {result['lower_bound']:.2f}x"


def speedup_curves(groups: dict, dense_curve: list) -> dict:
  """{switch model: [{"step", "quality", **speedup_at}]} over its seed-mean checkpoints > 0."""
  curves = {}
  for model, seed_curves in groups.items():
    if model == "dense":
      continue
    mean = repro_curves.mean_curve(seed_curves)
    curves[model] = [{"step": r["step"], "quality": r["neg_log_perplexity"],
                      **speedup_at(r["neg_log_perplexity"], r["step"], dense_curve)}
                     for r in mean if r["step"] > 0]
  return curves


def seed_speedups(seed_curves: list, dense_curve: list) -> list:
  """The speed-up of each seed's last checkpoint against the dense (seed-mean) curve; a seed
  whose quality dense never reaches counts at its lower bound."""
  values = []
  for curve in seed_curves:
    result = speedup_at(curve[-1]["neg_log_perplexity"], curve[-1]["step"], dense_curve)
    values.append(result["speedup"] if result["speedup"] is not None
                  else result["lower_bound"])
  return values


def _std(values: list) -> Optional[float]:
  if len(values) < 2:
    return None
  mean = sum(values) / len(values)
  return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


SUMMARY_HEADER = ["model", "seeds", "steps", "passes", "final quality (seed mean)", "seed std",
                  "dense at the same step", "gap / pooled seed std",
                  "dense step reaching it", "step speed-up", "speed-up per seed",
                  "(speed-up - 1) / seed std", "CPU s per step"]


def summary_rows(groups: dict, dense_curve: list, dense_mean: list, examples_per_pass,
                 batch_size: int) -> list:
  """One row per model: its final seed-mean quality, dense's at the same step, the step
  speed-up at its last checkpoint and its spread over seeds."""
  at_dense = repro_curves.quality_at(dense_mean)
  # Dense's seed std where it has seeds: with one dense seed a pooled std would be the Switch
  # model's alone, and the gap would look that many times more certain than it is.
  std_at_dense = {r["step"]: r["std"] for r in dense_mean if r.get("seeds", 1) > 1}
  rows = []
  for model, seed_curves in groups.items():
    mean = repro_curves.mean_curve(seed_curves)
    final = mean[-1]
    passes = (f"{final['step'] * batch_size / examples_per_pass:.2f}"
              if examples_per_pass else "-")
    per_step = repro_expert_scaling.per_step(mean, "cpu_seconds")
    if model == "dense":
      rows.append([model, final["seeds"], final["step"], passes, final["neg_log_perplexity"],
                   final["std"] if final["seeds"] > 1 else None, "-", "-", "-", "-", "-", "-",
                   per_step])
      continue
    same_step = at_dense.get(final["step"])
    pooled = (((final["std"] ** 2 + std_at_dense[final["step"]] ** 2) / 2) ** 0.5
              if final["seeds"] > 1 and final["step"] in std_at_dense else None)
    gap = final["neg_log_perplexity"] - same_step if same_step is not None else None
    result = speedup_at(final["neg_log_perplexity"], final["step"], dense_curve)
    per_seed = seed_speedups(seed_curves, dense_curve)
    spread = _std(per_seed)
    centre = result["speedup"] if result["speedup"] is not None else result["lower_bound"]
    rows.append([
        model, final["seeds"], final["step"], passes, final["neg_log_perplexity"],
        final["std"] if final["seeds"] > 1 else None,
        same_step if same_step is not None else "-",
        f"{gap / pooled:.1f}" if gap is not None and pooled else "-",
        f"{result['dense_step']:.0f}" if result["dense_step"] is not None
        else f"not within {dense_curve[-1]['step']}",
        speedup_text(result),
        ", ".join(f"{v:.2f}" for v in per_seed) if len(per_seed) > 1 else "-",
        f"{(centre - 1) / spread:.1f}" if spread else "-",
        per_step])
  return rows


GOALS = {"switch_64": 3.0, "switch_16": 2.0}


def goal_verdict(rows: list) -> str:
  """The issue's goals on the measured rows: 64 experts >= 3x, 16 experts >= 2x at their
  last checkpoint, each beyond 3 seed standard deviations where seeds exist, and the
  speed-up growing with the number of experts (4 < 16 < 64 <= 128)."""
  by_model = {r[0]: r for r in rows}
  parts = []
  for model, goal in GOALS.items():
    if model not in by_model:
      parts.append(f"{model}: not trained yet.")
      continue
    row = by_model[model]
    value = float(row[9].lstrip("> ").rstrip("x"))
    met = value >= goal and (row[11] == "-" or float(row[11]) > 3)
    parts.append(f"{model}: step speed-up {row[9]} at step {row[2]} (goal >= {goal:g}x"
                 + (f", {row[11]} seed std above 1x" if row[11] != "-" else ", one seed")
                 + f"): goal {'met' if met else 'NOT met'}.")
  switch = sorted((r for r in rows if r[0] != "dense"), key=lambda r: int(r[0].split("_")[1]))
  values = [(r[0], float(r[9].lstrip("> ").rstrip("x"))) for r in switch]
  if len(values) >= 2:
    grows = all(b >= a for (_, a), (_, b) in zip(values, values[1:], strict=False))
    parts.append("Speed-up by expert count: " + ", ".join(f"{m} {r[9]}" for m, r in
                                                          zip((v[0] for v in values), switch,
                                                              strict=True))
                 + (" - it grows with the number of experts." if grows
                    else " - it does NOT grow with the number of experts."))
  return " ".join(parts)


def beyond_run_text(records_dir: str, curves: dict, dense_curve: list, steps: int) -> str:
  """A sentence per Switch model whose committed record runs past this run's steps (a record
  of a longer run, cut for the table): its speed-up at each later checkpoint, read against
  the same dense curve."""
  lines = []
  for name in sorted(curves):
    path = os.path.join(records_dir, f"{name}.json")
    if name.startswith("dense") or not os.path.exists(path):
      continue
    with open(path) as f:
      longer = [r for r in json.load(f)["curve"] if r["step"] > steps]
    if longer:
      readings = ", ".join(
          f"S = {r['step']}: {r['neg_log_perplexity']:.4f}, "
          f"{speedup_text(speedup_at(r['neg_log_perplexity'], r['step'], dense_curve))}"
          for r in longer)
      lines.append(f"* {name} (one seed; its record trained {longer[-1]['step']} steps, cut at "
                   f"{steps} above): {readings}")
  if not lines:
    return ""
  return ("Past the run's last Switch checkpoint, from records of longer runs on the same "
          "schedule and data order (quality, step speed-up against the same dense curve):\n\n"
          + "\n".join(lines))


def plot_quality(path: str, groups: dict, speedups: dict, title: str) -> None:
  """Quality against steps and CPU seconds, seed bands; a dashed line from each Switch
  model's final quality to where the dense curve reaches it."""
  plt = outputs.pyplot()
  fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(13, 5))
  colors = repro_scaling_plots.draw_seed_curves(by_step, by_time, groups, emphasised=("dense",))
  for model, points in speedups.items():
    last = points[-1]
    end = last["dense_step"] if last["dense_step"] is not None else None
    right = end if end is not None else by_step.get_xlim()[1]
    by_step.hlines(last["quality"], last["step"], right, colors=colors.get(model),
                   linestyles="--", linewidth=1)
    by_step.annotate(speedup_text(last), (right, last["quality"]), textcoords="offset points",
                     xytext=(3, 3), fontsize="small", color=colors.get(model))
  outputs.finish_quality_panels(fig, by_step, by_time, repro_scaling_plots.CPU_SECONDS_LABEL,
                                title, path)


def plot_speedup_curves(path: str, speedups: dict, dense_steps: int,
                        per_seed: Optional[dict] = None) -> None:
  """Figure 4 right: the step speed-up of each Switch model at each of its checkpoints;
  hollow markers are lower bounds (dense never reached that quality within its steps).

  per_seed: {switch model: [each seed's speed-up at its last checkpoint]} (seed_speedups),
  drawn beside the seed mean's in the per-expert-count panel where a model has several.
  """
  plt = outputs.pyplot()
  fig, (curve_axes, final_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
  finals = []
  for model, points in speedups.items():
    steps = [p["step"] for p in points]
    values = [p["speedup"] if p["speedup"] is not None else p["lower_bound"] for p in points]
    (line,) = curve_axes.plot(steps, values, label=model)
    bounds = [(s, v) for s, v, p in zip(steps, values, points, strict=True)
              if p["speedup"] is None]
    if bounds:
      curve_axes.scatter(*zip(*bounds, strict=True), facecolors="none",
                         edgecolors=line.get_color())
    finals.append((int(model.split("_")[1]), values[-1], points[-1]["speedup"] is None))
  curve_axes.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
  curve_axes.set_xlabel("Switch model's training step S")
  curve_axes.set_ylabel("dense steps to the same quality / S")
  curve_axes.set_title(f"Step speed-up over dense (dense trained {dense_steps} steps;\n"
                       "hollow: dense never got there, a lower bound)")
  curve_axes.legend(fontsize="small")
  curve_axes.grid(alpha=0.3)
  seed_points = {int(model.split("_")[1]): values
                 for model, values in (per_seed or {}).items() if len(values) > 1}
  repro_scaling_plots.draw_speedup_per_expert_count(
      final_axes, finals, "step speed-up at the last checkpoint", "Speed-up per expert count",
      seed_points=seed_points)
  fig.tight_layout()
  outputs.save(fig, path)


def examples_per_pass(results_dir: str, task: str) -> Optional[int]:
  """Training sequences in one pass over the task's training split at SEQUENCE_LENGTH,
  counted once by reading the split through the task (cached in the results)."""
  path = os.path.join(results_dir, "examples_per_pass.json")
  cached = {}
  if os.path.exists(path):
    with open(path) as f:
      cached = json.load(f)
  key = f"{task}@{SEQUENCE_LENGTH}"
  if key not in cached:
    try:
      import seqio

      import tasks  # noqa: F401  (registers the tasks)
    except ImportError:
      return None
    dataset = seqio.get_mixture_or_task(task).get_dataset(
        {"targets": SEQUENCE_LENGTH}, split="train", shuffle=False)
    cached[key] = int(dataset.reduce(0, lambda n, _: n + 1).numpy())
    os.makedirs(results_dir, exist_ok=True)
    with open(path, "w") as f:
      json.dump(cached, f, indent=1)
  return cached[key]


def write_results(curves: dict, settings: dict, flags, started: float, failures: dict):
  if "dense" not in curves:
    print("no dense model in this invocation: nothing to compare against", flush=True)
    return None
  results_dir = flags.results_dir
  groups = grouped(curves)
  dense_mean = repro_curves.mean_curve(groups["dense"])
  dense_curve, overfitting = usable_dense(dense_mean)
  speedups = speedup_curves(groups, dense_curve)
  per_pass = (examples_per_pass(results_dir, settings["task"])
              if settings["task"] == TASK else None)
  rows = summary_rows(groups, dense_curve, dense_mean, per_pass, settings["batch_size"])
  outputs.write_curves_csv(os.path.join(results_dir, "curves.csv"), curves)
  outputs.write_rows_csv(os.path.join(results_dir, "speedup.csv"), SUMMARY_HEADER, rows)
  curve_rows = [[model, p["step"], p["quality"],
                 "" if p["dense_step"] is None else round(p["dense_step"], 1),
                 speedup_text(p)] for model, points in speedups.items() for p in points]
  outputs.write_rows_csv(os.path.join(results_dir, "speedup_curve.csv"),
                         ["model", "switch step S", "switch quality (seed mean)",
                          "dense step reaching it", "step speed-up"], curve_rows)
  title = f"Switch vs dense, {settings['task']}, batch {settings['batch_size']}"
  plot_quality(os.path.join(results_dir, "quality.png"), groups, speedups, title)
  plot_speedup_curves(os.path.join(results_dir, "speedup.png"), speedups,
                      dense_mean[-1]["step"],
                      {model: seed_speedups(seed_curves, dense_curve)
                       for model, seed_curves in groups.items() if model != "dense"})
  load_plots = []
  for name, (scalars, source) in repro_scaling_plots.routing_records(
      os.path.join(results_dir, "models"), curves).items():
    load_path = os.path.join(results_dir, f"expert_load_{name}.png")
    if repro_scaling_plots.plot_expert_load(load_path, scalars, name, source):
      load_plots.append(f"![expert load of {name}]({os.path.basename(load_path)})\n\n"
                        + repro_scaling_plots.routing_summary(name, scalars))
  dense_steps = dense_mean[-1]["step"]
  return outputs.write_markdown(os.path.join(results_dir, "README.md"), [
      "# Step speed-up of Switch over dense, measured the paper's way (Figure 4 right)",
      "![quality against steps and CPU seconds, seed bands](quality.png)",
      outputs.markdown_table(SUMMARY_HEADER, rows),
      goal_verdict(rows),
      overfitting,
      beyond_run_text(os.path.join(results_dir, "models"), curves, dense_curve,
                      settings["steps"]),
      "![step speed-up over S and per expert count](speedup.png)",
      f"Step speed-up at a Switch checkpoint S = the dense step at which the dense seed-mean "
      f"curve first reaches the Switch model's seed-mean quality at S (linear between dense "
      f"checkpoints, every {settings['checkpoint_every']} steps), over S; \"> N x\": dense "
      f"never reached it within its {dense_steps} steps (N = {dense_steps} / S). Speed-up per "
      "seed: each seed's last checkpoint against the dense seed-mean curve; (speed-up - 1) / "
      "seed std says how many of those seed deviations the speed-up stands above no "
      "speed-up. Gap = Switch minus dense quality at the Switch model's last step; pooled "
      "seed std = sqrt((std_switch^2 + std_dense^2) / 2). Passes: training sequences over "
      f"the training split's {per_pass or '?'} sequences of {SEQUENCE_LENGTH} tokens. "
      "Every speed-up at every checkpoint: `speedup_curve.csv`; curves: `curves.csv`; "
      "per-model records: `models/`.",
      "## Expert load per Switch layer over training\n\n" + "\n\n".join(load_plots)
      if load_plots else "",
      "".join(f"* {name}: {reason}\n" for name, reason in failures.items()),
      f"Paper: {PAPER_CLAIM}",
      repro_report.run_description(settings, settings["command"], time.time() - started,
                                   sizes_text(settings, dense_steps), curves),
  ])


def sizes_text(settings: dict, dense_steps: int) -> str:
  return (f"decoder-only language models ({DENSE_GIN}, {SWITCH_GIN}: 4 layers, d_model 128, "
          f"d_ff 512, 4 heads of 32, {SEQUENCE_LENGTH} tokens, every token a target, a Switch "
          "layer in every other FFN, each expert d_ff 512: FLOP-matched but for the router; "
          "group size 1024, capacity factor 1.25 train / 2.0 eval, input jitter, load-balance "
          f"loss 0.01, experts initialised as the dense FFN: {TWIN_INIT_GIN}), Adafactor, "
          "learning rate 0.01 for 1000 steps then "
          f"0.01 * sqrt(1000 / step) ({SCHEDULE_GIN}); dense trained {dense_steps} steps, "
          f"Switch {settings['steps']}")


def _add_flags(parser) -> None:
  parser.add_argument("--experts", type=int, nargs="+", default=list(EXPERT_COUNTS),
                      help="expert counts of the Switch models")
  parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                      help="seeds of dense and the --seeded_experts models (first: all)")
  parser.add_argument("--seeded_experts", type=int, nargs="*", default=list(SEEDED_EXPERTS),
                      help="the Switch models trained with every seed")
  parser.add_argument("--evaluate_every", type=int, default=EVALUATE_EVERY,
                      help="train each model in parts of this many steps, evaluating the new "
                           "checkpoints after each part")
  parser.add_argument("--dense_steps", type=int, default=None,
                      help=f"dense training steps (default {DENSE_STEPS_FACTOR} x --steps)")


def _variants(flags) -> list:
  if len(set(flags.seeds)) != len(flags.seeds) or flags.seeds[0] != 1:
    raise SystemExit(f"--seeds must be distinct and start with 1, got {flags.seeds}")
  missing = [n for n in flags.seeded_experts if n not in flags.experts]
  if missing:
    raise SystemExit(f"--seeded_experts {missing} not among --experts {flags.experts}")
  dense_steps = flags.dense_steps or DENSE_STEPS_FACTOR * flags.steps
  if dense_steps < flags.steps:
    raise SystemExit(f"--dense_steps {dense_steps} is below --steps {flags.steps}: dense must "
                     "train at least as long as the Switch models to place their quality")
  return model_variants(flags.experts, flags.seeds, flags.seeded_experts, flags.steps,
                        dense_steps)


def _task(flags, resolved: str) -> str:
  """--task, else the English corpus when the shared data is there."""
  if flags.task:
    return flags.task
  return TASK if resolved == DEFAULT_TASK else resolved


REPRODUCTION = repro_main.Reproduction(
    script=SCRIPT, path=paths.tool(SCRIPT), description=__doc__.split("\n\n")[0],
    sizes=DEFAULT_SIZES,
    variants=_variants, write_results=write_results, add_flags=_add_flags, task_of=_task,
    extra_settings=lambda flags: {
        "dense_steps": flags.dense_steps or DENSE_STEPS_FACTOR * flags.steps,
        "evaluate_every": flags.evaluate_every},
    # Every model trains on constant_rsqrt.gin, whose value at step N is the same in a run of
    # any length: a record of a longer run holds this run's curve as its first part.
    cut_longer_records=True)


def main(argv=None) -> int:
  return repro_main.main(REPRODUCTION, argv)
