"""Expert scaling at a fixed compute per token (paper Figures 1 and 4, Appendix D).

A small dense T5 and its FLOP-matched Switch versions (each expert has the dense d_ff, so a
token costs the same FLOPs but for the router) with 4, 16 and 64 experts, all trained with the
same data, steps and batch; the dense and the 16-expert model also with more seeds
(initialisation and data order), so the comparison carries a noise band. Each model is
evaluated at every checkpoint on the same validation sequences. Reported: quality against
steps and training seconds, the step speed-up (the step at which each Switch model reaches
the dense model's final quality, against the dense model's steps), the gap at the end in seed
standard deviations, and each Switch layer's expert load over training.

    python tools/repro_expert_scaling.py                 # the committed full run (~4-5 h)
    python tools/repro_expert_scaling.py --only dense --only switch_16    # a part of it

The design (objective, where the Switch layers are, learning-rate schedule) was chosen by the
pilot, tools/repro_expert_scaling_pilot.py (results/repro_expert_scaling_pilot/): see
CHOSEN_DESIGN. Rerunning the same command resumes: trained models and evaluated checkpoints
are not redone, and a model whose record is committed under results/.../models/ is not
trained again on another machine.
"""

import dataclasses
import json
import os
import time
from typing import Optional

from switch_experiments import (
  paths,
  repro_curves,
  repro_main,
  repro_report,
  repro_runs,
  repro_scaling_plots,
)
from switch_experiments import repro_outputs as outputs
from switch_experiments.repro_settings import DEFAULT_TASK, Variant

SCRIPT = "repro_expert_scaling"
# tasks.DOCS_TASKS (tasks/shared_data.py): ../shared/data's Python and Linux kernel
# documentation, 5.26M training tokens. Named here so the script does not import TensorFlow.
DOCS_TASKS = {"span_corruption": "switch_docs_span_corruption",
              "full_lm": "switch_docs_full_lm"}
# Training sequences in one pass over the docs' training split (counted by reading the split
# through the task at these lengths: 128/32 span corruption, 160 for full_lm).
EXAMPLES_PER_PASS = {"span_corruption": 37_615, "full_lm": 33_690}
# What the paper measured for the same comparison (Section 3.1, Figure 4 and Appendix D).
PAPER_CLAIM = (
    "Switch-Base with 64 experts reaches T5-Base's quality at step 60k that T5-Base reaches at "
    "step 450k: a 7.5x step speed-up (Section 3.1, Figure 4, pre-training on C4). Quality "
    "at equal steps improves monotonically with the number of experts, and already with 2, 4 "
    "and 8 experts (Figure 4 left, Appendix D Figure 12).")


@dataclasses.dataclass(frozen=True)
class Design:
  """How the dense/Switch comparison is set up.

  Attributes:
    name: the design's name (``--design``).
    objective: "span_corruption" (encoder-decoder) or "full_lm" (decoder-only).
    dense_gin: the dense model's gin file.
    switch_gin: the Switch twin's gin file (same sizes, some FFNs Switch layers).
    gin_files: further gin files for both (e.g. a learning-rate schedule).
    description: one line for the markdown.
  """

  name: str
  objective: str
  dense_gin: str
  switch_gin: str
  gin_files: tuple = ()
  description: str = ""


DESIGNS = {d.name: d for d in (
    Design("paper", "span_corruption", "models/t5_tiny.gin", "models/switch_tiny.gin", (),
           "encoder-decoder, span corruption (the paper's pre-training), a Switch layer in "
           "every other FFN, constant learning rate 0.01"),
    Design("every_ffn", "span_corruption", "models/t5_tiny.gin",
           "models/switch_tiny_every_ffn.gin", (),
           "as paper, but a Switch layer in every FFN (Switch-C's expert frequency)"),
    Design("rsqrt_lr", "span_corruption", "models/t5_tiny.gin", "models/switch_tiny.gin",
           ("repro/rsqrt_schedule.gin",),
           "as paper, with T5's warm-up then inverse-square-root learning-rate decay"),
    Design("decoder_lm", "full_lm", "models/t5_tiny_lm.gin", "models/switch_tiny_lm.gin", (),
           "decoder-only language model (4 layers, 160 tokens, every token a target), a "
           "Switch layer in every other FFN, constant learning rate 0.01"),
)}
# The pilot's choice (results/repro_expert_scaling_pilot/README.md gives the curves and the
# rule it was chosen by).
CHOSEN_DESIGN = "decoder_lm"
EXPERT_COUNTS = (4, 16, 64)
SEEDED_EXPERTS = 16  # the Switch model run with every seed, beside dense
SEEDS = (1, 2, 3)


