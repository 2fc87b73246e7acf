"""Shared machinery of the paper-reproduction scripts (tools/repro_*.py).

Every reproduction is a list of model variants trained with the same data, steps and batch
through ``switch_mesh_transformer`` (t5_mesh_transformer with this project's layers and
tasks), checkpointed every K steps and evaluated at every checkpoint on a fixed validation
sample, so each variant gives a curve of eval negative log perplexity against steps and
against training seconds:

    train(variant)     one process per variant; resumes from its last checkpoint; records the
                       training seconds at each checkpoint (start-up and evaluation excluded)
    evaluate(variant)  one process per variant for all checkpoints not yet evaluated
                       (``eval_checkpoint_step`` = that list); figures parsed from the log

Files of one run, under ``--output_dir`` (default ``runs/<script>``):

    settings.json                 what the run is (task, steps, batch, ...); a rerun with other
                                  training settings refuses to mix them into the same dirs
    <variant>/                    the model_dir: checkpoints, TensorBoard events, gin config
    <variant>/train_seconds.json  {checkpoint step: training seconds up to it}
    <variant>/eval.json           {checkpoint step: eval neg log perplexity}
    <variant>/logs/*.log          full CLI logs

The scripts write their CSV, PNG and markdown under ``--results_dir`` (default
``results/<script>``).
"""

import argparse
import csv
import dataclasses
import datetime
import json
import os
import platform
import re
import sys
import time
from typing import Callable, Optional, Sequence

import cli_runs  # a sibling module: the scripts put tools/ on sys.path

REPO = cli_runs.REPO
DEFAULT_TASK = "switch_pydocs_span_corruption"
FALLBACK_TASK = "switch_default_corpus_span_corruption"  # embedded, needs no shared data
CPU_MESH = "mesh/cpu_data_parallel.gin"  # gin paths resolve against the project gin/ dir
# Settings that change what a model learns; a rerun must match them to reuse checkpoints.
TRAINING_SETTINGS = ("task", "batch_size", "checkpoint_every", "data_seed", "gin_file",
                     "gin_param", "init_seed")
# Each model's graph seed (mtf_switch.init_seed) is its data seed. Runs made before the seed
# existed have no "init_seed" setting, so they are not resumed as if they had one.
INIT_SEED = "the model's data seed"
EVAL_SEED = 20210111  # fixed, so every model and checkpoint sees the same validation batches
# absl repeats every INFO line in its own format; matching only TF's own prefix reads each once.
SAVE_LINE = re.compile(r"^INFO:tensorflow:Saving checkpoints for (\d+) into")
LOSS_LINE = re.compile(r"tf_loss\[([0-9.eE+-]+)\]\[(\d+)\]")  # printed by the CLI every step
EVAL_LINE = re.compile(r"^INFO:tensorflow:Saving dict for global step (\d+): (.*)")


@dataclasses.dataclass(frozen=True)
class Variant:
  """One model of a reproduction.

  Attributes:
    name: directory name and label in tables and plots.
    gin_files: model gin files (the CPU mesh is added), relative to the project gin/ dir.
    gin_params: bindings that make this variant what it is.
    description: one line for the markdown ("8 experts, cf 1.25").
    data_seed: this variant's training data seed (repeats of one model with other seeds);
      None: the run's --data_seed, the same for every model.
  """

  name: str
  gin_files: tuple
  gin_params: tuple = ()
  description: str = ""
  data_seed: Optional[int] = None


# ----------------------------------------------------------------------------------------------
# Command line shared by the scripts


