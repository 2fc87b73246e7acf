"""Pre-train a Switch model and its dense twin, fine-tune both on SST-2, report dev accuracy.

The paper's Section 4.1 at CPU scale, in one command:

    python tools/finetune_sst2.py                      # shared English text, then SST-2
    python tools/finetune_sst2.py --pretrain_steps 3000 --finetune_steps 1000

1. Pre-train ``models/switch_tiny.gin`` and ``models/t5_tiny.gin`` with span corruption on
   ``--pretrain_task`` (default: the shared Python documentation text).
2. Fine-tune each from its last pre-training checkpoint on ``--finetune_task`` (default: SST-2
   from ``../shared/data/glue/SST-2/train.tsv``) with ``recipes/finetune.gin`` (dropout 0.1,
   expert dropout 0.4), keeping a checkpoint every ``--eval_every`` steps.
3. Evaluate every fine-tuning checkpoint on the validation split (SST-2's dev.tsv) with the
   task's t5 metric (accuracy, by decoding), and report the best and the last beside the
   majority-class baseline of the same split.

Writes ``finetune_sst2.md`` and ``finetune_sst2.json`` to ``--results_dir``. Reruns resume:
finished training is not repeated (delete ``--output_dir`` to start over).
"""

import argparse
import collections
import json
import os
import platform
import shlex
import sys
from typing import Dict, List

from switch_experiments import cli_runs, run_results

MODELS = {"switch": "models/switch_tiny.gin", "dense": "models/t5_tiny.gin"}
MESH = "mesh/cpu_data_parallel.gin"
FINETUNE = "recipes/finetune.gin"
FINETUNE_EVAL = "recipes/finetune_eval.gin"
# What pre-trained a model directory (task, gin files past the model's and the mesh's, gin
# parameters), written beside its checkpoints. finetune_sst2, finetune_glue, distill and
# multilingual share pre-training directories; this keeps one tool from resuming another's
# run with a different recipe.
PRETRAIN_RECIPE_FILE = "pretrain_recipe.json"


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--pretrain_task", default="switch_pydocs_span_corruption")
  p.add_argument("--finetune_task", default="switch_sst2_tsv")
  p.add_argument("--pretrain_steps", type=int, default=2000)
  p.add_argument("--finetune_steps", type=int, default=1000)
  p.add_argument("--eval_every", type=int, default=250)
  p.add_argument("--models", default="switch,dense",
                 help="comma-separated subset of: " + ", ".join(MODELS))
  cli_runs.add_run_flags(p, "section4", "finetune_sst2", gin_files=False,
                         output_help="model directories (pre-training is shared with "
                                     "tools/distill.py)")
  return p


def pretrain_recipe(task: str, gin_files=(), gin_params=()) -> dict:
  """The record of how a model directory is pre-trained, as pretrain_recipe.json holds it."""
  return {"task": task, "gin_files": list(gin_files), "gin_params": list(gin_params)}


def check_pretrain_recipe(model_dir: str, recipe: dict) -> None:
  """SystemExit if ``model_dir`` holds checkpoints of another pre-training recipe (or no
  record of one): resuming it, or reporting on it as this recipe's, would mix the two."""
  path = os.path.join(model_dir, PRETRAIN_RECIPE_FILE)
  saved = run_results.checkpoint_steps(model_dir)
  if os.path.isfile(path):
    with open(path) as f:
      found = json.load(f)
    if found != recipe:
      changed = sorted(k for k in {*found, *recipe} if found.get(k) != recipe.get(k))
      there, asked = [found.get(k) for k in changed], [recipe.get(k) for k in changed]
      raise SystemExit(f"{model_dir} was pre-trained with another recipe ({', '.join(changed)}: "
                       f"{there} there, {asked} asked); give another output directory, or the "
                       "same task, gin files and gin parameters as before")
  elif saved:
    raise SystemExit(f"{model_dir} holds checkpoints {saved} but no {PRETRAIN_RECIPE_FILE}: "
                     "not pre-trained by these tools (or before they recorded recipes), so "
                     "resuming it could mix two recipes; give another output directory")


def write_pretrain_recipe(model_dir: str, recipe: dict) -> None:
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, PRETRAIN_RECIPE_FILE), "w") as f:
    json.dump(recipe, f, indent=1)


def pretrain_dir(output_dir: str, name: str) -> str:
  return os.path.join(output_dir, "pretrain", name)


def pretrain(name: str, task: str, steps: int, output_dir: str, gin_params=(),
             module_imports=(), gin_files=()) -> str:
  """Pre-trains MODELS[name] on task to ``steps`` (resuming); returns its model directory.

  gin_files: further gin files after the model's and the mesh's (e.g. repro/micro.gin).
  A directory pre-trained with another task, gin files or gin parameters is an error
  (``check_pretrain_recipe``), never resumed.
  """
  model_dir = pretrain_dir(output_dir, name)
  recipe = pretrain_recipe(task, gin_files, gin_params)
  check_pretrain_recipe(model_dir, recipe)
  saved = run_results.checkpoint_steps(model_dir)
  if not saved or saved[-1] < steps:
    write_pretrain_recipe(model_dir, recipe)
  cli_runs.train(model_dir, [MODELS[name], MESH, *gin_files],
                 [f'MIXTURE_NAME = "{task}"', *gin_params],
                 steps, checkpoint_every=steps, label=f"pretrain-{name}",
                 module_imports=module_imports)
  return model_dir


