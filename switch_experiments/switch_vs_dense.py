"""Train a small Switch language model and its FLOP-matched dense twin; compare their quality.

The README's main command. Both models (gin/models/switch_tiny_lm.gin with 16 experts in
every other FFN, gin/models/t5_tiny_lm.gin: the same 4-layer decoder, every expert as wide as
the dense FFN, so a token costs the same FLOPs but for the router; the experts initialised
as the dense FFN is, gin/repro/twin_init.gin) train on the same data, in
the same order, from seeded weights, on the headline run's corpus and schedule, through
``switch_mesh_transformer``. Every checkpoint is evaluated on the same validation batches.
It prints a progress bar, then both models' validation negative log perplexity, the gap
against the seed spread the committed pilot measured for this very command, the committed
headline figure with its command, and writes a plot of both curves.

    python tools/switch_vs_dense.py                 # the main command (~8 min on 2 cores)
    python tools/switch_vs_dense.py --steps 1000    # longer: the gap as it grows
    python tools/switch_vs_dense.py --seed 2        # another initialisation and data order
    python tools/switch_vs_dense.py --pilot         # seeds 1-3: results/switch_vs_dense_pilot/
    python tools/switch_vs_dense.py --full_comparison   # the headline run (hours, resumable)

``--full_comparison`` runs tools/repro_speedup.py (dense trained 4x longer than Switch with
4-128 experts, several seeds); arguments after it go to that script. Reruns resume: each
model's directory keeps its checkpoints (delete ``--output_dir`` to start over).
"""

import argparse
import csv
import json
import os
import sys
import time

from switch_experiments import repro_outputs as outputs
from switch_experiments import repro_runs, repro_speedup
from switch_experiments.repro_settings import REPO, Variant

FULL_COMPARISON = "--full_comparison"
TASK = repro_speedup.TASK  # all the English text of ../shared/data
FALLBACK_TASK = "switch_default_corpus_full_lm"  # embedded, needs no shared data
EXPERTS = 16
# By the pilot's timing rule (results/switch_vs_dense_pilot/RULE.md), fixed before the
# pilot's quality was read: from a quiet 200-step run of this design (2026-12-03, 18:32-18:46
# UTC), a run of N steps costs about 306 + 2.243 N seconds (Switch 1.166 s/step, dense 1.077,
# ~91 s of training start-up, ~180 s for four evaluations per model, ~35 s between
# processes); the largest multiple of 20 steps within 9 minutes is 100.
STEPS = 100
# Checkpoints evaluated, evenly spaced after step 0 (step 0 is not evaluated: both models
# start at ~-9.6, and each evaluation costs ~20 s of the 10 minutes).
EVALUATIONS = 4
BATCH_SIZE = 32
EVAL_BATCHES = 16
PILOT_SEEDS = (1, 2, 3)
PILOT_DIR = os.path.join(REPO, "results", "switch_vs_dense_pilot")
HEADLINE_DIR = os.path.join(REPO, "results", repro_speedup.SCRIPT)


def variants(seed: int, experts: int = EXPERTS) -> list:
  """The two models of one run: Switch first (the slower one: its speed sets the ETA)."""
  schedule = (repro_speedup.SCHEDULE_GIN,)
  return [Variant("switch", (repro_speedup.SWITCH_GIN, *schedule, repro_speedup.TWIN_INIT_GIN),
                  (f"mtf_switch.SwitchFFN.num_experts = {experts}",),
                  f"Switch, {experts} experts", data_seed=seed),
          Variant("dense", (repro_speedup.DENSE_GIN, *schedule), (), "dense twin",
                  data_seed=seed)]


