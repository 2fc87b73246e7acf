"""Training and evaluating the variants of a reproduction through ``switch_mesh_transformer``.

Every variant is trained with the same data, steps and batch, checkpointed every K steps and
evaluated at every checkpoint on a fixed validation sample, so each gives a curve of eval
negative log perplexity against steps and against training seconds:

    train(variant)     one process per variant; resumes from its last checkpoint; records the
                       training seconds at each checkpoint (start-up and evaluation excluded)
    evaluate(variant)  one process per variant for all checkpoints not yet evaluated
                       (``eval_checkpoint_step`` = that list); figures read from the
                       evaluation's TensorBoard events (run_results)

Files of one variant, under ``--output_dir``/<variant>/ (the model_dir):

    train_seconds.json            {checkpoint step: training seconds up to it}
    cpu_seconds.json              {checkpoint step: the trainer's CPU seconds up to it}
    eval_{batches}x{batch}.json   {checkpoint step: eval neg log perplexity}
    logs/*.log                    full CLI logs

A Switch model whose record holds no routing statistics (trained before they left Mesh-TF's
microbatch loop) can have them replayed from its checkpoints (``replay_routing``, through
tools/replay_routing.py), into ``{records_dir}/{name}.routing_replay.json``.
"""

import json
import os
import re
import time
from typing import Callable, Optional, Sequence

from switch_experiments import cli_runs, paths, run_results
from switch_experiments.repro_settings import (
  CPU_MESH,
  EVAL_SEED,
  TRAINING_SETTINGS,
  Variant,
  steps_of,
)

REPLAY_SCRIPT = paths.tool("replay_routing")
# Fixed validation batches the routing replay runs at every checkpoint (the evaluation's
# sample: its seed and batch size; 4 of its batches).
REPLAY_BATCHES = 4

# absl repeats every INFO line in its own format; matching only TF's own prefix reads each once.
# Progress only: the figures themselves are read from checkpoints and TensorBoard events.
SAVE_LINE = re.compile(r"^INFO:tensorflow:Saving checkpoints for (\d+) into")
LOSS_LINE = re.compile(r"tf_loss\[([0-9.eE+-]+)\]\[(\d+)\]")  # printed by the CLI every step
EVALUATED_LINE = re.compile(r"^INFO:tensorflow:Saving dict for global step (\d+):")
CPU_SECONDS_FILE = "cpu_seconds.json"


def _base_params(settings: dict) -> list:
  return [f'MIXTURE_NAME = "{settings["task"]}"',
          f'utils.run.batch_size = ("sequences_per_batch", {settings["batch_size"]})',
          *settings["gin_param"]]


def _gin_files(variant: Variant, settings: dict) -> list:
  return [*variant.gin_files, CPU_MESH, *settings["gin_file"]]


