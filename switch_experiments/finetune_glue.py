r"""Fine-tune pre-trained models on GLUE and SuperGLUE, score every checkpoint, compare them.

The paper's Tables 4-5 in one command. For each model and each benchmark:

1. fine-tune from the model's latest checkpoint on the benchmark's mixture with
   ``recipes/finetune_glue.gin`` or ``recipes/finetune_super_glue.gin`` (both include
   ``recipes/finetune.gin``: dropout 0.1, expert dropout 0.4), keeping a checkpoint every
   ``--eval_every`` steps;
2. evaluate every fine-tuning checkpoint on the dev splits with ``recipes/finetune_eval.gin``
   (t5's postprocessors and metrics, per task);
3. read the scores back from what t5 wrote (``benchmark_averages.eval_scores``), take the
   benchmark averages as t5 does (``benchmark_averages.scores_table``) and report the models
   side by side with each task's majority-class baseline from its dev file
   (``majority_baseline``), the command, steps and times.

Writes ``finetune_glue.{md,csv,json,png}`` to ``--results_dir``; with ``--submissions``, also
each model's test-set predictions from its best checkpoint in the benchmarks' submission formats
(``tools/glue_submission.py``). Reruns resume: finished training and evaluated checkpoints are
not repeated.

    # the tiny Switch model and its dense twin, pre-trained here first (shared with
    # tools/finetune_sst2.py and tools/distill.py), then both benchmarks:
    python tools/finetune_glue.py --pretrain_steps 2000 --finetune_steps 1000

    # any pre-trained models: a model directory (its latest checkpoint) and its gin files
    python tools/finetune_glue.py \
      --model switch=runs/pre/switch --model_gin switch=models/switch_tiny.gin \
      --model dense=runs/pre/dense --model_gin dense=models/t5_tiny.gin \
      --gin_file mesh/cpu_data_parallel.gin --vocabulary /path/to/spiece.model

    # an imported Hugging Face model: its directory's model.gin is used (and binds its vocabulary)
    python tools/finetune_glue.py --model switch_base_8=runs/imported/switch-base-8 \
      --gin_file mesh/cpu_data_parallel.gin

The tasks read the files in ``../shared/data`` (or ``$MTF_SWITCH_GLUE_DIR`` /
``$MTF_SWITCH_SUPER_GLUE_DIR``, ``tfds`` for TFDS): docs/finetuning.md.
"""

import argparse
import importlib.util
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from mtf_base import paths
from switch_experiments import cli_runs, finetune_sst2, run_results

REPO = cli_runs.REPO
FINETUNE_EVAL = "recipes/finetune_eval.gin"
# benchmark: (its fine-tuning recipe, its mixture's name as tasks.glue registers it).
BENCHMARKS = {"glue": ("recipes/finetune_glue.gin", "switch_glue_v002_proportional"),
              "super_glue": ("recipes/finetune_super_glue.gin",
                             "switch_super_glue_v102_proportional")}
DEFAULT_PAIR = "switch,dense"  # tools/finetune_sst2.py's MODELS, pre-trained by --pretrain_steps
# How the default pair pre-trains: what the headline run (tools/repro_speedup.py) settled on.
# All the shared English text (31 MB: the fewest passes the data allows), span corruption as
# the paper pre-trains; a schedule whose value at step N does not depend on the run's length
# (constant 0.01 for 1000 steps, then 1/sqrt(step)), so a longer pre-training continues the
# same curve; and the Switch experts initialised like the dense FFN they replace
# (repro/twin_init.gin), so the two models differ only in the FFN's sparsity.
PRETRAIN_TASK = "switch_english_span_corruption"
PRETRAIN_GIN = ("repro/constant_rsqrt.gin",)
PRETRAIN_MODEL_GIN = {"switch": ("repro/twin_init.gin",), "dense": ()}


