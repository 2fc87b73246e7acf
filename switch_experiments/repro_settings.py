"""What a reproduction run is: its variants, command-line flags and recorded settings.

Files of one run, under ``--output_dir`` (default ``runs/<script>``):

    settings.json                 what the run is (task, steps, batch, ...); a rerun with other
                                  training settings refuses to mix them into the same dirs
    <variant>/                    the model_dir: checkpoints, TensorBoard events, gin config

The scripts write their CSV, PNG and markdown under ``--results_dir`` (default
``results/<script>``).
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Optional, Sequence

from switch_experiments import cli_runs

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
    steps: this variant's training steps (a baseline trained longer than the others, to read
      off where it reaches their quality); None: the run's --steps.
  """

  name: str
  gin_files: tuple
  gin_params: tuple = ()
  description: str = ""
  data_seed: Optional[int] = None
  steps: Optional[int] = None


def steps_of(variant: Variant, settings: dict) -> int:
  """The training steps of one variant of a run."""
  return settings["steps"] if variant.steps is None else variant.steps


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
  cli_runs.add_run_flags(parser, script, script, module_imports=False)
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


def check_settings(output_dir: str, settings: dict, extra_keys: Sequence[str] = ()) -> None:
  """Records the run's settings; refuses to resume a run whose training settings (or the
  script's own ``extra_keys``) differ."""
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, "settings.json")
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    changed = [k for k in (*TRAINING_SETTINGS, *extra_keys)
               if previous.get(k) != settings.get(k)]
    if changed:
      raise SystemExit(
          f"{output_dir} holds a run with other {', '.join(changed)} "
          f"({ {k: previous.get(k) for k in changed} }); use another --output_dir or delete it")
  with open(path, "w") as f:
    json.dump(settings, f, indent=2)


def recorded_command(output_dir: str) -> Optional[str]:
  """The command recorded in output_dir's settings.json (the run's own), if any."""
  path = os.path.join(output_dir, "settings.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f).get("command")


def command_line(script_path: str, argv: Optional[Sequence[str]]) -> str:
  """The command that reproduces this run (argv: the script's arguments; None = sys.argv)."""
  args = sys.argv[1:] if argv is None else list(argv)
  return " ".join(["python", os.path.relpath(script_path, REPO), *args])
