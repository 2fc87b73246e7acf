"""Steps/s and all-to-all bytes of switch_tiny trained over 1, 2 and 4 worker processes.

A benchmark, not a test. For each worker count W, the same placement mesh (``batch:M``,
experts over ``batch``, gin/mesh/cluster_expert_data.gin's layout) is laid over W worker
processes of M / W virtual CPU devices each (``switch_cli.local_cluster``: 127.0.0.1 ports,
started and killed here); W = 1 is one process with M virtual devices and no cluster. Each
setting is one ``switch_mesh_transformer`` training run (its own process, the user's command
line) with an extra Estimator hook that, after ``--warmup_steps``, times ``--timed_steps``
steps (one step's start to the next's), then runs one more step asking TensorFlow for the
partitioned graphs it executed (``RunOptions.output_partition_graphs``).

Bytes are read from those partition graphs: every ``_Send`` node is one tensor sent from one
device to another during the step; its size comes from the tensor's static shape in the
client's graph. Each transfer is counted once (per tensor and receiving device), and
classified:

  * all-to-all: inside the lowering of a Mesh-TF reshape (the Switch layer's dispatch and
    combine re-split groups -> experts and back, forward and backward);
  * other: gradient all-reduces of replicated weights, the input sent from the client, the
    loss and summaries sent back.

"Across tasks" counts what leaves a process (worker <-> worker, client <-> worker): what a
network would carry. The all-to-all figure is checked against a hand computation: per Switch
layer, experts x groups x expert capacity x d_model x 4 bytes (float32) is one all-to-all's
tensor; x 2 (dispatch and combine) x 2 (forward and backward). Mesh-TF's placement all-to-all
(``placement_mesh_impl.alltoall_ring``) passes messages around a ring of the mesh's devices,
so a piece addressed k devices away crosses k links: ``ring_link_crossings`` gives the share
of the tensor that crosses device and task boundaries (for M = 4: every byte once across
devices; half across tasks at 2 workers; all of it at 4).

  PYTHONPATH=. python tools/bench_cluster.py                      # ~10 min under load
  PYTHONPATH=. python tools/bench_cluster.py --workers 1,2 --timed_steps 5

Prints a markdown table and a JSON line. Speeds on a shared machine are measured under load.
"""

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from switch_experiments import paths
from switch_experiments.paths import REPO

FLOAT32_BYTES = 4
# dispatch + combine, each forward and backward.
ALL_TO_ALLS_PER_SWITCH_LAYER = 4
# Mesh-TF lowers each mtf op under its own name scope: a reshape's all-to-all ring (and its
# gradient's, ".../reshape_1/gradients/reshape/...") sends the outputs of split / concat ops
# made directly in that scope. The ring's result (".../reshape/parallel_k/concat") is not one.
ALL_TO_ALL_TENSOR = re.compile(r"(^|/)reshape(_\d+)?/(split|concat)(_\d+)?:\d+$")
SEND_OPS = ("_Send", "_HostSend")
CHILD_RESULT_PREFIX = "bench_cluster_result: "


# ----------------------------------------------------------------------------- hand arithmetic

@dataclasses.dataclass(frozen=True)
class SwitchLayerShape:
  """The static sizes of one Switch layer's all-to-all tensor [experts, groups, capacity, d]."""
  experts: int
  groups: int
  capacity: int
  d_model: int

  def all_to_all_bytes(self, value_bytes: int = FLOAT32_BYTES) -> int:
    """Bytes of one all-to-all's whole tensor (all devices' slices together)."""
    return self.experts * self.groups * self.capacity * self.d_model * value_bytes

  def filled_slot_count_bytes(self) -> int:
    """Bytes of the float32 [experts, groups] filled-slot counts, which the packed expert FFN
    re-splits from groups to experts once per step (forward only: they have no gradient)."""
    return self.experts * self.groups * FLOAT32_BYTES