def model_variants(design: Design, expert_counts, seeds=(1,), seeded_experts=None,
                   task: Optional[str] = None, prefix: str = "") -> list:
  """Dense and Switch variants of a design; the dense and seeded_experts models per seed.

  Seed 1 is the run's main seed (names without a suffix); other seeds are named
  ``{model}.seed{n}`` and run after the main models, so that the first results are the
  comparison of every expert count. ``task``: trained on instead of the run's task;
  ``prefix``: of every variant's name.
  """
  task_params = (f'MIXTURE_NAME = "{task}"',) if task else ()
  def dense(seed):
    return Variant(prefix + "dense" + _suffix(seed), (design.dense_gin, *design.gin_files),
                   task_params, f"dense ({design.dense_gin}), seed {seed}", data_seed=seed)

  def switch(n, seed):
    return Variant(f"{prefix}switch_{n}" + _suffix(seed),
                   (design.switch_gin, *design.gin_files),
                   (*task_params, f"mtf_switch.SwitchFFN.num_experts = {n}"),
                   f"{n} experts ({design.switch_gin}), seed {seed}", data_seed=seed)

  main = [dense(seeds[0])] + [switch(n, seeds[0]) for n in expert_counts]
  extra = []
  for seed in seeds[1:]:
    extra.append(dense(seed))
    if seeded_experts is not None:
      extra.append(switch(seeded_experts, seed))
  return main + extra


def _suffix(seed: int) -> str:
  return "" if seed == 1 else f".seed{seed}"


def model_of(name: str) -> str:
  """'switch_16.seed2' -> 'switch_16'."""
  return name.split(".seed")[0]


def grouped(curves: dict) -> dict:
  """{model: [curve of each seed]}, models in the order first met."""
  groups = {}
  for name, curve in curves.items():
    groups.setdefault(model_of(name), []).append(curve)
  return groups


def speedup_rows(curves: dict) -> list:
  """One row per model (seeds averaged): final quality, its seed spread, the steps and
  seconds to the dense model's final quality, and the gap to dense in seed deviations."""
  groups = grouped(curves)
  means = {model: repro_curves.mean_curve(c) for model, c in groups.items()}
  dense = means["dense"]
  target = dense[-1]["neg_log_perplexity"]
  dense_std = dense[-1]["std"]
  rows = []
  for model, mean in means.items():
    final = mean[-1]
    reached = repro_curves.first_step_reaching(mean, target)
    interpolated = repro_curves.step_reaching(mean, target)
    gap = final["neg_log_perplexity"] - target
    pooled = ((final["std"] ** 2 + dense_std ** 2) / 2) ** 0.5
    seconds = (dense[-1]["cpu_seconds"] / reached["cpu_seconds"]
               if reached and reached.get("cpu_seconds") and dense[-1]["cpu_seconds"]
               else None)
    is_switch = model != "dense"  # dense against itself is no speed-up (see dense_plateau)
    rows.append([model, final["seeds"], final["step"], final["neg_log_perplexity"],
                 final["std"] if final["seeds"] > 1 else None,
                 reached["step"] if reached else "not reached",
                 f"{dense[-1]['step'] / reached['step']:.2f}x"
                 if is_switch and reached and reached["step"] else "-",
                 f"{dense[-1]['step'] / interpolated:.2f}x" if is_switch and interpolated
                 else "-",
                 f"{seconds:.2f}x" if is_switch and seconds else "-",
                 gap if model != "dense" else None,
                 f"{gap / pooled:.1f}" if model != "dense" and pooled > 0 else "-",
                 per_step(mean, "cpu_seconds")])
  return rows