@dataclass
class Model:
  """A pre-trained model to fine-tune: its directory, the gin files that build it."""
  name: str
  model_dir: str
  gin_files: List[str]
  init_step: Optional[int] = None  # its latest checkpoint, once known
  notes: List[str] = field(default_factory=list)


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1])
  p.add_argument("--model", action="append", default=[], metavar="NAME=MODEL_DIR",
                 help="a pre-trained model directory (its latest checkpoint); repeat for each "
                      "model. Default: tools/finetune_sst2.py's switch and dense pair")
  p.add_argument("--model_gin", action="append", default=[], metavar="NAME=GIN_FILE",
                 help="a gin file that builds model NAME (repeatable, in order); default: "
                      "MODEL_DIR/model.gin (what an HF import writes)")
  p.add_argument("--pretrain_steps", type=int, default=None,
                 help="default pair only: pre-train both to this step first (resuming)")
  p.add_argument("--pretrain_task", default=PRETRAIN_TASK,
                 help="default pair only: the span-corruption task they pre-train on")
  p.add_argument("--pretrain_gin_file", action="append", default=None,
                 help="default pair only: gin files for pre-training (repeatable; default: "
                      + ", ".join(PRETRAIN_GIN) + "; the Switch model adds "
                      + ", ".join(PRETRAIN_MODEL_GIN["switch"]) + ")")
  p.add_argument("--switch_gin_file", action="append", default=[],
                 help="default pair only: gin files that build the Switch model differently "
                      "(repeatable; e.g. repro/experts_64.gin), for its pre-training, "
                      "fine-tuning and evaluation alike")
  p.add_argument("--pretrain_dir", default=os.path.join(REPO, "runs", "glue_pretrain"),
                 help="default pair only: {pretrain_dir}/pretrain/{switch,dense} (tools/"
                      "distill.py --output_dir DIR distils the same pair)")
  p.add_argument("--benchmarks", default="glue,super_glue",
                 help="comma-separated subset of: " + ", ".join(BENCHMARKS))
  p.add_argument("--finetune_steps", type=int, default=1000)
  p.add_argument("--eval_every", type=int, default=250)
  p.add_argument("--vocabulary", default=None,
                 help="the models' SentencePiece .model file, or a registered task whose "
                      "vocabulary to use; binds finetune_vocabulary.path (default: the "
                      "pre-training task's for the default pair, else the tasks' own, T5's)")
  p.add_argument("--submissions", action="store_true",
                 help="also write test-set submission files from each model's best checkpoint")
  cli_runs.add_run_flags(p, "glue", "finetune_glue",
                         output_help="fine-tuning runs: {output_dir}/{benchmark}/{model}")
  return p


# ---------------------------------------------------------------- flags, checked before TF


def _pairs(values: List[str], flag: str) -> List[tuple]:
  pairs = []
  for value in values:
    name, sep, rest = value.partition("=")
    if not sep or not name or not rest:
      raise SystemExit(f"{flag}: expected NAME=VALUE, got {value!r}")
    pairs.append((name, rest))
  return pairs


def gin_file_exists(path: str) -> bool:
  """Whether the CLI can find ``path``: as given, or under the project's or t5's gin/.

  t5's directory is found without importing t5 (which would start TensorFlow before the flags
  are checked).
  """
  t5_dirs = importlib.util.find_spec("t5").submodule_search_locations
  return any(os.path.isfile(os.path.join(d, path)) for d in (
      os.getcwd(), paths.gin_dir(), *[os.path.join(t, "models", "gin") for t in t5_dirs]))