def finetune_and_evaluate(name: str, flags) -> Dict[int, float]:
  """Fine-tunes MODELS[name] from its pre-training; returns {global step: dev metric}."""
  start = flags.pretrain_steps
  pretrained = pretrain(name, flags.pretrain_task, start, flags.output_dir, flags.gin_param,
                        flags.module_import)
  init = os.path.join(pretrained, f"model.ckpt-{start}")
  model_dir = os.path.join(flags.output_dir, "finetune", flags.finetune_task, name)
  gin_files = [MODELS[name], MESH, FINETUNE]
  common = [f'MIXTURE_NAME = "{flags.finetune_task}"', *flags.gin_param]
  end = start + flags.finetune_steps
  # t5 continues the pre-trained global step, so fine-tuning ends at start + finetune_steps.
  cli_runs.train(model_dir, gin_files, [*common, f'utils.run.init_checkpoint = "{init}"'],
                 end, checkpoint_every=flags.eval_every, label=f"finetune-{name}",
                 module_imports=flags.module_import)
  steps = [s for s in run_results.checkpoint_steps(model_dir) if s > start]
  metrics = dev_metrics(model_dir, flags.finetune_task)
  missing = [s for s in steps if s not in metrics]
  if missing:
    print(f"evaluating {name} at steps {missing}", flush=True)
    cli_runs.run_cli(model_dir, gin_files + [FINETUNE_EVAL],
                     [*common, 'utils.run.dataset_split = "validation"',
                      f"utils.run.eval_checkpoint_step = {missing}"],
                     f"eval-{name}", flags.module_import)
    metrics = dev_metrics(model_dir, flags.finetune_task)
  return {s: metrics[s] for s in steps if s in metrics}


def dev_metrics(model_dir: str, task: str) -> Dict[int, float]:
  """{step: value} of the task's first metric (accuracy for SST-2) on the validation split."""
  return run_results.decode_metrics(model_dir, task)


def majority_baseline(task: str, split: str = "validation") -> Dict[str, object]:
  """Accuracy (in %) of always predicting the split's most common target."""
  import seqio

  import tasks  # noqa: F401  (registers the project's tasks)

  dataset = seqio.get_mixture_or_task(task).get_dataset(
      sequence_length=None, split=split, shuffle=False)
  counts = collections.Counter(
      ex["targets_pretokenized"].decode("utf-8") for ex in dataset.as_numpy_iterator())
  label, count = counts.most_common(1)[0]
  return {"label": label, "accuracy": 100.0 * count / sum(counts.values()),
          "examples": sum(counts.values()), "counts": dict(counts)}


def best_and_last(metrics: Dict[int, float]) -> Dict[str, object]:
  """The best checkpoint (earliest on ties) and the last one."""
  if not metrics:
    raise ValueError("no evaluated checkpoints")
  best_step = min(metrics, key=lambda s: (-metrics[s], s))
  last_step = max(metrics)
  return {"best_step": best_step, "best": metrics[best_step], "last_step": last_step,
          "last": metrics[last_step]}


def markdown(rows: List[Dict[str, object]], baseline: Dict[str, object], flags) -> str:
  lines = [
      f"# Fine-tuning on {flags.finetune_task} (paper Section 4.1, CPU scale)", "",
      f"Pre-training: {flags.pretrain_steps} steps of span corruption on "
      f"`{flags.pretrain_task}`. Fine-tuning: {flags.finetune_steps} steps with "
      "`recipes/finetune.gin` (dropout 0.1, expert dropout 0.4), a checkpoint every "
      f"{flags.eval_every} steps, each evaluated on the validation split with the task's t5 "
      "metric. Machine: " + f"{platform.machine()}, {os.cpu_count()} CPUs. One seed.", "",
      "| model | best dev accuracy (step) | last dev accuracy (step) |",
      "| --- | --- | --- |"]
  for row in rows:
    lines.append(f"| {row['model']} ({row['gin']}) | {row['best']:.2f} ({row['best_step']}) | "
                 f"{row['last']:.2f} ({row['last_step']}) |")
  lines.append(f"| majority class ('{baseline['label']}') | {baseline['accuracy']:.2f} | "
               f"{baseline['accuracy']:.2f} |")
  lines += ["", f"Validation examples: {baseline['examples']} ({baseline['counts']}).",
            "", "Command: `python tools/finetune_sst2.py " + shlex.join(sys.argv[1:]) + "`", ""]
  return "\n".join(lines)


def main(argv=None) -> int:
  flags = parser().parse_args(argv)
  names = [n for n in flags.models.split(",") if n]
  unknown = [n for n in names if n not in MODELS]
  if unknown or not names:
    raise SystemExit(f"--models: unknown model(s) {unknown or flags.models!r}; "
                     f"expected a subset of {list(MODELS)}")
  for name in names:  # before TensorFlow starts
    check_pretrain_recipe(pretrain_dir(flags.output_dir, name),
                          pretrain_recipe(flags.pretrain_task, (), flags.gin_param))
  for module in flags.module_import:
    __import__(module)
  rows = []
  for name in names:
    metrics = finetune_and_evaluate(name, flags)
    rows.append({"model": name, "gin": MODELS[name], "dev": metrics, **best_and_last(metrics)})
  baseline = majority_baseline(flags.finetune_task)
  text = markdown(rows, baseline, flags)
  record = {"finetune_task": flags.finetune_task, "pretrain_task": flags.pretrain_task,
            "pretrain_steps": flags.pretrain_steps, "finetune_steps": flags.finetune_steps,
            "majority_baseline": baseline, "models": rows}
  cli_runs.write_results(flags.results_dir, "finetune_sst2", text, record)
  return 0