def dense_plateau(rows: list) -> str:
  """Where the dense model itself first reached its final quality, and what that means for
  the speed-ups: a flat, noisy end of its curve lets a Switch model "reach" it early."""
  dense = next((r for r in rows if r[0] == "dense"), None)
  if dense is None or not isinstance(dense[5], int) or dense[5] >= dense[2]:
    return ""
  return (f"The dense model itself first reached its final quality at step {dense[5]} of "
          f"{dense[2]} (its last checkpoints are level within evaluation noise), so a step "
          f"speed-up up to {dense[2] / dense[5]:.2f}x is what the dense curve does against "
          "itself, not a Switch advantage.")


SPEEDUP_HEADER = ["model", "seeds", "steps", "final eval neg log perplexity (seed mean)",
                  "seed std", "first checkpoint >= dense final", "step speed-up",
                  "step speed-up (interpolated)", "CPU-time speed-up", "gap to dense",
                  "gap / pooled seed std", "CPU s per step"]


def per_step(curve: list, clock: str):
  timed = [r for r in curve if r.get(clock) is not None]
  if len(timed) < 2:
    return None
  return (timed[-1][clock] - timed[0][clock]) / (timed[-1]["step"] - timed[0]["step"])


def ordering_verdict(curves: dict) -> str:
  """Does quality at the final step increase with the number of experts? Stated plainly."""
  finals = [(model, repro_curves.mean_curve(c)[-1]["neg_log_perplexity"])
            for model, c in grouped(curves).items()]
  if "dense" not in dict(finals) or len(finals) < 2:
    # One model orders nothing: a partial run (models come in one by one) says so.
    return ("Ordering not assessed yet: it needs the dense model and at least one Switch "
            f"model; finished: {', '.join(m for m, _ in finals) or 'none'}.")
  finals = [("dense", dict(finals)["dense"])] + sorted(
      ((m, q) for m, q in finals if m != "dense"), key=lambda mq: int(mq[0].split("_")[1]))
  inversions = [(a, b) for (a, qa), (b, qb) in zip(finals, finals[1:], strict=False) if qb <= qa]
  ranked = ", ".join(f"{n} {q:.4f}" for n, q in finals)
  if not inversions:
    return f"Ordering holds at the final step (more experts, better quality): {ranked}."
  broken = "; ".join(f"{b} is not better than {a}" for a, b in inversions)
  return f"Ordering does NOT fully hold at the final step: {broken}. Finals: {ranked}."


def goal_verdict(rows: list, seeded: str) -> str:
  """The issue's goal, checked on the measured rows: the seeded Switch model reaches the
  dense final quality in at most half the steps, with the final gap above 3 seed deviations,
  and the step speed-up grows with the number of experts."""
  by_model = {r[0]: r for r in rows}
  if seeded not in by_model:
    return ""
  row = by_model[seeded]
  speedup = float(row[6][:-1]) if row[6] != "-" else None
  sigmas = float(row[10]) if row[10] != "-" else None
  parts = [f"{seeded}: step speed-up {row[6]} (goal >= 2x), final gap "
           f"{row[9]:+.4f} nats = {row[10]} pooled seed standard deviations (goal > 3; "
           f"{row[1]} seeds)."]
  verdict = ("met" if speedup and speedup >= 2 and sigmas and sigmas > 3 else "NOT met")
  parts.append(f"The 2x / 3-sigma goal is {verdict}.")
  switch = sorted((r for r in rows if r[0] != "dense"), key=lambda r: int(r[0].split("_")[1]))
  ups = [(r[0], r[7]) for r in switch]
  values = [float(u[:-1]) if u != "-" else 0.0 for _, u in ups]
  grows = all(b > a for a, b in zip(values, values[1:], strict=False))
  if len(values) < 2:
    trend = " - growth with the number of experts needs two or more Switch models."
  elif grows:
    trend = " - it grows with the number of experts."
  else:
    trend = " - it does NOT grow monotonically with the number of experts."
  parts.append("Interpolated step speed-up by expert count: " +
               ", ".join(f"{m} {u}" for m, u in ups) + trend)
  return " ".join(parts)


DEFAULT_SIZES = {"steps": 2000, "checkpoint_every": 100, "batch_size": 32, "eval_batches": 16}