def run_cli(model_dir: str, gin_files: Sequence[str], gin_params: Sequence[str], mode: str,
            on_line: Optional[Callable[[str], None]] = None, on_start=None) -> str:
  """cli_runs.run_cli with the log kept in model_dir/logs/, one file per run of each mode."""
  log_path = os.path.join(model_dir, "logs", f"{mode}_{time.strftime('%Y%m%d-%H%M%S')}.log")
  return cli_runs.run_cli(model_dir, gin_files, gin_params, mode, log_path=log_path,
                          on_line=on_line or (lambda line: None), on_start=on_start)


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

  Two clocks: wall seconds (train_seconds.json) and the training process's CPU seconds
  (cpu_seconds.json), which hardly move when other jobs share the machine. Both start at the
  process's first checkpoint save (the restored or initial step), so graph building and
  start-up are not counted as training time; seconds carry over from the previous process of
  a resumed run.
  """

  def __init__(self, label: str, total_steps: int, times_path: str, start_step: int,
               on_step: Optional[Callable[["_TrainProgress"], None]] = None):
    self.label = label
    self.on_step = on_step
    self.total_steps = total_steps
    self.times_path = times_path
    self.seconds = _read_json(times_path)
    self.offset = self.seconds.get(start_step, max(self.seconds.values(), default=0.0))
    self.cpu_path = os.path.join(os.path.dirname(times_path), CPU_SECONDS_FILE)
    self.cpu_seconds = _read_json(self.cpu_path)
    self.cpu_offset = self.cpu_seconds.get(start_step,
                                           max(self.cpu_seconds.values(), default=0.0))
    self.cpu_start = None
    self.pid = None
    self.clock_start = None
    self.first_step = start_step
    self.step = start_step
    self.loss = float("nan")
    self.speed = float("nan")

  def started(self, proc) -> None:
    self.pid = proc.pid

  def __call__(self, line: str) -> None:
    if saved := SAVE_LINE.search(line):
      step = int(saved.group(1))
      now = time.time()
      cpu = cli_runs.process_cpu_seconds(self.pid) if self.pid else None
      if self.clock_start is None:
        self.clock_start = now
        self.cpu_start = cpu
        self.first_step = step
      self.seconds[step] = round(self.offset + now - self.clock_start, 2)
      _write_json(self.times_path, self.seconds)
      if cpu is not None and self.cpu_start is not None:
        self.cpu_seconds[step] = round(self.cpu_offset + cpu - self.cpu_start, 2)
        _write_json(self.cpu_path, self.cpu_seconds)
      if step > self.first_step and self.seconds[step] > self.seconds[self.first_step]:
        # Averaged since this process started training: the log's own global_step/sec is a
        # one-step figure that jumps with every checkpoint save.
        self.speed = (step - self.first_step) / (
            self.seconds[step] - self.seconds[self.first_step])
      self.step = step
      if self.on_step:
        self.on_step(self)
      else:
        self._print(f"checkpoint {step}/{self.total_steps}")
    elif loss := LOSS_LINE.search(line):
      self.loss = float(loss.group(1))
      if self.on_step and self.clock_start is not None:
        # The CLI logs every step: between checkpoints the step and speed come from here.
        self.step = int(loss.group(2))
        elapsed = time.time() - self.clock_start
        if self.step > self.first_step and elapsed > 0:
          self.speed = (self.step - self.first_step) / elapsed
        self.on_step(self)

  def _print(self, what: str) -> None:
    left = (self.total_steps - self.step) / self.speed if self.speed > 0 else float("nan")
    eta = f", ~{left / 60:.1f} min left" if left == left else ""
    print(f"  [{self.label}] {what}: train loss {self.loss:.3f}, {self.speed:.2f} steps/s{eta}",
          flush=True)


def train(variant: Variant, settings: dict, output_dir: str,
          on_step: Optional[Callable[[_TrainProgress], None]] = None,
          until: Optional[int] = None) -> None:
  """Trains one variant to its steps (steps_of), resuming from its last checkpoint.

  on_step: given the progress (step, total_steps, speed, loss) at every logged step and
  checkpoint, instead of the default line per checkpoint.
  until: stop at this step instead (a part of a long run; the schedule and the data order do
  not depend on where a run stops, so parts add up to the whole).
  """
  model_dir = os.path.join(output_dir, variant.name)
  steps = steps_of(variant, settings) if until is None else until
  done = max(run_results.checkpoint_steps(model_dir), default=0)
  if done >= steps:
    print(f"{variant.name}: trained ({done} steps)", flush=True)
    return
  print(f"{variant.name}: training {done} -> {steps} steps ({variant.description})",
        flush=True)
  every = settings["checkpoint_every"]
  data_seed = settings["data_seed"] if variant.data_seed is None else variant.data_seed
  params = _base_params(settings) + list(variant.gin_params) + [
      'utils.run.mode = "train"', f"utils.run.train_steps = {steps}",
      f"utils.run.save_checkpoints_steps = {every}",
      # TPUEstimator on CPU saves only between loops: one loop per checkpoint interval.
      f"utils.run.iterations_per_loop = {every}",
      "utils.run.keep_checkpoint_max = None",
      f"mesh_train_dataset_fn.seed = {data_seed}",
      # The initial weights too: repeats with one seed start from the same draw.
      f"mtf_switch.init_seed.seed = {data_seed}",
      # A resumed run skips the batches it has seen instead of replaying the seeded stream.
      "utils.run.skip_seen_data = True"]
  progress = _TrainProgress(variant.name, steps,
                            os.path.join(model_dir, "train_seconds.json"), done, on_step)
  run_cli(model_dir, _gin_files(variant, settings), params, "train", progress,
          on_start=progress.started)


def _eval_record(model_dir: str, settings: dict) -> str:
  return os.path.join(model_dir, f"eval_{settings['eval_batches']}x{settings['batch_size']}.json")


def _evaluated(model_dir: str, settings: dict) -> dict:
  """{step: neg log perplexity} in the TensorBoard events of this run's evaluation sample.

  t5 names a perplexity evaluation ``{dataset}_{split}_{examples}``: the train dataset
  (``eval``) on the validation split, eval_batches x batch_size sequences.
  """
  examples = settings["eval_batches"] * settings["batch_size"]
  name = f"eval_eval_validation_{examples}"
  return dict(run_results.perplexity_evaluations(model_dir).get(name, {}))


def evaluate(variant: Variant, settings: dict, output_dir: str, from_step: int = 0) -> dict:
  """Eval neg log perplexity of every checkpoint at or after ``from_step``, {step: value};
  evaluates only new ones.

  The sample is fixed: the task's validation split, read through the training input pipeline
  with a fixed seed (same order and span noise for every model and checkpoint), and
  settings['eval_batches'] batches of settings['batch_size'] sequences.
  """
  model_dir = os.path.join(output_dir, variant.name)
  path = _eval_record(model_dir, settings)
  results = _read_json(path)
  steps = [s for s in run_results.checkpoint_steps(model_dir) if s >= from_step]
  if all(s in results for s in steps):
    return results
  # Evaluations an interrupted earlier invocation finished are in the events already.
  results.update({s: v for s, v in _evaluated(model_dir, settings).items() if s in steps})
  missing = [s for s in steps if s not in results]
  if missing:
    print(f"{variant.name}: evaluating {len(missing)} checkpoints ({settings['eval_batches']} "
          f"validation batches each)", flush=True)
    params = _base_params(settings) + list(variant.gin_params) + [
        'utils.run.mode = "perplexity_eval"', 'utils.run.dataset_split = "validation"',
        f"utils.run.eval_checkpoint_step = {missing}",
        f"utils.run.perplexity_eval_steps = {settings['eval_batches']}",
        f"mesh_train_dataset_fn.seed = {EVAL_SEED}"]

    def on_line(line):
      if found := EVALUATED_LINE.search(line):
        print(f"  [{variant.name}] checkpoint {found.group(1)} evaluated", flush=True)

    run_cli(model_dir, _gin_files(variant, settings), params, "eval", on_line)
    results.update({s: v for s, v in _evaluated(model_dir, settings).items() if s in missing})
  _write_json(path, results)
  for step in missing:
    if step in results:
      print(f"  [{variant.name}] step {step}: eval neg log perplexity {results[step]:.4f}",
            flush=True)
  absent = [s for s in missing if s not in results]
  if absent:
    raise SystemExit(f"{variant.name}: no neg_log_perplexity for checkpoints {absent}")
  return results


def train_seconds(variant: Variant, output_dir: str) -> dict:
  return _read_json(os.path.join(output_dir, variant.name, "train_seconds.json"))


def _finished(variant: Variant, settings: dict, output_dir: str) -> Optional[dict]:
  """The evaluations of a variant trained to the end and fully evaluated, else None."""
  model_dir = os.path.join(output_dir, variant.name)
  steps = run_results.checkpoint_steps(model_dir)
  quality = _read_json(_eval_record(model_dir, settings))
  if not steps or steps[-1] < steps_of(variant, settings) or any(
      s not in quality for s in steps):
    return None
  return quality


def cpu_seconds(variant: Variant, output_dir: str) -> dict:
  return _read_json(os.path.join(output_dir, variant.name, CPU_SECONDS_FILE))


def _fingerprint(variant: Variant, settings: dict) -> dict:
  """What a finished model's record must match to stand in for training it again."""
  return {"variant": {"gin_files": list(variant.gin_files), "gin_params": list(variant.gin_params),
                      "data_seed": variant.data_seed},
          **{k: settings.get(k) for k in (*TRAINING_SETTINGS, "eval_batches")},
          "steps": steps_of(variant, settings)}