def switch_layer_shape(num_tokens: int, num_experts: int, d_model: int, group_size: int,
                       capacity_factor: float, mesh_size: int) -> SwitchLayerShape:
  """The layer's sizes as mtf_switch decides them (groups tile the mesh, capacity rounds up)."""
  from mtf_switch import capacity

  plan = capacity.plan_groups(num_tokens, group_size, mesh_size)
  slots = capacity.expert_capacity(plan.tokens_per_group, num_experts, capacity_factor)
  return SwitchLayerShape(num_experts, plan.num_groups, slots, d_model)


def all_to_all_bytes_per_step(layers: Iterable[SwitchLayerShape],
                              value_bytes: int = FLOAT32_BYTES) -> int:
  """The logical all-to-all volume of one training step: every layer's tensor x 4."""
  return sum(ALL_TO_ALLS_PER_SWITCH_LAYER * layer.all_to_all_bytes(value_bytes)
             for layer in layers)


def ring_link_crossings(tasks: Sequence[int]) -> Tuple[int, int]:
  """(device crossings, task crossings) of one ring all-to-all, in pieces of 1/n^2 of the
  tensor, for n = len(tasks) devices in ring order where device i lives in task tasks[i].

  Mirrors placement_mesh_impl.alltoall_ring: device i's slice is cut into n pieces; the
  (n - 1) // 2 pieces for devices i+1, i+2, ... travel forward, the rest backward (i-1, ...),
  one link per hop. A piece crosses a task boundary on each hop between different tasks.
  """
  n = len(tasks)
  forward = (n - 1) // 2
  backward = (n - 1) - forward
  devices = tasks_crossed = 0
  for source in range(n):
    for direction, reach in ((1, forward), (-1, backward)):
      for distance in range(1, reach + 1):
        for hop in range(distance):
          here, there = (source + direction * hop) % n, (source + direction * (hop + 1)) % n
          devices += 1
          tasks_crossed += tasks[here] != tasks[there]
  return devices, tasks_crossed


def expected_crossing_bytes(logical_bytes: int, tasks: Sequence[int]) -> Tuple[int, int]:
  """(bytes across devices, bytes across tasks) of all-to-alls totalling logical_bytes."""
  n = len(tasks)
  devices, tasks_crossed = ring_link_crossings(tasks)
  return logical_bytes * devices // (n * n), logical_bytes * tasks_crossed // (n * n)


# ----------------------------------------------------------------------------- graph reading

@dataclasses.dataclass(frozen=True)
class Transfer:
  """One tensor sent from one device to another during a step."""
  tensor: str          # the producer's output, "scope/op:0"
  source: str          # sending device, as TensorFlow names it
  destination: str     # receiving device
  num_bytes: Optional[int]  # None: a tensor the client's graph cannot size (see transfers_in)

  @property
  def across_tasks(self) -> bool:
    return task_of(self.source) != task_of(self.destination)

  @property
  def all_to_all(self) -> bool:
    return bool(ALL_TO_ALL_TENSOR.search(self.tensor))


def task_of(device: str) -> str:
  """'/job:worker/replica:0/task:1/device:CPU:0' -> 'worker/1' (the process a device is in)."""
  job = re.search(r"/job:([^/]+)", device)
  task = re.search(r"/task:(\d+)", device)
  return f"{job.group(1) if job else 'localhost'}/{task.group(1) if task else 0}"


def _tensor_name(node_input: str) -> str:
  """A NodeDef input ("op" or "op:1") as a tensor name ("op:0", "op:1")."""
  return node_input if ":" in node_input else f"{node_input}:0"