def sizes_text(design: Design) -> str:
  lengths = ("160 tokens per sequence" if design.objective == "full_lm"
             else "inputs 128 / targets 32 tokens")
  return (f"design `{design.name}`: {design.description}; d_model 128, d_ff 512, 4 heads of "
          f"32, {lengths}, Adafactor; Switch: each expert d_ff 512 (FLOP-matched to dense "
          "but for the router), group size 1024, capacity factor 1.25 train / 2.0 eval, input "
          "jitter, load-balance loss 0.01, init scale 0.1; gin files: "
          f"{design.dense_gin}, {design.switch_gin}"
          + (f", {', '.join(design.gin_files)}" if design.gin_files else ""))


def passes_text(settings: dict, design: Design) -> str:
  sequences = settings["steps"] * settings["batch_size"]
  if settings["task"] != DOCS_TASKS[design.objective]:
    return f"Data: `{settings['task']}`, {sequences:,} sequences per model."
  per_pass = EXAMPLES_PER_PASS[design.objective]
  return (f"Data: `{settings['task']}`, {per_pass:,} training sequences per pass at these "
          f"lengths; {settings['steps']} steps x {settings['batch_size']} = {sequences:,} "
          f"sequences = {sequences / per_pass:.2f} passes per model.")


def write_results(curves: dict, settings: dict, flags, started: float, failures: dict):
  if "dense" not in curves:
    print("no dense model in this invocation: nothing to compare against", flush=True)
    return None
  design = DESIGNS[flags.design]
  results_dir = flags.results_dir
  outputs.write_curves_csv(os.path.join(results_dir, "curves.csv"), curves)
  rows = speedup_rows(curves)
  outputs.write_rows_csv(os.path.join(results_dir, "speedup.csv"), SPEEDUP_HEADER, rows)
  title = f"Expert scaling, {settings['task']}, batch {settings['batch_size']}"
  repro_scaling_plots.plot_quality_with_seeds(os.path.join(results_dir, "quality.png"),
                                              grouped(curves), title)
  repro_scaling_plots.plot_speedups(os.path.join(results_dir, "speedup.png"), rows)
  records_dir = os.path.join(results_dir, "models")
  if flags.replay_routing:
    replay_missing_routing(curves, settings, flags, records_dir)
  records = repro_scaling_plots.routing_records(records_dir, curves)
  load_plots = []
  for name, (scalars, source) in records.items():
    path = os.path.join(results_dir, f"expert_load_{name}.png")
    if repro_scaling_plots.plot_expert_load(path, scalars, name, source):
      load_plots.append(f"![expert load of {name}]({os.path.basename(path)})" +
                        (f"\n\n{name}: {source}." if source else "") +
                        f"\n\n{repro_scaling_plots.routing_summary(name, scalars)}")
  silent = [name for name in curves if not name.startswith("dense") and name not in records]
  if silent:
    load_plots.append(
        f"No routing statistics were recorded for {', '.join(silent)}: they were trained "
        "before `mtf_switch/summaries.py` carried them out of Mesh-TF's microbatch loop "
        "(the tiny gins' tokens_per_microbatch_per_replica = 2048 is below a step's "
        "tokens). `--replay_routing` replays them from the checkpoints.")
  seeded = f"switch_{flags.seeded_experts}"
  return outputs.write_markdown(os.path.join(results_dir, "README.md"), [
      "# Expert scaling at fixed FLOPs per token (paper Figures 1 and 4, Appendix D)",
      "![quality against steps and CPU seconds, seed band](quality.png)",
      outputs.markdown_table(SPEEDUP_HEADER, rows),
      dense_plateau(rows),
      goal_verdict(rows, seeded),
      ordering_verdict(curves),
      "![step speed-up per expert count](speedup.png)",
      "Step speed-up = dense steps / the first checkpoint at which the Switch model's "
      "seed-mean eval quality is at least the dense model's seed-mean final quality "
      f"(resolution: the checkpoint interval, {settings['checkpoint_every']} steps); the "
      "interpolated column places the crossing linearly between checkpoints. CPU-time "
      "speed-up: the same with the training process's CPU seconds (the machine was shared, "
      "so wall seconds are not comparable across models). Gap = Switch minus dense final "
      "quality; pooled seed std = sqrt((std_switch^2 + std_dense^2) / 2). Curves: "
      "`curves.csv`; per-model records (curves, routing statistics): `models/`.",
      "## Expert load per Switch layer over training\n\n"
      "Each expert's share of the tokens times the number of experts (1.0 = balanced), "
      "from the training summaries at every checkpoint (or replayed from the checkpoints, "
      "where a model says so), with the fraction of tokens dropped (over capacity).\n\n" + "\n\n".join(load_plots) if load_plots else "",
      "".join(f"* {name}: {reason}\n" for name, reason in failures.items()),
      passes_text(settings, design),
      f"Paper: {PAPER_CLAIM}",
      repro_report.run_description(settings, settings["command"], time.time() - started,
                                   sizes_text(design), curves),
  ])


