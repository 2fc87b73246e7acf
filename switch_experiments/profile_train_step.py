"""Where a training step of ``switch_mesh_transformer`` spends its time, by op type and by part.

Runs the command line in this process (the same flags, gin files and input pipeline a user
types), with one extra Estimator hook that traces a few training steps in full
(``RunOptions.FULL_TRACE``) after a warm-up. Each traced op's duration is summed by op type
and by part of the model (attention, FFN, Switch layer, logits/softmax, Adafactor, input,
other); matmul-like ops (MatMul, BatchMatMul, Einsum) also get their FLOPs from the graph's
static shapes, so the table shows the GFLOP/s each kind of product reaches. Prints a markdown
table and a JSON line.

  PYTHONPATH=. python tools/profile_train_step.py --gin_file=models/switch_tiny.gin \
      --gin_file=mesh/cpu_data_parallel.gin --task switch_pydocs_span_corruption

Durations are the executor's per-op times summed over both cores' threads, so the "op
seconds" column can exceed the step's wall time when ops ran in parallel; the wall time of
each traced step is printed beside it. A loaded machine slows every op alike only roughly:
read shares, not absolute times, unless the machine was quiet.
"""

import argparse
import collections
import json
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MATMUL_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum",
              "_MklMatMul", "_MklBatchMatMulV2", "_MklEinsum", "_FusedMatMul",
              "_MklFusedMatMul", "_MklNativeFusedMatMul")

# The first name-scope pattern that matches an op's name says which part of the model it is
# in; mesh-tf lowers every mtf op under its mtf name, so these are the layers' own scopes.
PARTS = (
    ("optimizer", re.compile(r"adafactor|/slot_|_slot_|assign|update", re.I)),
    ("switch/moe layer", re.compile(
        r"SwitchFFN|SwitchAttention|switch_ffn|moe_ffn|/moe|router|dispatch|combine|expert",
        re.I)),
    ("attention", re.compile(r"att|relative_attention", re.I)),
    # Whole scope names only: a bare "wi" also matched "Switch" (SwitchFFN's jitter noise and
    # the while loop's Switch ops were counted as dense FFN).
    ("dense ffn", re.compile(r"dense_relu_dense|DenseReluDense|/ffn/|/wi(_\d+)?/|/wo/", re.I)),
    ("logits/loss", re.compile(r"logits|softmax|cross_entropy|loss|embedding|shared/", re.I)),
    ("layer norm", re.compile(r"layer_norm|rms_norm|norm", re.I)),
    ("input", re.compile(r"Iterator|infeed|IteratorGetNext|input", re.I)),
)


def einsum_flops(equation: str, shapes) -> int:
  """2 x the product of every distinct index's size: the multiply-adds of an einsum."""
  lhs = equation.replace(" ", "").split("->")[0]
  sizes = {}
  operands = lhs.split(",")
  if len(operands) != len(shapes):
    return 0
  for operand, shape in zip(operands, shapes, strict=True):
    if "." in operand or len(operand) != len(shape):
      return 0
    for letter, size in zip(operand, shape, strict=True):
      sizes[letter] = size
  flops = 2
  for size in sizes.values():
    flops *= int(size)
  return flops


def matmul_flops(op) -> int:
  """FLOPs of one matmul-like tf.Operation from its static input shapes (0 if unknown)."""
  try:
    shapes = [tuple(t.shape.as_list()) for t in op.inputs]
  except ValueError:
    return 0
  if any(d is None for s in shapes for d in s):
    return 0
  return product_flops_from_shapes(op, shapes)


def product_flops_from_shapes(op, shapes) -> int:
  """FLOPs of a MatMul / BatchMatMul / Einsum op (oneDNN's _Mkl kernels too) whose inputs
  have ``shapes`` (static or recorded at run time); 0 if they cannot be read."""
  if op.type in ("Einsum", "_MklEinsum"):
    return einsum_flops(op.get_attr("equation").decode(), shapes)
  a, b = shapes[0], shapes[1]
  if len(a) < 2 or len(b) < 2:
    return 0
  transpose_a = _attr(op, ("transpose_a", "adj_x"))
  m, k = (a[-1], a[-2]) if transpose_a else (a[-2], a[-1])
  transpose_b = _attr(op, ("transpose_b", "adj_y"))
  n = b[-2] if transpose_b else b[-1]
  batch = 1
  for d in a[:-2]:
    batch *= d
  return 2 * batch * m * k * n


def _attr(op, names):
  for name in names:
    try:
      return bool(op.get_attr(name))
    except ValueError:
      continue
  return False


def part_of(name: str) -> str:
  for part, pattern in PARTS:
    if pattern.search(name):
      return part
  return "other"