def _positive_int(text: str) -> int:
  """argparse type: an integer >= 1."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
  return value


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--task", default=None,
                      help=f"seqio full_lm task (default {TASK} if the shared data is present, "
                           f"else {FALLBACK_TASK})")
  parser.add_argument("--steps", type=_positive_int, default=STEPS,
                      help="training steps per model")
  parser.add_argument("--experts", type=_positive_int, default=EXPERTS,
                      help="experts per Switch layer")
  parser.add_argument("--batch_size", type=_positive_int, default=BATCH_SIZE)
  parser.add_argument("--eval_batches", type=_positive_int, default=EVAL_BATCHES,
                      help="validation batches per evaluation (the same for every checkpoint)")
  parser.add_argument("--seed", type=int, default=1,
                      help="seed of both models' initial weights and training data order")
  parser.add_argument("--output_dir", default=os.path.join(REPO, "runs", "switch_vs_dense"))
  parser.add_argument("--gin_file", action="append", default=[],
                      help="extra gin file for both models (e.g. repro/micro.gin)")
  parser.add_argument("--gin_param", action="append", default=[],
                      help="extra gin bindings for both models")
  parser.add_argument("--pilot", action="store_true",
                      help=f"run seeds {PILOT_SEEDS} and write the seed spread to --pilot_dir")
  parser.add_argument("--pilot_dir", default=PILOT_DIR,
                      help="the pilot's results (read by every run for the seed spread)")
  parser.add_argument(FULL_COMPARISON, action="store_true",
                      help="run the headline comparison instead (tools/repro_speedup.py; "
                           "later arguments go to it)")
  return parser


def resolve_task(flags) -> str:
  if flags.task:
    return flags.task
  shared = os.path.join(os.path.dirname(REPO), "shared", "data", "text", "en_pydocs.txt")
  if os.path.isfile(shared):
    return TASK
  print(f"../shared/data is absent: training on the embedded corpus ({FALLBACK_TASK}); the "
        "committed pilot and headline figures are for the shared English text", flush=True)
  return FALLBACK_TASK


class ProgressBar:
  """One line for the whole training: the model, a bar, step, steps/s and time left.

  On a terminal the line is redrawn in place; in a log (not a terminal) it is printed at
  every tenth of a model's steps, so a log holds a dozen lines, not one per step.
  """

  WIDTH = 30

  def __init__(self, models: list, steps: int, stream=None):
    self.models = models
    self.steps = steps
    self.stream = stream or sys.stdout
    self.tty = self.stream.isatty()
    self.printed_tenths = set()

  def __call__(self, progress) -> None:
    model, step, total = progress.label, progress.step, progress.total_steps
    done = min(step / total, 1.0) if total else 1.0
    bar = "#" * int(done * self.WIDTH) + "-" * (self.WIDTH - int(done * self.WIDTH))
    later = self.models[self.models.index(model) + 1:] if model in self.models else []
    speed = progress.speed
    if speed == speed and speed > 0:  # not NaN: known once two steps are timed
      left = ((total - step) + self.steps * len(later)) / speed
      timing = f"{speed:5.2f} steps/s  ~{int(left // 60)}:{int(left % 60):02d} left"
    else:
      timing = "starting"
    line = (f"{model:>6} [{bar}] step {step:>5}/{total}  loss {progress.loss:6.3f}  "
            f"{timing}")
    if self.tty:
      self.stream.write("\r" + line + " " * 4)
      if step >= total:
        self.stream.write("\n")
      self.stream.flush()
      return
    tenth = int(done * 10)
    if (model, tenth) not in self.printed_tenths:
      self.printed_tenths.add((model, tenth))
      print(line, file=self.stream, flush=True)


def run_once(flags, seed: int, output_dir: str) -> dict:
  """Trains and evaluates both models for one seed; returns the run's result fields."""
  task = resolve_task(flags)
  checkpoint_every = max(1, flags.steps // EVALUATIONS)
  settings = {"task": task, "steps": flags.steps, "checkpoint_every": checkpoint_every,
              "batch_size": flags.batch_size, "eval_batches": flags.eval_batches,
              "data_seed": seed, "gin_file": list(flags.gin_file),
              "gin_param": list(flags.gin_param)}
  models = variants(seed, flags.experts)
  bar = ProgressBar([v.name for v in models], flags.steps)
  started = time.time()
  results, curves = [], {}
  for variant in models:
    repro_runs.train(variant, settings, output_dir, on_step=bar)
    # The seconds its training took (train_seconds.json), also when an earlier invocation
    # trained it.
    train_seconds = max(repro_runs.train_seconds(variant, output_dir).values(), default=0.0)
    quality = repro_runs.evaluate(variant, settings, output_dir, from_step=1)
    curves[variant.name] = sorted(quality.items())
    final_step = max(s for s in quality if s <= flags.steps)
    results.append({"model": variant.name, "description": variant.description,
                    "steps": final_step, "neg_log_perplexity": round(quality[final_step], 4),
                    "train_seconds": round(train_seconds, 1)})
  by_model = {r["model"]: r for r in results}
  gap = by_model["switch"]["neg_log_perplexity"] - by_model["dense"]["neg_log_perplexity"]
  plot = os.path.join(output_dir, "switch_vs_dense.png")
  _plot(plot, curves, task, flags)
  return {"task": task, "seed": seed, "experts": flags.experts, "steps": flags.steps,
          "batch_size": flags.batch_size, "results": results, "gap": round(gap, 4),
          "wall_seconds": round(time.time() - started, 1), "plot": plot}


def _plot(path: str, curves: dict, task: str, flags) -> None:
  plt = outputs.pyplot()
  fig, axes = plt.subplots(figsize=(6.5, 4.2))
  for model, points in curves.items():
    shown = [(s, q) for s, q in points if s > 0]
    label = f"Switch ({flags.experts} experts)" if model == "switch" else "dense twin"
    axes.plot([s for s, _ in shown], [q for _, q in shown], marker="o", label=label)
  axes.set_xlabel("training step")
  axes.set_ylabel("validation neg log perplexity (higher is better)")
  axes.set_title(f"Switch vs dense, {task}")
  axes.grid(alpha=0.3)
  axes.legend()
  fig.tight_layout()
  outputs.save(fig, path)


def read_pilot(pilot_dir: str):
  """The committed pilot's summary (pilot.json), or None."""
  path = os.path.join(pilot_dir, "pilot.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def spread_of(finals_by_model: dict) -> float:
  """The seed spread: the larger of the two models' ranges (max - min) of final quality."""
  return max(max(v) - min(v) for v in finals_by_model.values())


def verdict(gap: float, pilot) -> str:
  """Whether this run's gap is beyond the seed spread the pilot measured for the command."""
  if pilot is None:
    return (f"Switch - dense = {gap:+.4f} nats. No committed pilot to compare it with "
            "(python tools/switch_vs_dense.py --pilot measures the seed spread).")
  spread = pilot["spread"]
  ahead = "ahead of" if gap > 0 else "behind"
  if gap > spread:
    return (f"Switch is {ahead} its dense twin by {gap:.4f} nats, more than the seed spread "
            f"of this command ({spread:.4f} nats: the larger model's range of final quality "
            f"over seeds {', '.join(map(str, pilot['seeds']))}, committed pilot).")
  return (f"Switch is {ahead} its dense twin by {abs(gap):.4f} nats: NOT beyond the seed "
          f"spread of this command ({spread:.4f} nats over seeds "
          f"{', '.join(map(str, pilot['seeds']))}, committed pilot); the gap would have to "
          f"grow by {spread - gap:.4f} nats to resolve.")


def headline_lines(headline_dir: str = HEADLINE_DIR) -> list:
  """The committed headline figures (results/repro_speedup/speedup.csv) and their command."""
  path = os.path.join(headline_dir, "speedup.csv")
  if not os.path.exists(path):
    return ["No headline run committed yet (python tools/repro_speedup.py)."]
  with open(path, newline="") as f:
    rows = [r for r in csv.DictReader(f) if r["model"] != "dense"]
  dense_steps = repro_speedup.DENSE_STEPS_FACTOR * repro_speedup.DEFAULT_SIZES["steps"]
  lines = [f"Committed headline run (python tools/repro_speedup.py, {headline_dir}): dense "
           f"trained {dense_steps} steps; the dense step that reaches each Switch model's "
           "quality, over the Switch model's step:"]
  lines += [f"  {r['model']} ({r['seeds']} seed(s)) at step {r['steps']}: step speed-up "
            f"{r['step speed-up']}" for r in rows]
  return lines


def print_report(run: dict, pilot) -> None:
  print()
  print(f"| model | steps | validation neg log perplexity ({run['task']}) | train s |")
  print("| --- | --- | --- | --- |")
  for r in run["results"]:
    print(f"| {r['description']} | {r['steps']} | {r['neg_log_perplexity']:.4f} | "
          f"{r['train_seconds']:.0f} |")
  print()
  print(verdict(run["gap"], pilot))
  print(f"Plot of both curves: {run['plot']}")
  for line in headline_lines():
    print(line)
  print(json.dumps({**run, "pilot_spread": pilot["spread"] if pilot else None,
                    "resolved": bool(pilot) and run["gap"] > pilot["spread"]}))


def run_pilot(flags) -> dict:
  """Seeds 1-3 of the command as it stands; writes their table and spread to --pilot_dir."""
  runs = []
  for seed in PILOT_SEEDS:
    print(f"== pilot seed {seed}", flush=True)
    runs.append(run_once(flags, seed, os.path.join(flags.output_dir, f"seed{seed}")))
  finals = {m: [next(r["neg_log_perplexity"] for r in run["results"] if r["model"] == m)
                for run in runs] for m in ("switch", "dense")}
  gaps = [run["gap"] for run in runs]
  summary = {"task": runs[0]["task"], "experts": flags.experts, "steps": flags.steps,
             "batch_size": flags.batch_size, "seeds": list(PILOT_SEEDS),
             "finals": finals, "gaps": gaps, "mean_gap": round(sum(gaps) / len(gaps), 4),
             "spread": round(spread_of(finals), 4),
             "wall_seconds": [run["wall_seconds"] for run in runs]}
  summary["resolved"] = summary["mean_gap"] > summary["spread"] and min(gaps) > 0
  os.makedirs(flags.pilot_dir, exist_ok=True)
  with open(os.path.join(flags.pilot_dir, "pilot.json"), "w") as f:
    json.dump(summary, f, indent=1)
  rows = [[seed, f, d, g, w] for seed, f, d, g, w in zip(
      PILOT_SEEDS, finals["switch"], finals["dense"], gaps, summary["wall_seconds"],
      strict=True)]
  outputs.write_rows_csv(os.path.join(flags.pilot_dir, "pilot.csv"),
                         ["seed", "switch final", "dense final", "gap", "wall seconds"], rows)
  return summary


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if FULL_COMPARISON in argv:
    return repro_speedup.main([a for a in argv if a != FULL_COMPARISON])
  flags = _parser().parse_args(argv)
  if flags.pilot:
    summary = run_pilot(flags)
    print(json.dumps(summary))
    return 0
  run = run_once(flags, flags.seed, flags.output_dir)
  print_report(run, read_pilot(flags.pilot_dir))
  return 0