def replay_missing_routing(curves: dict, settings: dict, flags, records_dir: str) -> None:
  """Replays the routing of every Switch model of this run whose record holds none."""
  for variant in _variants(flags):
    if variant.name not in curves or variant.name.startswith("dense"):
      continue
    path = os.path.join(records_dir, f"{variant.name}.json")
    if os.path.exists(path):
      with open(path) as f:
        if json.load(f).get("training_scalars"):
          continue
    repro_runs.replay_routing(variant, settings, flags.output_dir, records_dir)


def _add_flags(parser) -> None:
  parser.add_argument("--replay_routing", action="store_true",
                      help="replay the routing statistics of Switch models whose records hold "
                           "none from their checkpoints (tools/replay_routing.py)")
  parser.add_argument("--design", default=CHOSEN_DESIGN, choices=sorted(DESIGNS),
                      help="how the comparison is set up (default: the pilot's choice)")
  parser.add_argument("--experts", type=int, nargs="+", default=list(EXPERT_COUNTS),
                      help="expert counts of the Switch models")
  parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                      help="seeds of the dense and --seeded_experts models (first: all models)")
  parser.add_argument("--seeded_experts", type=int, default=SEEDED_EXPERTS,
                      help="the Switch model trained with every seed")


def _variants(flags) -> list:
  if flags.seeded_experts not in flags.experts:
    raise SystemExit(f"--seeded_experts {flags.seeded_experts} is not one of --experts "
                     f"{flags.experts}")
  if len(set(flags.seeds)) != len(flags.seeds) or flags.seeds[0] != 1:
    raise SystemExit(f"--seeds must be distinct and start with 1, got {flags.seeds}")
  return model_variants(DESIGNS[flags.design], flags.experts, flags.seeds, flags.seeded_experts)


def task_for(objective: str, span_corruption_task: str) -> str:
  """The task of an objective over the same text: tasks are named ``{corpus}_{objective}``."""
  suffix = "_span_corruption"
  if objective == "span_corruption":
    return span_corruption_task
  if not span_corruption_task.endswith(suffix):
    raise SystemExit(f"--task {span_corruption_task!r}: a {objective} design needs the "
                     f"corpus's span-corruption task name (ending in {suffix!r}) to find its "
                     f"{objective} task")
  return span_corruption_task[:-len(suffix)] + "_" + objective


def base_task(flags, resolved: str) -> str:
  """The span-corruption task of the run: --task, else the docs corpus when the shared data
  is there (resolved to DEFAULT_TASK), else what the common flags resolved to."""
  if flags.task:
    return flags.task
  return DOCS_TASKS["span_corruption"] if resolved == DEFAULT_TASK else resolved


REPRODUCTION = repro_main.Reproduction(
    script=SCRIPT, path=paths.tool(SCRIPT), description=__doc__.split("\n\n")[0],
    sizes=DEFAULT_SIZES,
    variants=_variants, write_results=write_results, add_flags=_add_flags,
    task_of=lambda flags, resolved: task_for(DESIGNS[flags.design].objective,
                                             base_task(flags, resolved)),
    extra_settings=lambda flags: {"design": flags.design})


def main(argv=None) -> int:
  return repro_main.main(REPRODUCTION, argv)
