"""Driving ``switch_mesh_transformer`` from the tools: train (resuming), evaluate.

Every tool that chains runs (pre-train, fine-tune, distil, evaluate) goes through the same
command line a user types, one process per ``utils.run.mode``, and reads the figures back
from what t5 writes (checkpoint files and TensorBoard event files) through run_results.
Nothing here computes a metric of its own.
"""

import json
import os
import re
import subprocess
import sys
from typing import Callable, Dict, Iterable, Optional, Sequence

from switch_experiments import paths, run_results
from switch_experiments.paths import REPO


def add_run_flags(parser, runs: str, results: str, *, gin_files: bool = True,
                  module_imports: bool = True,
                  output_help: str = "model directories (checkpoints); rerunning resumes "
                                     "from them") -> None:
  """The flags of a command that trains through the command line: where its models go
  (runs/{runs}) and its results (results/{results}), and what it adds to every run."""
  parser.add_argument("--output_dir", default=os.path.join(REPO, "runs", runs), help=output_help)
  parser.add_argument("--results_dir", default=os.path.join(REPO, "results", results),
                      help="where the results (markdown, CSV, plots) go")
  if gin_files:
    parser.add_argument("--gin_file", action="append", default=[],
                        help="extra gin file for every run, after the model's own (e.g. "
                             "repro/micro.gin, or a mesh)")
  parser.add_argument("--gin_param", action="append", default=[],
                      help="extra gin binding for every run (e.g. a batch size, or smaller "
                           "models for a test)")
  if module_imports:
    parser.add_argument("--module_import", action="append", default=[],
                        help="modules that register extra tasks, for every run and this "
                             "process")


def run_cli(model_dir: str, gin_files: Sequence[str], gin_params: Sequence[str], label: str,
            module_imports: Iterable[str] = (), log_path: Optional[str] = None,
            on_line: Optional[Callable[[str], None]] = None,
            on_start: Optional[Callable[[subprocess.Popen], None]] = None) -> str:
  """Runs one ``switch_mesh_transformer`` command in a subprocess; returns its log.

  Each log line goes to ``on_line`` (default: echo progress - checkpoints saved, evaluation
  results, steps/s) as it appears; the whole log is appended to ``log_path`` (default
  ``{model_dir}/../{label}.log``). ``on_start`` is given the process once it has started
  (e.g. to read its CPU time). A failed command prints its tail, then raises a
  SystemExit that names the run. Interrupting the caller (Ctrl-C) kills the subprocess, so
  no orphan training process is left holding the CPU.
  """
  # switch_cli, the command's own package: it turns oneDNN on before TensorFlow is imported
  # (importing mtf_switch first would import TensorFlow without it).
  args = ["-m", "switch_cli", f"--model_dir={model_dir}"]
  args += [f"--module_import={m}" for m in module_imports]
  args += [f"--gin_file={g}" for g in gin_files]
  args += [f"--gin_param={p}" for p in gin_params]
  os.makedirs(model_dir, exist_ok=True)
  log_path = log_path or os.path.join(os.path.dirname(os.path.abspath(model_dir)),
                                      f"{label}.log")
  return run_python(args, label, log_path, on_line, on_start,
                    what=f"switch_mesh_transformer ({model_dir})")