def transfers_in(partition_graphs, tensor_bytes: Callable[[str], Optional[int]]) -> List[Transfer]:
  """The cross-device tensors of one step, from its partition graphs (GraphDefs, as
  RunMetadata gives them): TensorFlow's partitioner puts one ``_Send`` on the producer's
  device per tensor and receiving device; its input is the tensor sent. Sizes come from
  tensor_bytes(tensor name). Tensors made by TensorFlow's graph optimizer (grappler's
  rewrites, the dummy tensors that carry control edges) are not in the client's graph: their
  num_bytes is None. An all-to-all tensor must be sized: else a ValueError names it."""
  transfers = []
  seen = set()
  for graph_def in partition_graphs:
    for node in graph_def.node:
      if node.op not in SEND_OPS:
        continue
      key = node.attr["tensor_name"].s.decode()  # "edge_<id>_<producer>": one per transfer
      source = node.attr["send_device"].s.decode()
      destination = node.attr["recv_device"].s.decode()
      if source == destination or key in seen:
        continue
      seen.add(key)
      tensor = _tensor_name(node.input[0])
      num_bytes = tensor_bytes(tensor)
      if num_bytes is None and ALL_TO_ALL_TENSOR.search(tensor):
        raise ValueError(f"cannot size {tensor} sent from {source} to {destination}: it is not "
                         "in the client's graph with a static shape")
      transfers.append(Transfer(tensor, source, destination, num_bytes))
  return transfers


def static_tensor_bytes(graph) -> Callable[[str], Optional[int]]:
  """tensor name -> bytes from graph's static shape; None for a tensor the graph does not
  hold (an op TensorFlow's optimizer made) or whose shape is not static."""
  def tensor_bytes(name: str) -> Optional[int]:
    try:
      tensor = graph.get_tensor_by_name(name)
    except (KeyError, ValueError):
      return None
    elements = tensor.shape.num_elements()
    return None if elements is None else elements * tensor.dtype.size
  return tensor_bytes


def summarize_transfers(transfers: Sequence[Transfer]) -> Dict[str, int]:
  """Bytes and counts per class: all_to_all / other x across devices / across tasks; and the
  number of transfers that could not be sized (counted as 0 bytes)."""
  summary = {"unsized_tensors": sum(t.num_bytes is None for t in transfers)}
  for kind, chosen in (("all_to_all", [t for t in transfers if t.all_to_all]),
                       ("other", [t for t in transfers if not t.all_to_all])):
    crossing = [t for t in chosen if t.across_tasks]
    summary[f"{kind}_bytes_across_devices"] = sum(t.num_bytes or 0 for t in chosen)
    summary[f"{kind}_bytes_across_tasks"] = sum(t.num_bytes or 0 for t in crossing)
    summary[f"{kind}_tensors_across_tasks"] = len(crossing)
  return summary


# ----------------------------------------------------------------------------- one setting

def make_step_hook(warmup_steps: int, timed_steps: int):
  """An Estimator hook: times timed_steps steps after warmup_steps, then collects the next
  step's partition graphs (hook.partition_graphs) and the graph (hook.graph)."""
  import tensorflow.compat.v1 as tf

  class StepHook(tf.train.SessionRunHook):

    def __init__(self):
      self.calls = 0
      self.loop_seconds = []
      self.partition_graphs = None
      self.graph = None
      self._last_start = None

    def begin(self):
      self.graph = tf.get_default_graph()

    def before_run(self, run_context):
      del run_context
      self.calls += 1
      start = time.perf_counter()
      if warmup_steps + 1 < self.calls <= warmup_steps + timed_steps + 1:
        self.loop_seconds.append(start - self._last_start)
      self._last_start = start
      if self.calls == warmup_steps + timed_steps + 1:
        return tf.train.SessionRunArgs(
            fetches=None, options=tf.RunOptions(output_partition_graphs=True))
      return None

    def after_run(self, run_context, run_values):
      del run_context
      if self.calls == warmup_steps + timed_steps + 1 and run_values.run_metadata is not None:
        self.partition_graphs = list(run_values.run_metadata.partition_graphs)

  return StepHook()