def read_record(records_dir: Optional[str], variant: Variant, settings: dict,
                cut_longer: bool = False) -> Optional[dict]:
  """A finished model's committed record (curve and training statistics), if it matches.

  With ``cut_longer``, a record of the same model trained for more steps also matches, cut at
  this run's steps (its curve and training statistics, and "cut_from_steps" in the returned
  record). That is right only where the learning-rate schedule's value at step N does not
  depend on the run's length (a constant or inverse-square-root schedule, not a decay to
  ``train_steps``): the first N steps of the longer run are then the N-step run.
  """
  if not records_dir:
    return None
  path = os.path.join(records_dir, f"{variant.name}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    record = json.load(f)
  wanted = _fingerprint(variant, settings)
  found = record.get("fingerprint") or {}
  if found == wanted:
    return record
  if not cut_longer or {**found, "steps": wanted["steps"]} != wanted:
    return None
  if not isinstance(found.get("steps"), int) or found["steps"] < wanted["steps"]:
    return None
  steps = wanted["steps"]
  curve = [row for row in record["curve"] if row["step"] <= steps]
  if not curve or curve[-1]["step"] != steps:
    return None  # no checkpoint at this run's last step
  scalars = {tag: {s: v for s, v in values.items() if int(s) <= steps}
             for tag, values in record.get("training_scalars", {}).items()}
  return {"fingerprint": wanted, "cut_from_steps": found["steps"], "curve": curve,
          "training_scalars": scalars}


def _write_record(records_dir: str, variant: Variant, settings: dict, curve: list,
                  output_dir: str) -> None:
  """Keeps a finished model's curve and routing statistics beside the results.

  Checkpoints are far too large to commit; with the record committed, a rerun on another
  machine (where ``output_dir`` is empty) reports the model without training it again.
  """
  model_dir = os.path.join(output_dir, variant.name)
  routing = {tag: {str(k): v for k, v in sorted(values.items())}
             for tag, values in run_results.read_scalars(model_dir).items()
             if tag.startswith("moe/")}
  os.makedirs(records_dir, exist_ok=True)
  _write_json_record(os.path.join(records_dir, f"{variant.name}.json"),
                     {"fingerprint": _fingerprint(variant, settings), "curve": curve,
                      "training_scalars": routing})


def _write_json_record(path: str, record: dict) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=None, separators=(",", ":"))
    f.write("\n")
  os.replace(tmp, path)