def models_from_flags(flags) -> List[Model]:
  """The models to fine-tune; SystemExit naming the bad flag value."""
  if flags.finetune_steps <= 0 or flags.eval_every <= 0:
    raise SystemExit(f"--finetune_steps ({flags.finetune_steps}) and --eval_every "
                     f"({flags.eval_every}) must be positive")
  if not flags.model:
    return [Model(name, os.path.join(flags.pretrain_dir, "pretrain", name),
                  [finetune_sst2.MODELS[name], finetune_sst2.MESH,
                   *(flags.switch_gin_file if name == "switch" else [])])
            for name in DEFAULT_PAIR.split(",")]
  if flags.pretrain_steps is not None or flags.switch_gin_file:
    raise SystemExit("--pretrain_steps and --switch_gin_file are for the default pair only; "
                     "with --model, give directories that hold pre-trained checkpoints (and "
                     "their gin files with --model_gin)")
  gins: Dict[str, List[str]] = {}
  for name, path in _pairs(flags.model_gin, "--model_gin"):
    gins.setdefault(name, []).append(path)
  models = []
  for name, model_dir in _pairs(flags.model, "--model"):
    if any(m.name == name for m in models):
      raise SystemExit(f"--model: the name {name!r} is given twice")
    if not run_results.checkpoint_steps(model_dir):
      raise SystemExit(f"--model {name}={model_dir}: no model.ckpt-N checkpoint there")
    files = gins.pop(name, None)
    if files is None:
      imported = os.path.join(model_dir, "model.gin")
      if not os.path.isfile(imported):
        raise SystemExit(f"--model {name}={model_dir}: no --model_gin {name}=... and no "
                         f"{imported}")
      files = [imported]
    models.append(Model(name, model_dir, files))
  if gins:
    raise SystemExit(f"--model_gin for unknown model(s) {sorted(gins)}: no --model of that name")
  return models


def pretrain_recipe(name: str, flags) -> dict:
  """What pre-trains model ``name`` of the default pair: task, steps' schedule, gin files."""
  gin_files = [*(flags.pretrain_gin_file if flags.pretrain_gin_file is not None
                 else PRETRAIN_GIN), *PRETRAIN_MODEL_GIN[name],
               *(flags.switch_gin_file if name == "switch" else []), *flags.gin_file]
  return finetune_sst2.pretrain_recipe(flags.pretrain_task, gin_files, flags.gin_param)


def benchmarks_from_flags(flags) -> List[str]:
  names = [b for b in flags.benchmarks.split(",") if b]
  unknown = [b for b in names if b not in BENCHMARKS]
  if unknown or not names:
    raise SystemExit(f"--benchmarks: unknown {unknown or flags.benchmarks!r}; expected a subset "
                     f"of {list(BENCHMARKS)}")
  return names


def check_gin_files(models: List[Model], flags) -> None:
  pretrain = ([f for m in models for f in pretrain_recipe(m.name, flags)["gin_files"]]
              if not flags.model else [])
  for path in [f for m in models for f in m.gin_files] + flags.gin_file + pretrain:
    if not gin_file_exists(path):
      raise SystemExit(f"gin file {path!r} not found (as given, nor under gin/)")


def vocabulary_path(value: str) -> str:
  """A SentencePiece .model path, given one or the name of a registered task (built if it is a
  cached vocabulary not yet trained)."""
  if value.endswith(".model"):
    if not os.path.isfile(value):
      raise SystemExit(f"--vocabulary {value!r}: no such file")
    return os.path.abspath(value)
  import seqio
  if value not in seqio.TaskRegistry.names():
    raise SystemExit(f"--vocabulary {value!r}: neither a .model file nor a registered task")
  vocabulary = seqio.get_mixture_or_task(value).output_features["targets"].vocabulary
  if hasattr(vocabulary, "ensure_built"):
    vocabulary.ensure_built()
  path = getattr(vocabulary, "sentencepiece_model_file", None)
  if not path:
    raise SystemExit(f"--vocabulary {value!r}: its vocabulary is not a SentencePiece model")
  return path


# ---------------------------------------------------------------- runs