def run_setting(args) -> dict:
  """In this process: the command line's training run with the hook; returns the record."""
  import switch_cli  # noqa: F401  (the command's process settings, oneDNN's, before TensorFlow)

  # isort: split
  from mtf_switch import compat  # noqa: F401  (before t5 / mesh_tensorflow)

  # isort: split
  import tensorflow.compat.v1 as tf
  from tensorflow_estimator.python.estimator.tpu import tpu_estimator

  from switch_cli import run_config

  hook = make_step_hook(args.warmup_steps, args.timed_steps)
  original_train = tpu_estimator.TPUEstimator.train

  def train_with_hook(self, input_fn, hooks=None, **kwargs):
    return original_train(self, input_fn, hooks=list(hooks or []) + [hook], **kwargs)

  tpu_estimator.TPUEstimator.train = train_with_hook
  if args.one_process_devices:
    # mesh-tf's RunConfig has no session config, so the Estimator's default (one CPU device,
    # soft placement) would put every "cpu:k" of the mesh on cpu:0: give the process M devices.
    bound = run_config.bound_settings

    def with_devices():
      return dict(bound(), session_config=tf.ConfigProto(
          device_count={"CPU": args.one_process_devices}, allow_soft_placement=True))

    run_config.bound_settings = with_devices
  steps = args.warmup_steps + args.timed_steps + 1
  sys.argv = ["switch_mesh_transformer", f"--model_dir={args.model_dir}",
              *[f"--module_import={m}" for m in args.module_import],
              *[f"--gin_file={g}" for g in args.gin_file],
              *[f"--gin_param={p}" for p in [f"utils.run.train_steps = {steps}",
                                             f"utils.run.save_checkpoints_steps = {steps}",
                                             *args.gin_param]]]
  from switch_cli import main as cli_main

  # After a run over a cluster the command ends its process itself (os._exit, see
  # switch_cli.main._leave_after_cluster_run), which would leave before this record is
  # printed; here the run returns, and main() leaves the same way once the record is out.
  cli_main._leave_after_cluster_run = lambda entry_point: entry_point()
  switch_mesh_transformer = cli_main.main

  try:
    switch_mesh_transformer()
  except SystemExit as exit_:
    if exit_.code:
      raise
  if hook.partition_graphs is None:
    raise SystemExit(f"bench_cluster: no step collected its partition graphs (did {args.model_dir}"
                     f" already hold a checkpoint at step {steps}?)")
  transfers = transfers_in(hook.partition_graphs, static_tensor_bytes(hook.graph))
  step_seconds = statistics.median(hook.loop_seconds)
  return {"timed_steps": len(hook.loop_seconds), "median_step_seconds": round(step_seconds, 4),
          "steps_per_second": round(1 / step_seconds, 3),
          "partition_graphs": len(hook.partition_graphs),
          # skip_empty_slots="auto" decides in this process (mtf_switch.packed_experts).
          "packed_experts": any("packed_expert_ffn" in op.name
                                for op in hook.graph.get_operations()),
          **summarize_transfers(transfers)}


# ----------------------------------------------------------------------------- the benchmark

def setting_command(args, workers: int, model_dir: str, cluster_params: Sequence[str]) -> list:
  mesh = args.mesh_size
  command = [sys.executable, paths.tool("bench_cluster"), "--run_setting",
             f"--model_dir={model_dir}", f"--warmup_steps={args.warmup_steps}",
             f"--timed_steps={args.timed_steps}", "--gin_file=models/switch_tiny.gin"]
  command += [f"--module_import={m}" for m in args.module_import]
  params = [f'MIXTURE_NAME = "{args.task}"', 'utils.run.mode = "train"',
            f'utils.run.mesh_shape = "batch:{mesh}"',
            'utils.run.layout_rules = "batch:batch;experts:batch"',
            f'utils.run.sequence_length = {{"inputs": {args.inputs_length}, '
            f'"targets": {args.targets_length}}}',
            f'utils.run.batch_size = ("sequences_per_batch", {args.batch_size})',
            *cluster_params, *args.gin_param]
  if workers == 1:
    devices = ", ".join(f'"cpu:{i}"' for i in range(mesh))
    params.append(f"utils.run.mesh_devices = [{devices}]")
    command.append(f"--one_process_devices={mesh}")
  return command + [f"--gin_param={p}" for p in params]