def make_step_tracer(warmup: int, traced: int, timed: int = 0):
  """An Estimator SessionRunHook: after ``warmup`` steps, times ``timed`` steps untraced, then
  fully traces the next ``traced`` steps."""
  import tensorflow.compat.v1 as tf

  class StepTracer(_StepTracerState, tf.train.SessionRunHook):
    pass

  return StepTracer(warmup, traced, timed)


class _StepTracerState:
  """The tracing logic of make_step_tracer's hook (kept apart so TF is imported late)."""

  def __init__(self, warmup: int, traced: int, timed: int = 0):
    import tensorflow.compat.v1 as tf

    self._tf = tf
    self.warmup, self.traced, self.timed = warmup, traced, timed
    self.calls = 0
    self.untraced_seconds = []  # wall time of each timed (untraced) step's session.run
    # Wall time from one timed step's start to the next one's: the step plus everything the
    # training loop does between steps (hooks, logging, Python), i.e. the real throughput.
    self.loop_seconds = []
    # This process's CPU seconds (every thread: the step's ops, the input pipeline, hooks) over
    # the same intervals: what a step costs the cores, which a busy machine inflates far less
    # than wall time.
    self.loop_cpu_seconds = []
    self._last_start = self._last_cpu = None
    self.step_stats = []  # (wall seconds, [(node name, op type, micros)])
    self.graph = None

  def _traced_call(self) -> bool:
    first = self.warmup + self.timed
    return first < self.calls <= first + self.traced

  def begin(self):
    self.graph = self._tf.get_default_graph()

  def before_run(self, run_context):
    del run_context
    self.calls += 1
    self._start = time.perf_counter()
    cpu = time.process_time()
    if self.warmup + 1 < self.calls <= self.warmup + self.timed + 1:
      self.loop_seconds.append(self._start - self._last_start)
      self.loop_cpu_seconds.append(cpu - self._last_cpu)
    self._last_start, self._last_cpu = self._start, cpu
    if self._traced_call():
      options = self._tf.RunOptions(trace_level=self._tf.RunOptions.FULL_TRACE)
      return self._tf.train.SessionRunArgs(fetches=None, options=options)
    return None

  def after_run(self, run_context, run_values):
    del run_context
    wall = time.perf_counter() - self._start
    metadata = run_values.run_metadata
    if self.warmup < self.calls <= self.warmup + self.timed:
      self.untraced_seconds.append(wall)
    if not self._traced_call() or metadata is None:
      return
    ops = []
    for device in metadata.step_stats.dev_stats:
      for node in device.node_stats:
        label = node.timeline_label  # "name = Type(inputs)"
        match = re.match(r"\s*[^=]+=\s*([A-Za-z0-9_]+)\(", label)
        op_type = match.group(1) if match else node.node_name.split(":")[0]
        ops.append((node.node_name.split(":")[0], op_type, node.op_end_rel_micros))
    self.step_stats.append((wall, ops))


def summarize(tracer):
  """Per op type and per part: op seconds per step, share, GFLOP and GFLOP/s for matmuls."""
  steps = len(tracer.step_stats)
  by_type = collections.defaultdict(lambda: [0.0, 0, 0])  # seconds, count, flops
  by_part = collections.defaultdict(lambda: [0.0, 0])
  # (part, op type, the op's mtf scope: its name without the per-op uniquifier) -> seconds, count
  by_part_scope = collections.defaultdict(lambda: [0.0, 0])
  matmul_by_shape = collections.defaultdict(lambda: [0.0, 0, 0])
  flops_cache = {}
  for _, ops in tracer.step_stats:
    for name, op_type, micros in ops:
      seconds = micros / 1e6 / steps
      flops = 0
      if op_type in MATMUL_OPS:
        if name not in flops_cache:
          try:
            op = tracer.graph.get_operation_by_name(name)
            flops_cache[name] = (matmul_flops(op), _shape_key(op))
          except (KeyError, ValueError):
            flops_cache[name] = (0, "?")
        flops, shape_key = flops_cache[name]
        entry = matmul_by_shape[shape_key]
        entry[0] += seconds
        entry[1] += 1
        entry[2] += flops / steps
      row = by_type[op_type]
      row[0] += seconds
      row[1] += 1
      row[2] += flops / steps
      part = by_part[part_of(name)]
      part[0] += seconds
      part[1] += 1
      scoped = by_part_scope[(part_of(name), op_type, _scope_of(name))]
      scoped[0] += seconds
      scoped[1] += 1
  return by_type, by_part, matmul_by_shape, by_part_scope


def _scope_of(name: str) -> str:
  """An op's name with layer numbers and uniquifiers folded: decoder/block_003/x_12/y ->
  decoder/block_*/x/y, so the ops of every layer and microbatch add up in one row."""
  name = re.sub(r"block_\d+", "block_*", name)
  name = re.sub(r"layer_\d+", "layer_*", name)
  return "/".join(re.sub(r"_\d+$", "", piece) for piece in name.split("/")[:-1])