def add_common_flags(parser: argparse.ArgumentParser, script: str, steps: int,
                     checkpoint_every: int, batch_size: int, eval_batches: int) -> None:
  """Flags every reproduction takes; the defaults are each script's full-run sizes."""
  parser.add_argument("--task", default=None,
                      help=f"seqio task or mixture (default {DEFAULT_TASK} if the shared data "
                           f"is present, else {FALLBACK_TASK})")
  parser.add_argument("--steps", type=int, default=steps, help="training steps per model")
  parser.add_argument("--checkpoint_every", type=int, default=checkpoint_every,
                      help="steps between checkpoints, each one evaluated")
  parser.add_argument("--batch_size", type=int, default=batch_size, help="sequences per batch")
  parser.add_argument("--eval_batches", type=int, default=eval_batches,
                      help="validation batches per evaluation (the same ones for every model)")
  parser.add_argument("--data_seed", type=int, default=1,
                      help="seed of the training data order and span noise (same for all models)")
  parser.add_argument("--output_dir", default=os.path.join(REPO, "runs", script),
                      help="model directories (checkpoints); rerunning resumes from them")
  parser.add_argument("--results_dir", default=os.path.join(REPO, "results", script),
                      help="where the CSV, PNG and markdown go")
  parser.add_argument("--gin_file", action="append", default=[],
                      help="extra gin file for every model, after its own (e.g. repro/micro.gin)")
  parser.add_argument("--gin_param", action="append", default=[],
                      help="extra gin binding for every model (e.g. to shrink them for a test)")
  parser.add_argument("--only", action="append", default=[],
                      help="run only these variants (by name); repeatable")
  parser.add_argument("--report_only", action="store_true",
                      help="train and evaluate nothing: write the results of the models "
                           "already trained and evaluated (e.g. after a run was stopped)")


def resolve_task(flags) -> str:
  if flags.task:
    return flags.task
  shared = os.path.join(os.path.dirname(REPO), "shared", "data", "text", "en_pydocs.txt")
  return DEFAULT_TASK if os.path.isfile(shared) else FALLBACK_TASK


def settings_of(flags, script: str) -> dict:
  return {"script": script, "task": resolve_task(flags), "steps": flags.steps,
          "checkpoint_every": flags.checkpoint_every, "batch_size": flags.batch_size,
          "eval_batches": flags.eval_batches, "data_seed": flags.data_seed,
          "gin_file": list(flags.gin_file), "gin_param": list(flags.gin_param),
          "init_seed": INIT_SEED}


def check_settings(output_dir: str, settings: dict) -> None:
  """Records the run's settings; refuses to resume a run whose training settings differ."""
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, "settings.json")
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    changed = [k for k in TRAINING_SETTINGS if previous.get(k) != settings.get(k)]
    if changed:
      raise SystemExit(
          f"{output_dir} holds a run with other {', '.join(changed)} "
          f"({ {k: previous.get(k) for k in changed} }); use another --output_dir or delete it")
  with open(path, "w") as f:
    json.dump(settings, f, indent=2)


# ----------------------------------------------------------------------------------------------
# Running switch_mesh_transformer


def _base_params(settings: dict) -> list:
  return [f'MIXTURE_NAME = "{settings["task"]}"',
          f'utils.run.batch_size = ("sequences_per_batch", {settings["batch_size"]})',
          *settings["gin_param"]]


def _gin_files(variant: Variant, settings: dict) -> list:
  return [*variant.gin_files, CPU_MESH, *settings["gin_file"]]


def run_cli(model_dir: str, gin_files: Sequence[str], gin_params: Sequence[str], mode: str,
            on_line: Optional[Callable[[str], None]] = None) -> str:
  """cli_runs.run_cli with the log kept in model_dir/logs/, one file per run of each mode."""
  log_path = os.path.join(model_dir, "logs", f"{mode}_{time.strftime('%Y%m%d-%H%M%S')}.log")
  return cli_runs.run_cli(model_dir, gin_files, gin_params, mode,
                          log_path=log_path, on_line=on_line or (lambda line: None))


checkpoint_steps = cli_runs.checkpoint_steps


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return {int(k): v for k, v in json.load(f).items()}


def _write_json(path: str, data: dict) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump({str(k): v for k, v in sorted(data.items())}, f, indent=1)
  os.replace(tmp, path)  # a kill mid-write leaves the previous file whole