def measure(args, workers: int, log_dir: str) -> dict:
  """One setting in its own process (and W worker processes); its record, or an error."""
  from switch_cli.local_cluster import LocalCluster

  model_dir = os.path.join(log_dir, f"model_{workers}")
  env = paths.child_env(TF_CPP_MIN_LOG_LEVEL="2")
  log_path = os.path.join(log_dir, f"client_{workers}.log")

  def run(cluster_params):
    command = setting_command(args, workers, model_dir, cluster_params)
    with open(log_path, "w") as log:
      proc = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            timeout=args.setting_timeout_secs)
    with open(log_path, errors="replace") as log:
      text = log.read()
    records = [line[len(CHILD_RESULT_PREFIX):] for line in text.splitlines()
               if line.startswith(CHILD_RESULT_PREFIX)]
    if not records:
      return {"error": f"exit {proc.returncode}, log {log_path}: ...{text[-800:]}"}
    return json.loads(records[-1])

  if workers == 1:
    return run([])
  with LocalCluster(workers=workers, devices_per_worker=args.mesh_size // workers,
                    log_dir=log_dir) as local:
    return run(local.gin_params())


def expected_for(args) -> Tuple[list, int]:
  """switch_tiny's two Switch layers (encoder, decoder) at this batch; the logical bytes."""
  layers = [switch_layer_shape(args.batch_size * length, args.num_experts, args.d_model,
                               args.group_size, args.capacity_factor, args.mesh_size)
            for length in (args.inputs_length, args.targets_length)]
  return layers, all_to_all_bytes_per_step(layers)