def _train_and_evaluate(variant: Variant, settings: dict, output_dir: str) -> dict:
  """Trains a variant and evaluates its checkpoints, in parts of settings['evaluate_every']
  steps when that is set: a long run then keeps its evaluations as it goes, and needs only
  its last checkpoint to resume (earlier ones are evaluated already)."""
  steps = steps_of(variant, settings)
  part = settings.get("evaluate_every") or steps
  done = max(run_results.checkpoint_steps(os.path.join(output_dir, variant.name)), default=0)
  for until in [*range(part, steps, part), steps]:
    if until > done:
      train(variant, settings, output_dir, until=until)
      evaluate(variant, settings, output_dir)
  return evaluate(variant, settings, output_dir)  # read back if every part evaluated it


def run_variants(variants: Sequence[Variant], settings: dict, output_dir: str,
                 failures: Optional[dict] = None, report_only: bool = False,
                 records_dir: Optional[str] = None, cut_longer_records: bool = False) -> dict:
  """Trains then evaluates each variant in turn; returns {name: [curve rows]}.

  A curve row: {"step", "train_seconds", "cpu_seconds", "neg_log_perplexity"} for every
  checkpoint. With a ``failures`` dict, a variant whose CLI run fails is recorded there
  ({name: reason}) and the others still run; without it, the first failure ends the run.
  With ``records_dir``, each finished model's curve and routing statistics are written there
  (``{name}.json``), and a model whose record matches this run's settings is not trained or
  evaluated again; with ``cut_longer_records`` also a record of a longer run, cut at this
  run's steps (``read_record``).
  """
  curves = {}
  for i, variant in enumerate(variants, 1):
    started = time.time()
    print(f"== [{i}/{len(variants)}] {variant.name}", flush=True)
    if (record := read_record(records_dir, variant, settings, cut_longer_records)) is not None:
      curves[variant.name] = record["curve"]
      cut = (f", {record['cut_from_steps']} steps cut at {steps_of(variant, settings)}"
             if "cut_from_steps" in record else "")
      print(f"== {variant.name}: finished earlier (record in {records_dir}{cut})", flush=True)
      continue
    if report_only:
      quality = _finished(variant, settings, output_dir)
      if quality is None:
        if failures is not None:
          failures[variant.name] = "not run to the end (run stopped; --report_only)"
        print(f"== {variant.name}: not finished, left out", flush=True)
        continue
    try:
      if not report_only:
        quality = _train_and_evaluate(variant, settings, output_dir)
    except SystemExit as error:
      if failures is None:
        raise
      failures[variant.name] = str(error)
      print(f"== {variant.name} FAILED: {error}", flush=True)
      continue
    seconds = train_seconds(variant, output_dir)
    cpu = cpu_seconds(variant, output_dir)
    curves[variant.name] = [
        {"step": s, "train_seconds": seconds.get(s), "cpu_seconds": cpu.get(s),
         "neg_log_perplexity": q}
        for s, q in sorted(quality.items()) if s <= steps_of(variant, settings)]
    if records_dir and _finished(variant, settings, output_dir) is not None:
      _write_record(records_dir, variant, settings, curves[variant.name], output_dir)
    print(f"== {variant.name} done in {time.time() - started:.0f} s", flush=True)
  return curves