class _TrainProgress:
  """Follows a training log: prints progress, records seconds at each checkpoint.

  The clock starts at the process's first checkpoint save (the restored or initial step), so
  graph building and start-up are not counted as training time; seconds carry over from the
  previous process of a resumed run.
  """

  def __init__(self, label: str, total_steps: int, times_path: str, start_step: int):
    self.label = label
    self.total_steps = total_steps
    self.times_path = times_path
    self.seconds = _read_json(times_path)
    self.offset = self.seconds.get(start_step, max(self.seconds.values(), default=0.0))
    self.clock_start = None
    self.first_step = start_step
    self.step = start_step
    self.loss = float("nan")
    self.speed = float("nan")

  def __call__(self, line: str) -> None:
    if saved := SAVE_LINE.search(line):
      step = int(saved.group(1))
      now = time.time()
      if self.clock_start is None:
        self.clock_start = now
        self.first_step = step
      self.seconds[step] = round(self.offset + now - self.clock_start, 2)
      _write_json(self.times_path, self.seconds)
      if step > self.first_step and self.seconds[step] > self.seconds[self.first_step]:
        # Averaged since this process started training: the log's own global_step/sec is a
        # one-step figure that jumps with every checkpoint save.
        self.speed = (step - self.first_step) / (
            self.seconds[step] - self.seconds[self.first_step])
      self.step = step
      self._print(f"checkpoint {step}/{self.total_steps}")
    elif loss := LOSS_LINE.search(line):
      self.loss = float(loss.group(1))

  def _print(self, what: str) -> None:
    left = (self.total_steps - self.step) / self.speed if self.speed > 0 else float("nan")
    eta = f", ~{left / 60:.1f} min left" if left == left else ""
    print(f"  [{self.label}] {what}: train loss {self.loss:.3f}, {self.speed:.2f} steps/s{eta}",
          flush=True)


def train(variant: Variant, settings: dict, output_dir: str) -> None:
  """Trains one variant to settings['steps'], resuming from its last checkpoint."""
  model_dir = os.path.join(output_dir, variant.name)
  done = max(checkpoint_steps(model_dir), default=0)
  if done >= settings["steps"]:
    print(f"{variant.name}: trained ({done} steps)", flush=True)
    return
  print(f"{variant.name}: training {done} -> {settings['steps']} steps ({variant.description})",
        flush=True)
  every = settings["checkpoint_every"]
  data_seed = settings["data_seed"] if variant.data_seed is None else variant.data_seed
  params = _base_params(settings) + list(variant.gin_params) + [
      'utils.run.mode = "train"', f"utils.run.train_steps = {settings['steps']}",
      f"utils.run.save_checkpoints_steps = {every}",
      # TPUEstimator on CPU saves only between loops: one loop per checkpoint interval.
      f"utils.run.iterations_per_loop = {every}",
      "utils.run.keep_checkpoint_max = None",
      f"mesh_train_dataset_fn.seed = {data_seed}",
      # The initial weights too: repeats with one seed start from the same draw.
      f"mtf_switch.init_seed.seed = {data_seed}",
      # A resumed run skips the batches it has seen instead of replaying the seeded stream.
      "utils.run.skip_seen_data = True"]
  progress = _TrainProgress(variant.name, settings["steps"],
                            os.path.join(model_dir, "train_seconds.json"), done)
  run_cli(model_dir, _gin_files(variant, settings), params, "train", progress)