class Timings:
  """Wall time of each command-line run, kept in a JSON file beside the runs so that a resumed
  report still states the times of the runs an earlier invocation did."""

  def __init__(self, path: str):
    self.path = path
    self.runs = json.load(open(path)) if os.path.isfile(path) else {}

  def run(self, label: str, fn, **facts):
    """Runs fn and records its wall time under label; a label already recorded (a resumed
    run, more checkpoints evaluated) gets " #2", " #3", ..., so that no earlier time is lost."""
    load = os.getloadavg()[0]
    start = time.monotonic()
    result = fn()
    if result is not False:  # cli_runs.train returns False when there was nothing to do
      key, repeat = label, 1
      while key in self.runs:
        repeat += 1
        key = f"{label} #{repeat}"
      self.runs[key] = {"seconds": round(time.monotonic() - start, 1),
                          "load_before": round(load, 2),
                          "load_after": round(os.getloadavg()[0], 2), **facts}
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      with open(self.path, "w") as f:
        json.dump(self.runs, f, indent=1)
    return result


def run_gin(model: Model, benchmark: str, flags, vocabulary: Optional[str]):
  """(gin files, gin bindings) of the model's runs on the benchmark."""
  files = [*model.gin_files, *flags.gin_file, BENCHMARKS[benchmark][0]]
  params = list(flags.gin_param)
  if vocabulary:
    params.append(f'finetune_vocabulary.path = "{vocabulary}"')
  return files, params


def finetune(model: Model, benchmark: str, flags, vocabulary, timings: Timings) -> str:
  """Fine-tunes to init_step + finetune_steps (resuming); returns the run's directory."""
  model_dir = os.path.join(flags.output_dir, benchmark, model.name)
  init = os.path.join(model.model_dir, f"model.ckpt-{model.init_step}")
  files, params = run_gin(model, benchmark, flags, vocabulary)
  # t5 continues the pre-trained global step, so fine-tuning ends at init + finetune_steps.
  end = model.init_step + flags.finetune_steps
  # A rerun with more --finetune_steps resumes from the run's last checkpoint: its time is
  # that of the steps from there.
  start = max([model.init_step, *finetuning_steps(model, model_dir)])
  timings.run(f"finetune-{benchmark}-{model.name}", lambda: cli_runs.train(
      model_dir, files, [*params, f'utils.run.init_checkpoint = "{init}"'], end,
      checkpoint_every=flags.eval_every, label=f"finetune-{benchmark}-{model.name}",
      module_imports=flags.module_import), steps=end - start, from_step=start, to_step=end)
  return model_dir


def finetuning_steps(model: Model, model_dir: str) -> List[int]:
  """The fine-tuning checkpoints (an imported model's step-0 copy is not one)."""
  return [s for s in run_results.checkpoint_steps(model_dir) if s > model.init_step]


def evaluate(model: Model, benchmark: str, model_dir: str, flags, vocabulary,
             timings: Timings) -> Dict[int, Dict[str, float]]:
  """Scores every fine-tuning checkpoint not yet scored; {step: {"task/metric": value}}."""
  from switch_experiments import benchmark_averages

  steps = finetuning_steps(model, model_dir)
  missing = [s for s in steps if s not in benchmark_averages.eval_scores(model_dir)]
  if missing:
    print(f"evaluating {model.name} on {benchmark} at steps {missing}", flush=True)
    files, params = run_gin(model, benchmark, flags, vocabulary)
    label = f"eval-{benchmark}-{model.name}"
    timings.run(label, lambda: cli_runs.run_cli(
        model_dir, files + [FINETUNE_EVAL],
        [*params, 'utils.run.dataset_split = "validation"',
         f"utils.run.eval_checkpoint_step = {missing}"], label, flags.module_import),
        checkpoints=len(missing))
  scores = benchmark_averages.eval_scores(model_dir)
  absent = [s for s in steps if s not in scores]
  if absent:
    raise SystemExit(f"{model_dir}: no dev scores for steps {absent} after evaluation")
  return {s: scores[s] for s in steps}