def routing_replay_path(records_dir: str, name: str) -> str:
  return os.path.join(records_dir, f"{name}.routing_replay.json")


def replay_routing(variant: Variant, settings: dict, output_dir: str, records_dir: str,
                   batches: int = REPLAY_BATCHES) -> Optional[str]:
  """Replays the routing statistics of a model's checkpoints; the file written, or None.

  tools/replay_routing.py rebuilds the model's training step (its gin files and parameters,
  the evaluation's input seed), restores each checkpoint and runs the forward pass in training
  mode on ``batches`` fixed validation batches. Checkpoints already in the file are not
  replayed again; a model without checkpoints here (another machine) is left as it is.
  """
  model_dir = os.path.join(output_dir, variant.name)
  path = routing_replay_path(records_dir, variant.name)
  steps = run_results.checkpoint_steps(model_dir) if os.path.isdir(model_dir) else []
  if not steps:
    return path if os.path.exists(path) else None
  if os.path.exists(path):
    with open(path) as f:
      if set(steps) <= set(json.load(f).get("steps", [])):
        return path
  print(f"{variant.name}: replaying routing at {len(steps)} checkpoints ({batches} validation "
        f"batches each)", flush=True)
  params = (_base_params(settings) + list(variant.gin_params) +
            [f"mesh_train_dataset_fn.seed = {EVAL_SEED}"])
  args = [REPLAY_SCRIPT, "--model_dir", model_dir, "--output", path, "--batches",
          str(batches), "--", *[f"--gin_file={g}" for g in _gin_files(variant, settings)],
          *[f"--gin_param={p}" for p in params]]
  log_path = os.path.join(model_dir, "logs", f"replay_{time.strftime('%Y%m%d-%H%M%S')}.log")
  cli_runs.run_python(args, f"replay-{variant.name}", log_path, on_line=lambda line: None,
                      what="tools/replay_routing.py")
  return path