def evaluate(variant: Variant, settings: dict, output_dir: str) -> dict:
  """Eval neg log perplexity of every checkpoint, {step: value}; evaluates only new ones.

  The sample is fixed: the task's validation split, read through the training input pipeline
  with a fixed seed (same order and span noise for every model and checkpoint), and
  settings['eval_batches'] batches of settings['batch_size'] sequences.
  """
  model_dir = os.path.join(output_dir, variant.name)
  path = os.path.join(model_dir, f"eval_{settings['eval_batches']}x{settings['batch_size']}.json")
  results = _read_json(path)
  missing = [s for s in checkpoint_steps(model_dir) if s not in results]
  if not missing:
    return results
  print(f"{variant.name}: evaluating {len(missing)} checkpoints ({settings['eval_batches']} "
        f"validation batches each)", flush=True)
  params = _base_params(settings) + list(variant.gin_params) + [
      'utils.run.mode = "perplexity_eval"', 'utils.run.dataset_split = "validation"',
      f"utils.run.eval_checkpoint_step = {missing}",
      f"utils.run.perplexity_eval_steps = {settings['eval_batches']}",
      f"mesh_train_dataset_fn.seed = {EVAL_SEED}"]

  def on_line(line):
    if found := EVAL_LINE.search(line):
      value = re.search(r"neg_log_perplexity = (-?[0-9.eE+-]+)", found.group(2))
      if value:
        step = int(found.group(1))
        results[step] = float(value.group(1))
        _write_json(path, results)
        print(f"  [{variant.name}] step {step}: eval neg log perplexity {results[step]:.4f}",
              flush=True)

  run_cli(model_dir, _gin_files(variant, settings), params, "eval", on_line)
  absent = [s for s in missing if s not in results]
  if absent:
    raise SystemExit(f"{variant.name}: no neg_log_perplexity for checkpoints {absent}")
  return results


def train_seconds(variant: Variant, output_dir: str) -> dict:
  return _read_json(os.path.join(output_dir, variant.name, "train_seconds.json"))


def _finished(variant: Variant, settings: dict, output_dir: str) -> Optional[dict]:
  """The evaluations of a variant trained to the end and fully evaluated, else None."""
  model_dir = os.path.join(output_dir, variant.name)
  steps = checkpoint_steps(model_dir)
  path = os.path.join(model_dir, f"eval_{settings['eval_batches']}x{settings['batch_size']}.json")
  quality = _read_json(path)
  if not steps or steps[-1] < settings["steps"] or any(s not in quality for s in steps):
    return None
  return quality


def run_variants(variants: Sequence[Variant], settings: dict, output_dir: str,
                 failures: Optional[dict] = None, report_only: bool = False) -> dict:
  """Trains then evaluates each variant in turn; returns {name: [curve rows]}.

  A curve row: {"step", "train_seconds", "neg_log_perplexity"} for every checkpoint. With a
  ``failures`` dict, a variant whose CLI run fails is recorded there ({name: reason}) and the
  others still run; without it, the first failure ends the run.
  """
  curves = {}
  for i, variant in enumerate(variants, 1):
    started = time.time()
    print(f"== [{i}/{len(variants)}] {variant.name}", flush=True)
    if report_only:
      quality = _finished(variant, settings, output_dir)
      if quality is None:
        if failures is not None:
          failures[variant.name] = "not run to the end (run stopped; --report_only)"
        print(f"== {variant.name}: not finished, left out", flush=True)
        continue
    try:
      if not report_only:
        train(variant, settings, output_dir)
        quality = evaluate(variant, settings, output_dir)
    except SystemExit as error:
      if failures is None:
        raise
      failures[variant.name] = str(error)
      print(f"== {variant.name} FAILED: {error}", flush=True)
      continue
    seconds = train_seconds(variant, output_dir)
    curves[variant.name] = [
        {"step": s, "train_seconds": seconds.get(s), "neg_log_perplexity": q}
        for s, q in sorted(quality.items()) if s <= settings["steps"]]
    print(f"== {variant.name} done in {time.time() - started:.0f} s", flush=True)
  return curves


# ----------------------------------------------------------------------------------------------
# Figures drawn from the curves


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


def scalar_mean(model_dir: str, tag_pattern: str) -> Optional[float]:
  """Mean of every TensorBoard scalar under model_dir whose tag matches tag_pattern."""
  import tensorflow.compat.v1 as tf  # only here: it takes seconds to import

  pattern = re.compile(tag_pattern)
  values = []
  for name in sorted(os.listdir(model_dir)):
    if name.startswith("events.out.tfevents"):
      for event in tf.train.summary_iterator(os.path.join(model_dir, name)):
        values += [v.simple_value for v in event.summary.value if pattern.fullmatch(v.tag)]
  return sum(values) / len(values) if values else None