def run_python(args: Sequence[str], label: str, log_path: str,
               on_line: Optional[Callable[[str], None]] = None,
               on_start: Optional[Callable[[subprocess.Popen], None]] = None,
               what: str = "", env: Optional[Dict[str, str]] = None) -> str:
  """Runs ``python *args`` from the repository root as run_cli does; returns its log.

  env: further environment variables for the process.
  """
  env = paths.child_env(TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
  os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  lines = []
  with open(log_path, "a", encoding="utf-8") as log_file:
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if on_start:
      on_start(proc)
    try:
      for line in proc.stdout:
        lines.append(line)
        log_file.write(line)
        if on_line:
          on_line(line)
        else:
          _echo_progress(label, line, len(lines))
      proc.wait()
    except BaseException:
      proc.kill()
      proc.wait()
      raise
  log = "".join(lines)
  if proc.returncode:
    sys.stderr.write(log[-5000:])
    raise SystemExit(f"{label}: {what or args[0]} exited with {proc.returncode}; "
                     f"full log: {log_path}")
  return log


def process_cpu_seconds(pid: int) -> Optional[float]:
  """User + system CPU seconds a running process has used so far (Linux /proc), else None.

  Unlike wall time, this hardly changes when other jobs share the cores, so training runs
  that share a machine can still be compared by it.
  """
  try:
    with open(f"/proc/{pid}/stat") as f:
      # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
      fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
  except (OSError, IndexError, ValueError):
    return None


def _echo_progress(label: str, line: str, line_number: int) -> None:
  if line.startswith("INFO:tensorflow:"):
    return  # TensorFlow logs each message twice; the absl copy is echoed
  saved = re.search(r"Saving checkpoints for (\d+) into", line)
  metric = re.search(r"(\S+) at step (\d+): (-?[0-9.]+)", line)
  speed = re.search(r"global_step/sec: ([0-9.]+)", line)
  if saved:
    print(f"  [{label}] checkpoint at step {saved.group(1)}", flush=True)
  elif metric:
    print(f"  [{label}] {metric.group(1)} at step {metric.group(2)}: {metric.group(3)}",
          flush=True)
  elif speed and line_number % 20 == 0:
    print(f"  [{label}] {float(speed.group(1)):.1f} steps/s", flush=True)


def train(model_dir: str, gin_files: Sequence[str], gin_params: Sequence[str], steps: int,
          checkpoint_every: int, label: str, module_imports: Iterable[str] = ()) -> bool:
  """Trains to global step ``steps``, resuming from model_dir; False if already there."""
  saved = run_results.checkpoint_steps(model_dir)
  if saved and saved[-1] >= steps:
    return False
  print(f"training {label} to step {steps}", flush=True)
  run_cli(model_dir, gin_files,
          [*gin_params, 'utils.run.mode = "train"', f"utils.run.train_steps = {steps}",
           f"utils.run.save_checkpoints_steps = {checkpoint_every}"],
          label, module_imports)
  return True


def perplexity_eval(model_dir: str, gin_files: Sequence[str], gin_params: Sequence[str],
                    step: int, label: str, eval_batches: int,
                    module_imports: Iterable[str] = ()) -> Dict[str, float]:
  """Validation negative log perplexity of the checkpoint at ``step``, per evaluation name.

  Runs ``utils.run.mode = "perplexity_eval"`` unless every evaluation directory already
  holds a figure for that step (a rerun does not re-evaluate). With an ``eval_dataset_fn``
  over a mixture, t5 evaluates each task separately: the result has one entry per task
  (``eval_{task}_validation_{examples}``); without one, a single ``eval_eval_...`` entry.
  """
  results = run_results.perplexity_at(model_dir, step)
  if not results:
    print(f"evaluating {label} at step {step}", flush=True)
    run_cli(model_dir, gin_files,
            [*gin_params, 'utils.run.mode = "perplexity_eval"',
             'utils.run.dataset_split = "validation"',
             f"utils.run.eval_checkpoint_step = {step}",
             f"utils.run.perplexity_eval_steps = {eval_batches}"],
            f"eval-{label}", module_imports)
    results = run_results.perplexity_at(model_dir, step)
  if not results:
    raise SystemExit(f"{label}: no neg_log_perplexity for step {step} under {model_dir}")
  return results


def write_results(results_dir: str, name: str, markdown: str, record: dict) -> None:
  """Writes ``{name}.md`` and ``{name}.json`` to results_dir and prints both (table, JSON line)."""
  os.makedirs(results_dir, exist_ok=True)
  with open(os.path.join(results_dir, f"{name}.md"), "w", encoding="utf-8") as f:
    f.write(markdown)
  with open(os.path.join(results_dir, f"{name}.json"), "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
  print(markdown)
  print(json.dumps(record))