def ring_tasks(workers: int, mesh_size: int) -> list:
  """The task of each mesh device, in mesh order (switch_cli.cluster: worker-major)."""
  return [device // (mesh_size // workers) for device in range(mesh_size)]


def table(records: Sequence[dict]) -> str:
  lines = ["| workers x devices | steps/s | median step s | all-to-all bytes/step across "
           "tasks (measured / expected) | across devices (measured / expected) | other bytes/step "
           "across tasks |", "| --- | --- | --- | --- | --- | --- |"]
  for r in records:
    if "error" in r:
      lines.append(f"| {r['workers']} x {r['devices_per_worker']} | error: "
                   f"{r['error'][:200]} | | | | |")
      continue
    lines.append(
        f"| {r['workers']} x {r['devices_per_worker']} | {r['steps_per_second']:.3f} | "
        f"{r['median_step_seconds']:.3f} | {r['all_to_all_bytes_across_tasks']:,} / "
        f"{r['expected_all_to_all_bytes_across_tasks']:,} | "
        f"{r['all_to_all_bytes_across_devices']:,} / "
        f"{r['expected_all_to_all_bytes_across_devices']:,} | "
        f"{r['other_bytes_across_tasks']:,} |")
  return "\n".join(lines)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workers", default="1,2,4",
                      help="comma-separated worker counts; each must divide --mesh_size")
  parser.add_argument("--mesh_size", type=int, default=4, help="devices of the batch:M mesh")
  parser.add_argument("--warmup_steps", type=int, default=3)
  parser.add_argument("--timed_steps", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=8, help="sequences per step")
  parser.add_argument("--inputs_length", type=int, default=32)
  parser.add_argument("--targets_length", type=int, default=8)
  parser.add_argument("--task", default="switch_pydocs_span_corruption",
                      help="task or mixture (MIXTURE_NAME)")
  parser.add_argument("--module_import", action="append", default=[])
  parser.add_argument("--gin_param", action="append", default=[])
  parser.add_argument("--log_dir", default=None, help="default: a fresh temporary directory")
  parser.add_argument("--setting_timeout_secs", type=float, default=1800)
  # switch_tiny.gin's sizes, for the hand computation (checked against the graph's bytes).
  parser.add_argument("--num_experts", type=int, default=8)
  parser.add_argument("--d_model", type=int, default=128)
  parser.add_argument("--group_size", type=int, default=1024)
  parser.add_argument("--capacity_factor", type=float, default=1.25)
  # One setting's run, in its own process (what the benchmark starts; not for users).
  parser.add_argument("--run_setting", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--model_dir", help=argparse.SUPPRESS)
  parser.add_argument("--gin_file", action="append", default=[], help=argparse.SUPPRESS)
  parser.add_argument("--one_process_devices", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  for name in ("mesh_size", "warmup_steps", "timed_steps", "batch_size", "inputs_length",
               "targets_length"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  try:
    args.worker_counts = [int(w) for w in args.workers.split(",")]
  except ValueError:
    parser.error(f"--workers={args.workers!r}: give comma-separated integers, e.g. 1,2,4")
  bad = [w for w in args.worker_counts if w < 1 or args.mesh_size % w]
  if bad:
    parser.error(f"--workers={args.workers!r}: {bad} do not divide --mesh_size={args.mesh_size}")
  if not args.run_setting and args.batch_size % args.mesh_size:
    parser.error(f"--batch_size={args.batch_size} must be a multiple of "
                 f"--mesh_size={args.mesh_size} (the batch is split over the mesh)")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.run_setting:
    print(CHILD_RESULT_PREFIX + json.dumps(run_setting(args)), flush=True)
    sys.stderr.flush()
    # A cluster client's process aborted (SIGABRT) while TensorFlow tore its server down at
    # interpreter exit, after the run had finished; the record is out, so leave at once.
    os._exit(0)
  layers, logical = expected_for(args)
  log_dir = args.log_dir or tempfile.mkdtemp(prefix="bench_cluster_")
  os.makedirs(log_dir, exist_ok=True)
  print(f"bench_cluster: switch_tiny, mesh batch:{args.mesh_size} (experts over batch), "
        f"{args.batch_size} x {args.inputs_length}/{args.targets_length} tokens per step; "
        f"Switch layers {[dataclasses.astuple(layer) for layer in layers]} (experts, groups, "
        f"capacity, d_model); logical all-to-all bytes/step {logical:,}; logs in {log_dir}",
        flush=True)
  load_at_start = os.getloadavg()
  records = []
  for workers in args.worker_counts:
    started = time.monotonic()
    record = measure(args, workers, log_dir)
    expected = logical + (sum(layer.filled_slot_count_bytes() for layer in layers)
                          if record.get("packed_experts") else 0)
    across_devices, across_tasks = expected_crossing_bytes(
        expected, ring_tasks(workers, args.mesh_size))
    record.update(workers=workers, devices_per_worker=args.mesh_size // workers,
                  expected_all_to_all_bytes_across_devices=across_devices,
                  expected_all_to_all_bytes_across_tasks=across_tasks,
                  wall_seconds=round(time.monotonic() - started, 1))
    if "error" not in record:
      record["all_to_all_matches_hand_computation"] = (
          record["all_to_all_bytes_across_tasks"] == across_tasks
          and record["all_to_all_bytes_across_devices"] == across_devices)
    print(json.dumps(record), flush=True)
    records.append(record)
  print("\n" + table(records) + "\n")
  # The 1-minute load average before and after (the benchmark's own processes count in the
  # second): whoever reads the figures judges whether the machine was quiet.
  print(json.dumps({"benchmark": "bench_cluster",
                    "load_average": {"start": load_at_start, "end": os.getloadavg()},
                    "date": time.strftime("%Y-%m-%d"), "mesh_size": args.mesh_size,
                    "batch_size": args.batch_size, "inputs_length": args.inputs_length,
                    "targets_length": args.targets_length, "timed_steps": args.timed_steps,
                    "logical_all_to_all_bytes_per_step": logical,
                    "switch_layers": [dataclasses.asdict(layer) for layer in layers],
                    "settings": records}))
  return 1 if any("error" in r for r in records) else 0