def _shape_key(op) -> str:
  try:
    return " x ".join(str(tuple(t.shape.as_list())) for t in op.inputs[:2])
  except ValueError:
    return "?"


def dense_matmul_gflops(n: int = 2048, k: int = 512, rounds: int = 20) -> float:
  """GFLOP/s of a float32 [n, k] x [k, 4k] matmul in this process (the cores' reference)."""
  import numpy as np
  import tensorflow.compat.v1 as tf

  with tf.Graph().as_default(), tf.Session() as session:
    a = tf.constant(np.random.RandomState(0).randn(n, k).astype("float32"))
    b = tf.Variable(np.random.RandomState(1).randn(k, 4 * k).astype("float32"))
    product = tf.reduce_sum(tf.matmul(a, b))
    session.run(tf.global_variables_initializer())
    session.run(product)
    start = time.perf_counter()
    for _ in range(rounds):
      session.run(product)
    seconds = (time.perf_counter() - start) / rounds
  return 2 * n * k * 4 * k / seconds / 1e9


def parse_args(argv=None) -> argparse.Namespace:
  """The flags, checked before TensorFlow starts; a parser error names the bad value."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--gin_file", action="append", default=[])
  parser.add_argument("--gin_param", action="append", default=[])
  parser.add_argument("--task", default="switch_pydocs_span_corruption",
                      help="task or mixture to train on (MIXTURE_NAME)")
  parser.add_argument("--warmup_steps", type=int, default=10)
  parser.add_argument("--traced_steps", type=int, default=5)
  parser.add_argument("--timed_steps", type=int, default=0,
                      help="steps timed without tracing between warm-up and the traced steps")
  parser.add_argument("--model_dir", default=None,
                      help="default: a fresh temporary directory (a resumed run traces nothing)")
  parser.add_argument("--top", type=int, default=15, help="op types to list")
  parser.add_argument("--part", action="append", default=[],
                      choices=[p for p, _ in PARTS] + ["other"],
                      help="also list the op types and scopes inside this part (repeatable)")
  args = parser.parse_args(argv)
  for name in ("warmup_steps", "traced_steps", "top"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  if args.timed_steps < 0:
    parser.error(f"--timed_steps must be >= 0, got {args.timed_steps}")
  if not args.gin_file:
    parser.error("give the model with --gin_file (e.g. models/switch_tiny.gin)")
  return args


def train_traced(args):
  """Trains through the command line (``switch_mesh_transformer``) with the step tracer
  hooked into TPUEstimator.train; returns the tracer, once it has traced a step."""
  import switch_cli  # noqa: F401  (the command's process settings, oneDNN's, before TensorFlow)
  from mtf_switch import compat  # noqa: F401  (before t5 / mesh_tensorflow)

  # isort: split
  from tensorflow_estimator.python.estimator.tpu import tpu_estimator

  tracer = make_step_tracer(args.warmup_steps, args.traced_steps, args.timed_steps)
  original_train = tpu_estimator.TPUEstimator.train

  def train_with_tracer(self, input_fn, hooks=None, **kwargs):
    return original_train(self, input_fn, hooks=list(hooks or []) + [tracer], **kwargs)

  tpu_estimator.TPUEstimator.train = train_with_tracer
  steps = args.warmup_steps + args.timed_steps + args.traced_steps
  model_dir = args.model_dir or tempfile.mkdtemp(prefix="profile_step_")
  cli_argv = ["switch_mesh_transformer", f"--model_dir={model_dir}"]
  cli_argv += [f"--gin_file={g}" for g in args.gin_file]
  cli_argv += [f"--gin_param={p}" for p in [
      f'MIXTURE_NAME = "{args.task}"', 'utils.run.mode = "train"',
      f"utils.run.train_steps = {steps}", f"utils.run.save_checkpoints_steps = {steps}",
      *args.gin_param]]
  sys.argv = cli_argv
  from switch_cli.main import main as switch_mesh_transformer

  try:
    switch_mesh_transformer()
  except SystemExit as exit_:
    if exit_.code:
      raise
  if not tracer.step_stats:
    raise SystemExit(f"no step was traced: did {model_dir} already hold a checkpoint at or "
                     f"past step {steps}?")
  return tracer


def _median(values):
  """The upper median (a measured value, not an average of two), or None for no values."""
  return sorted(values)[len(values) // 2] if values else None


def print_tables(args, tracer, summary, reference: float) -> None:
  """The markdown report: time per part, per op type, inside the chosen parts, per matmul."""
  by_type, by_part, matmul_by_shape, by_part_scope = summary
  steps = len(tracer.step_stats)
  wall = _median([wall for wall, _ in tracer.step_stats])
  total_op_seconds = sum(row[0] for row in by_type.values())
  total_flops = sum(row[2] for row in by_type.values())
  print(f"\nmodel: {' '.join(args.gin_file)} {' '.join(args.gin_param)}; task {args.task}")
  if tracer.untraced_seconds:
    print(f"\nuntraced step wall time {_median(tracer.untraced_seconds):.3f} s "
          f"(median of {len(tracer.untraced_seconds)})")
  print(f"traced steps {steps} after {args.warmup_steps} warm-up steps; traced step wall "
        f"time {wall:.3f} s (median; tracing adds overhead); op seconds per step "
        f"{total_op_seconds:.3f}; matmul GFLOP per step {total_flops / 1e9:.2f} "
        f"-> {total_flops / 1e9 / wall:.1f} GFLOP/s of wall time; reference dense matmul in "
        f"this process {reference:.1f} GFLOP/s\n")
  print("| part | op seconds/step | share | ops |\n| --- | --- | --- | --- |")
  for part, (seconds, count) in sorted(by_part.items(), key=lambda kv: -kv[1][0]):
    print(f"| {part} | {seconds:.4f} | {seconds / total_op_seconds:.1%} | {count // steps} |")
  print("\n| op type | op seconds/step | share | ops/step | GFLOP/step | GFLOP/s |")
  print("| --- | --- | --- | --- | --- | --- |")
  for op_type, (seconds, count, flops) in sorted(by_type.items(),
                                                 key=lambda kv: -kv[1][0])[:args.top]:
    rate = f"{flops / 1e9 / seconds:.1f}" if flops and seconds else ""
    print(f"| {op_type} | {seconds:.4f} | {seconds / total_op_seconds:.1%} | "
          f"{count // steps} | {flops / 1e9:.3f} | {rate} |")
  for chosen in args.part:
    rows = sorted(((key, value) for key, value in by_part_scope.items() if key[0] == chosen),
                  key=lambda kv: -kv[1][0])
    part_seconds = sum(value[0] for _, value in rows) or float("inf")
    print(f"\nInside part {chosen!r} ({part_seconds:.4f} op seconds per step):\n")
    print("| op type | scope (layers folded) | op seconds/step | share of part | ops/step |")
    print("| --- | --- | --- | --- | --- |")
    for (_, op_type, scope), (seconds, count) in rows[:args.top]:
      print(f"| {op_type} | {scope} | {seconds:.4f} | {seconds / part_seconds:.1%} | "
            f"{count // steps} |")
  print("\n| matmul input shapes | op seconds/step | ops/step | GFLOP/s |")
  print("| --- | --- | --- | --- |")
  for shape, (seconds, count, flops) in sorted(matmul_by_shape.items(),
                                               key=lambda kv: -kv[1][0])[:args.top]:
    rate = f"{flops / 1e9 / seconds:.1f}" if flops and seconds else ""
    print(f"| {shape} | {seconds:.4f} | {count // steps} | {rate} |")


def json_record(args, tracer, summary, reference: float) -> dict:
  """The figures the benchmarks read back (tools/bench_cli_training.py): the JSON line."""
  by_type, by_part = summary[0], summary[1]

  def rounded(value, digits=4):
    return None if value is None else round(value, digits)

  return {
      "gin_files": args.gin_file, "gin_params": args.gin_param, "task": args.task,
      "traced_steps": len(tracer.step_stats),
      "step_wall_seconds": rounded(_median([wall for wall, _ in tracer.step_stats])),
      "timed_steps": len(tracer.untraced_seconds),
      "untraced_step_seconds": rounded(_median(tracer.untraced_seconds)),
      "loop_step_seconds": rounded(_median(tracer.loop_seconds)),
      "loop_cpu_seconds": rounded(_median(tracer.loop_cpu_seconds)),
      "op_seconds_per_step": round(sum(row[0] for row in by_type.values()), 4),
      "matmul_gflop_per_step": round(sum(row[2] for row in by_type.values()) / 1e9, 3),
      "reference_matmul_gflops": round(reference, 1),
      "parts": {k: round(v[0], 4) for k, v in by_part.items()},
      "op_types": {k: round(v[0], 4)
                   for k, v in sorted(by_type.items(), key=lambda kv: -kv[1][0])[:args.top]},
  }


def main(argv=None) -> int:
  args = parse_args(argv)
  tracer = train_traced(args)
  summary = summarize(tracer)
  reference = dense_matmul_gflops()
  print_tables(args, tracer, summary, reference)
  print(json.dumps(json_record(args, tracer, summary, reference)))
  return 0