def write_submissions(model: Model, benchmark: str, model_dir: str, step: int, flags,
                      vocabulary, timings: Timings) -> Dict[str, object]:
  """Test-set predictions of the checkpoint at ``step`` for every task of the benchmark's
  mixture with a test split, decoded in one ``infer`` run, written by glue_submission.

  Returns {"directory", "files": {task: path}, "invalid": {task: decodes that were no answer}}.
  """
  import seqio

  from switch_experiments import glue_submission

  mixture = BENCHMARKS[benchmark][1]
  tasks = [t for t in seqio.get_subtasks(seqio.get_mixture_or_task(mixture))
           if "test" in t.splits and t.name in glue_submission.SUBMISSION_FILES]
  work = os.path.join(model_dir, f"submission_inputs-{step}")
  os.makedirs(work, exist_ok=True)
  examples = {t.name: glue_submission.test_examples(t) for t in tasks}
  lines = [line for t in tasks for line in glue_submission.infer_inputs(examples[t.name])]
  inputs, outputs = os.path.join(work, "inputs.txt"), os.path.join(work, "decodes.txt")
  with open(inputs, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  decoded = f"{outputs}-{step}"  # mesh-tf appends the checkpoint's step
  if not os.path.isfile(decoded):
    files, params = run_gin(model, benchmark, flags, vocabulary)
    label = f"infer-{benchmark}-{model.name}"
    timings.run(label, lambda: cli_runs.run_cli(
        model_dir, files, [*params, 'utils.run.mode = "infer"',
                           f"utils.run.eval_checkpoint_step = {step}",
                           f'decode_from_file.input_filename = "{inputs}"',
                           f'decode_from_file.output_filename = "{outputs}"',
                           "Bitransformer.decode.max_decode_length = 16"],
        label, flags.module_import), examples=len(lines), checkpoint=step)
  decodes = glue_submission.read_decodes(decoded, len(lines))
  directory = os.path.join(flags.results_dir, "submissions", model.name)
  files, invalid, start = {}, {}, 0
  for task in tasks:
    count = len(examples[task.name])
    values, invalid[task.name] = glue_submission.predictions(
        task, examples[task.name], decodes[start:start + count])
    files[task.name] = glue_submission.write_submission(directory, task, examples[task.name],
                                                        values)
    start += count
  return {"directory": directory, "files": files, "invalid": invalid}


# ---------------------------------------------------------------- report


def baselines(benchmark: str) -> Dict[str, dict]:
  """{task: majority_baseline on its dev split} for the tasks t5 evaluates of the mixture."""
  from switch_experiments import majority_baseline

  return {task.name: majority_baseline.majority_baseline(task, "validation")
          for task in majority_baseline.evaluated_tasks(BENCHMARKS[benchmark][1])}


def _top_answers(counts: Dict[str, int], shown: int = 3) -> str:
  """"a: n, b: m, ..." for the most common answers (STS-B has dozens)."""
  top = list(counts.items())[:shown]
  return ", ".join(f"{a}: {n}" for a, n in top) + (", ..." if len(counts) > shown else "")


def _shown(path: str) -> str:
  """A path as the report shows it: relative to the repository when inside it, so a committed
  report does not name the machine's directories."""
  relative = os.path.relpath(os.path.abspath(path), REPO)
  return path if relative.startswith("..") else relative


def step_runs(steps: List[int]) -> str:
  """Ascending steps as runs of equal spacing: [250, 500, 750, 1000, 1500, 2000] ->
  "250-1000 every 250, 1500-2000 every 500"."""
  runs: List[List[int]] = []
  for step in steps:
    # A run's first two steps set its spacing; a step off that spacing starts the next run.
    if runs and (len(runs[-1]) == 1 or step - runs[-1][-1] == runs[-1][1] - runs[-1][0]):
      runs[-1].append(step)
    else:
      runs.append([step])
  return ", ".join(f"{r[0]}-{r[-1]} every {r[1] - r[0]}" if len(r) > 1 else str(r[0])
                   for r in runs) or "none"


def report(models: List[Model], benchmarks: List[str], scores, base, timings: Timings,
           submissions, flags) -> str:
  """Writes the markdown, CSV, JSON and PNG; returns the markdown."""
  from switch_experiments import benchmark_averages, glue_report, repro_outputs

  command = "python tools/finetune_glue.py " + shlex.join(sys.argv[1:])
  lines = ["# GLUE and SuperGLUE fine-tuning (paper Tables 4-5, CPU scale)", "",
           f"Command: `{command}`", "",
           f"Each model fine-tuned for {flags.finetune_steps} steps from its latest checkpoint "
           "on each benchmark's mixture (`recipes/finetune_glue.gin`, "
           "`recipes/finetune_super_glue.gin`, both with `recipes/finetune.gin`: dropout 0.1, "
           f"expert dropout 0.4), a checkpoint every {flags.eval_every} steps (a run resumed "
           "with another --eval_every keeps its earlier ones: each benchmark lists the steps "
           "scored), each scored on "
           "the dev splits by t5's metrics (`recipes/finetune_eval.gin`). Averages as t5 "
           "computes them (two-metric tasks averaged first), over the tasks evaluated. The "
           "majority class predicts each task's most common dev answer. "
           f"Machine: {platform.machine()}, {os.cpu_count()} CPUs. One seed.", "",
           "| model | directory | initial step | gin files |", "| --- | --- | --- | --- |"]
  lines += [f"| {m.name} | `{_shown(m.model_dir)}` | {m.init_step} | "
            + ", ".join(f"`{g}`" for g in m.gin_files) + " |" for m in models]
  csv_rows, curves, baseline_frames = [], {}, {}
  for benchmark in benchmarks:
    average = glue_report.AVERAGES[benchmark]
    frames = glue_report.frames_of(scores[benchmark])
    merged = {tag: v for b in base[benchmark].values() for tag, v in b["scores"].items()}
    baseline_frame = benchmark_averages.scores_table({0: merged} if merged else {})
    curves[benchmark], baseline_frames[benchmark] = frames, baseline_frame
    header, rows = glue_report.side_by_side(frames, baseline_frame, average)
    csv_rows += glue_report.long_rows(benchmark, frames, baseline_frame)
    first = next(iter(scores[benchmark].values()))
    groups = benchmark_averages.average_groups(next(iter(first.values())))
    lines += ["", f"## {BENCHMARKS[benchmark][1]}", "",
              "Checkpoints scored: " + "; ".join(
                  f"{name} {step_runs(sorted(per))}" for name, per in scores[benchmark].items())
              + ".", "",
              glue_report.markdown_table(header, rows),
              f"{average}: mean over {', '.join(groups.get(average, [])) or 'no task'}.",
              "", "Majority class per task (dev examples; the most common answers, as t5's "
              "postprocessor gives them, with their counts): " + "; ".join(
                  f"{t} {b['examples']} ({_top_answers(b['counts'])})"
                  for t, b in base[benchmark].items()), ""]
    for name, frame in frames.items():
      lines.append(benchmark_averages.markdown(frame, f"{name}, every checkpoint"))
  lines += ["## Runs", "", "| run | wall seconds | facts | load average before / after |",
            "| --- | --- | --- | --- |"]
  for label, run in sorted(timings.runs.items()):
    # The output directory's runs of the benchmarks reported here (and the pre-training).
    if not (label.startswith("pretrain-") or any(f"-{b}-" in label for b in benchmarks)):
      continue
    facts = ", ".join(f"{k} {v}" for k, v in run.items()
                      if k not in ("seconds", "load_before", "load_after"))
    lines.append(f"| {label} | {run['seconds']} | {facts} | {run['load_before']} / "
                 f"{run['load_after']} |")
  lines += ["", "Wall times are of a shared machine: the load averages say how shared.", ""]
  if submissions:
    lines += ["## Test-set submissions", ""]
    for (name, benchmark), written in submissions.items():
      lines.append(f"- {name}, {benchmark}: `{_shown(written['directory'])}` "
                   + ", ".join(f"{os.path.basename(p)} ({written['invalid'][t]} invalid)"
                               for t, p in written["files"].items()))
    lines.append("")
  text = "\n".join(lines)
  os.makedirs(flags.results_dir, exist_ok=True)
  repro_outputs.write_rows_csv(os.path.join(flags.results_dir, "finetune_glue.csv"),
                               ["benchmark", "model", "step", "metric", "value"], csv_rows)
  glue_report.plot(curves, baseline_frames, os.path.join(flags.results_dir, "finetune_glue.png"),
                   f"fine-tuning from step {', '.join(str(m.init_step) for m in models)}")
  record = {"command": command, "finetune_steps": flags.finetune_steps,
            "eval_every": flags.eval_every,
            "models": [{"name": m.name, "model_dir": _shown(m.model_dir), "init_step": m.init_step,
                        "gin_files": m.gin_files} for m in models],
            "dev_scores": {b: {m: {str(s): v for s, v in per.items()}
                               for m, per in scores[b].items()} for b in benchmarks},
            "majority_baseline": base, "runs": timings.runs,
            "submissions": {f"{n}/{b}": {**w, "directory": _shown(w["directory"]),
                                         "files": {t: _shown(f) for t, f in w["files"].items()}}
                            for (n, b), w in submissions.items()}}
  cli_runs.write_results(flags.results_dir, "finetune_glue", text, record)
  return text


def main(argv=None) -> int:
  flags = parser().parse_args(argv)
  models = models_from_flags(flags)
  benchmarks = benchmarks_from_flags(flags)
  check_gin_files(models, flags)
  if not flags.model:
    for model in models:
      finetune_sst2.check_pretrain_recipe(model.model_dir, pretrain_recipe(model.name, flags))
  for module in flags.module_import:
    __import__(module)
  import tasks

  tasks.register_all()  # the benchmark directories as the environment names them now
  vocabulary = flags.vocabulary or (flags.pretrain_task if not flags.model else None)
  if vocabulary:
    from tasks import finetune_vocabulary
    vocabulary = vocabulary_path(vocabulary)
    finetune_vocabulary.use_vocabulary(vocabulary)  # for the baselines and submissions here
  timings = Timings(os.path.join(flags.output_dir, "finetune_glue_times.json"))
  if not flags.model and flags.pretrain_steps:
    for model in models:
      saved = run_results.checkpoint_steps(model.model_dir)
      if saved and saved[-1] >= flags.pretrain_steps:
        continue  # an earlier invocation's time is already in the timings
      recipe = pretrain_recipe(model.name, flags)
      timings.run(f"pretrain-{model.name}", lambda name=model.name, r=recipe:
                  finetune_sst2.pretrain(name, r["task"], flags.pretrain_steps,
                                         flags.pretrain_dir, r["gin_params"],
                                         flags.module_import, gin_files=r["gin_files"]),
                  steps=flags.pretrain_steps)
  for model in models:
    saved = run_results.checkpoint_steps(model.model_dir)
    if not saved:
      raise SystemExit(f"{model.name}: no checkpoint in {model.model_dir} (the default pair is "
                       "pre-trained by --pretrain_steps N)")
    model.init_step = saved[-1]
  scores: Dict[str, Dict[str, dict]] = {b: {} for b in benchmarks}
  submissions = {}
  for benchmark in benchmarks:
    for model in models:
      model_dir = finetune(model, benchmark, flags, vocabulary, timings)
      scores[benchmark][model.name] = evaluate(model, benchmark, model_dir, flags, vocabulary,
                                               timings)
      if flags.submissions:
        from switch_experiments import glue_report
        frame = glue_report.frames_of({"m": scores[benchmark][model.name]})["m"]
        best = glue_report.chosen_steps(frame, glue_report.AVERAGES[benchmark])["best"]
        submissions[(model.name, benchmark)] = write_submissions(
            model, benchmark, model_dir, best, flags, vocabulary, timings)
  base = {b: baselines(b) for b in benchmarks}
  report(models, benchmarks, scores, base, timings, submissions, flags)
  return 0