# ----------------------------------------------------------------------------------------------
# Outputs: CSV, plot, markdown


def write_curves_csv(path: str, curves: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["model", "step", "train_seconds", "eval_neg_log_perplexity"])
    for name, curve in curves.items():
      for row in curve:
        writer.writerow([name, row["step"], row["train_seconds"], row["neg_log_perplexity"]])


def write_rows_csv(path: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def plot_curves(path: str, curves: dict, title: str) -> None:
  """Two panels: eval neg log perplexity against steps and against training seconds."""
  import matplotlib

  matplotlib.use("Agg")  # no display on the training machine
  from matplotlib import pyplot as plt

  fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.5))
  for name, curve in curves.items():
    # Step 0 is the random init; its perplexity would squash the scale of everything else.
    trained = [r for r in curve if r["step"] > 0]
    by_step.plot([r["step"] for r in trained], [r["neg_log_perplexity"] for r in trained],
                 marker=".", label=name)
    timed = [r for r in trained if r["train_seconds"] is not None]
    by_time.plot([r["train_seconds"] for r in timed], [r["neg_log_perplexity"] for r in timed],
                 marker=".", label=name)
  by_step.set_xlabel("training step")
  by_time.set_xlabel("training seconds (this machine, start-up excluded)")
  for axes in (by_step, by_time):
    axes.set_ylabel("eval neg log perplexity (higher is better)")
    axes.grid(alpha=0.3)
  by_step.legend(fontsize="small")
  fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


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


def machine_description() -> str:
  """CPU model, cores, memory and load, so a reader can scale the timings to their machine."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  memory = ""
  try:
    with open("/proc/meminfo") as f:
      kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    memory = f", {kib / 2**20:.0f} GiB RAM"
  except (OSError, StopIteration):
    pass
  load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
  return f"{os.cpu_count()} x {cpu}{memory}{load} (at the end of the run)"


def run_description(settings: dict, command: str, wall_seconds: float, sizes: str,
                    curves: Optional[dict] = None) -> str:
  """The 'what was run' section every results markdown carries."""
  tokens = settings["steps"] * settings["batch_size"]
  trained = sum((c[-1]["train_seconds"] or 0.0) for c in (curves or {}).values() if c)
  return "\n".join([
      "## What ran",
      "",
      f"* command: `{command}`",
      f"* finished {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; this "
      f"invocation took {wall_seconds / 60:.1f} min (models already trained or evaluated by an "
      f"earlier invocation are not counted); training seconds summed over the "
      f"{len(curves or {})} models reported: {trained / 60:.1f} min (start-up and evaluation "
      f"excluded)",
      f"* machine: {machine_description()}",
      f"* task: `{settings['task']}` (training split; evaluation on its validation split, every "
      f"20th line of the text)",
      f"* training: {settings['steps']} steps x {settings['batch_size']} sequences "
      f"= {tokens} sequences per model, same data order for every model "
      f"(data seed {settings['data_seed']}); checkpoint and evaluation every "
      f"{settings['checkpoint_every']} steps",
      f"* evaluation: {settings['eval_batches']} batches x {settings['batch_size']} validation "
      f"sequences, the same ones for every model and checkpoint (seed {EVAL_SEED}); metric: "
      f"negative log perplexity per target token (t5's `neg_log_perplexity`, higher is better)",
      f"* sizes: {sizes}",
      f"* extra gin files: {settings['gin_file'] or 'none'}; extra gin bindings: "
      f"{settings['gin_param'] or 'none'}",
      "* model initialisation: each model's graph seed is its data seed "
      "(`mtf_switch.init_seed`), so rerunning a model starts it from the same weights",
  ])


def command_line(script_path: str, argv: Optional[Sequence[str]]) -> str:
  """The command that reproduces this run (argv: the script's arguments; None = sys.argv)."""
  args = sys.argv[1:] if argv is None else list(argv)
  return " ".join(["python", os.path.relpath(script_path, REPO), *args])
