"""Builds a paper model's TPU training step on this CPU machine and reports what each core holds.

Nothing runs on a TPU and no variable is ever initialised: the tool only constructs the
TensorFlow graph TPUEstimator would compile. It drives Mesh-TF's own
``utils.tpu_estimator_model_fn`` (the model_fn ``t5_mesh_transformer`` hands to TPUEstimator)
as TPUEstimator does for training:

  1. gin: mesh-tf's defaults.gin, the model file, a mesh file (``gin/mesh/tpu_*.gin``);
  2. a fake TPU system: a ``tensorflow.python.tpu.topology.Topology`` of v3 chips (2 cores
     each, 4 chips per host) with as many cores as the mesh, and its ``DeviceAssignment``;
  3. the global step outside the computation, then ``tpu.replicate`` over every core of a
     computation that dequeues the features from infeed (as TPUEstimator's input pipeline
     does), calls the model_fn in TRAIN mode with ``params["context"]`` a stand-in for
     TPUEstimator's ``_InternalTPUContext`` (hosts, replicas, device assignment), and returns
     the loss after the train op (TPUEstimator's ``_TrainingLoop`` does the same).

The model_fn builds the Bitransformer from gin, its loss (with the Switch layers' auxiliary
losses), gradients (in Mesh-TF's microbatch loop when ``tokens_per_microbatch_per_replica``
asks for it), the gin-bound optimizer's update (Adafactor) and the lowering on a
``SimdMeshImpl``. The report is per core, from the built graph:

  parameters / optimizer  bytes of one core's slice variables (``TPU_VAR``), optimizer slots
                          told apart by Mesh-TF's slot names (``_slot_vr``, ``_slot_vc``,
                          ``_slot_v``, ``_slot_m``); master copies live on the hosts.
  largest activations     the largest tensors of the model's forward and backward pass
                          inside the TPU computation (static shapes, per core; the
                          optimizer's parameter-sized temporaries left out). These are single tensors, not XLA's peak: XLA decides
                          what is live at once, which needs the TPU compiler.
  all-to-all              every AllToAll op: the per-core bytes it exchanges, grouped by the
                          Switch layer whose name scope holds it, times the microbatches a
                          step runs (ops inside the microbatch loop run once per microbatch).
  collectives             AllToAll, CrossReplicaSum, CollectivePermute, AllGather op counts.

    python tools/tpu_plan.py                          # the paper models on their meshes
    python tools/tpu_plan.py --models switch_c --json
    python tools/tpu_plan.py --models switch_base --mesh mesh/tpu_expert_data.gin \
        --gin_param 'utils.run.mesh_shape = "batch:64"'

Full-depth Switch-C (15+15 layers on 2048 cores) is too big to build on a small machine: the
graph has one slice variable per core for every variable (0.34 M TF ops at 1+1 layers on
2048 cores, ~0.5 ms of CPU and ~6 KB of RSS each; ~3.9 M at 15+15). Its figures are
extrapolated from builds instead, every per-core figure being exactly affine in the layers:

    python tools/tpu_plan.py --models switch_c --json --layers 1,2,3 --extrapolate_to 15 \
        --gin_param 'utils.run.mesh_shape = "batch:64"' \
        --gin_param 'mtf_switch.SwitchFFN.num_experts = 64' > fit.jsonl  # checks the fit
    sed -n 4p fit.jsonl > fit.json
    python tools/tpu_plan.py --models switch_c --json --layers 1 --extrapolate_to 15 \
        --increments_from fit.json      # 2048 cores: 1+1 layers built, 14 increments added
"""

import argparse
import collections
import dataclasses
import json
import os
import re
import resource
import shutil
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from mtf_switch import compat  # noqa: E402,F401  (before any mesh_tensorflow import)
from mtf_switch.gin_files import parse_gin  # noqa: E402  (gin loaded as the CLI loads it)
from switch_experiments import table9  # noqa: E402  (the model graph as Table 9 builds it)

V3_HBM_BYTES_PER_CORE = 16 * 2**30
V3_CORES_PER_CHIP = 2
V3_CHIPS_PER_HOST = 4
COLLECTIVE_OPS = ("AllToAll", "CrossReplicaSum", "CollectivePermute", "AllGather")
SLOT_SUFFIXES = ("_slot_vr", "_slot_vc", "_slot_v", "_slot_m")

# (model file, mesh file, what the paper's Section 5 says about running it).
PAPER_PLANS = [
    ("models/switch_base.gin", "mesh/tpu_expert_data.gin",
     "Section 5.4: experts and data split over the same cores (128 experts on 32 cores)"),
    ("models/switch_large.gin", "mesh/tpu_expert_model_data.gin",
     "Section 5.5: expert + model + data parallelism"),
    ("models/switch_xxl.gin", "mesh/tpu_expert_model_data.gin",
     "Section 5.5/5.6: Switch-XXL uses expert, model and data parallelism"),
    ("models/switch_c.gin", "mesh/tpu_expert_data.gin",
     "Section 5.6: Switch-C, expert + data parallelism only, 2048 experts, one per core"),
    ("models/t5_base.gin", "mesh/tpu_data.gin", "dense twin of Switch-Base (data parallel)"),
    ("models/t5_large.gin", "mesh/tpu_model_data.gin", "dense twin of Switch-Large"),
]
# Switch-C's one expert per core: the expert-data mesh file's "batch:32" grown to 2048 cores.
PLAN_BINDINGS = {"models/switch_c.gin": ['utils.run.mesh_shape = "batch:2048"']}


def fake_v3_topology(num_cores: int):
  """A TPU v3 topology of num_cores cores: [x, y, 1, 2] chips as square as powers of 2 allow.

  Hosts (tasks) own 4 chips = 8 cores each, as on v3 pods; a slice under 8 cores is one host.
  """
  import numpy as np
  from tensorflow.python.tpu import topology as topology_lib
  if num_cores < V3_CORES_PER_CHIP or num_cores % V3_CORES_PER_CHIP:
    raise ValueError(f"num_cores={num_cores}: a v3 slice has an even number of cores (>= 2)")
  chips = num_cores // V3_CORES_PER_CHIP
  x = 1
  while x * x < chips and chips % (2 * x) == 0 and (chips // (2 * x)) >= 2 * x:
    x *= 2
  y = chips // x
  coords = [(cx, cy, 0, core) for cy in range(y) for cx in range(x)
            for core in range(V3_CORES_PER_CHIP)]
  per_task = min(num_cores, V3_CHIPS_PER_HOST * V3_CORES_PER_CHIP)
  device_coordinates = np.array(coords, np.int32).reshape(num_cores // per_task, per_task, 4)
  return topology_lib.Topology(mesh_shape=[x, y, 1, V3_CORES_PER_CHIP],
                               device_coordinates=device_coordinates)


@dataclasses.dataclass
class FakeTPUContext:
  """What mesh-tf's model_fn reads from TPUEstimator's params["context"]."""
  device_assignment: object
  num_hosts: int
  num_replicas: int

  def tpu_host_placement_function(self, host_id=0):
    return f"/job:worker/replica:0/task:{host_id}/device:CPU:0"


@dataclasses.dataclass
class TPUTrainStep:
  """A built (never run) TPU training step."""
  graph: object                 # tf.Graph
  replicate_ops: list           # tf.Operation inside the TPU computation, function bodies too
  num_cores: int
  mesh_shape: str
  layout_rules: str
  batch_size: int
  sequence_length: Dict[str, int]
  num_microbatches: int
  model: object                 # the transformer.Bitransformer
  build_seconds: float
  loop_ops: frozenset = frozenset()  # of replicate_ops, those in a while loop's body


def inside_tpu_computation(op) -> bool:
  """Whether op was built inside tpu.replicate (directly or in a loop within it)."""
  from tensorflow.python.tpu import tpu_replication
  context = op._get_control_flow_context()  # noqa: SLF001
  while context is not None:
    if isinstance(context, tpu_replication.TPUReplicateContext):
      return True
    context = context.outer_context
  return False


_CALLING_OPS = ("While", "StatelessWhile", "If", "StatelessIf", "PartitionedCall",
                "StatefulPartitionedCall")


def ops_with_function_bodies(ops) -> Tuple[list, frozenset]:
  """ops, and recursively the ops of the functions they call; and those inside while loops.

  TF 2's control flow (on by default, also under tf.compat.v1) builds a while loop's body,
  e.g. Mesh-TF's microbatch loop, as a separate function graph that
  graph.get_operations() does not list.
  """
  found, in_loop = [], set()

  def visit(op_list, looping):
    for op in op_list:
      found.append(op)
      if looping:
        in_loop.add(op)
      if op.type not in _CALLING_OPS:
        continue
      for attr in ("body", "cond", "then_branch", "else_branch", "f"):
        try:
          name = op.get_attr(attr).name
        except (ValueError, AttributeError):
          continue
        function = op.graph._get_function(name)  # noqa: SLF001
        outer = getattr(op.graph, "outer_graph", None)
        while function is None and outer is not None:
          function = outer._get_function(name)  # noqa: SLF001
          outer = getattr(outer, "outer_graph", None)
        if function is not None:
          visit(function.graph.get_operations(), looping or "While" in op.type)

  visit(ops, False)
  return found, frozenset(in_loop)


def _absl_flags_parsed() -> None:
  # Mesh-TF's simd_mesh_impl reads absl flags (fold_xy, logical_cores_per_chip); outside a
  # t5_mesh_transformer process nobody parsed them, so take their defaults.
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


_RUN_ARGS = ("mesh_shape", "layout_rules", "sequence_length", "batch_size", "optimizer",
             "learning_rate_schedule", "autostack", "train_steps")


def _run_bindings() -> dict:
  """The gin-bound utils.run arguments the model_fn needs, references resolved.

  Only these are resolved: utils.run's other arguments (its vocabulary, a mixture lookup)
  would need the task registry.
  """
  import copy

  import gin
  bound = gin.get_bindings("utils.run", resolve_references=False)
  return {name: copy.deepcopy(bound[name]) for name in _RUN_ARGS if name in bound}


def _learning_rate_schedule(run_args: dict):
  """The schedule as utils.run hands it to the model_fn (total_train_steps bound)."""
  import functools

  from mesh_tensorflow.transformer import learning_rate_schedules
  schedule = run_args.get("learning_rate_schedule", 0.01)
  train_steps = run_args.get("train_steps", 1)
  if not isinstance(train_steps, int):
    raise ValueError(f"utils.run.train_steps={train_steps!r}: give an integer for the plan")
  if isinstance(schedule, list):
    return functools.partial(learning_rate_schedules.product_learning_rate,
                             total_train_steps=train_steps, factors=schedule)
  if callable(schedule):
    return functools.partial(schedule, total_train_steps=train_steps)
  return schedule


def build_tpu_train_step(gin_files: Sequence[str], bindings: Sequence[str] = (),
                         vocab_size: int = table9.VOCAB_SIZE,
                         model_dir: Optional[str] = None) -> TPUTrainStep:
  """Builds the model's training step as TPUEstimator would, on a fake v3 slice.

  Mesh shape, layout rules, batch size, sequence lengths and the optimizer are read from the
  gin-bound arguments of ``utils.run`` (the mesh files set the first two).
  """
  mtf, tf, _, _, gin = table9._import_mesh_tf()  # noqa: SLF001
  from mesh_tensorflow.transformer import utils
  from tensorflow.python.tpu import device_assignment as device_assignment_lib
  from tensorflow.python.tpu import tpu
  from tensorflow.python.tpu.ops import tpu_ops

  from mtf_switch import summaries
  summaries.install(utils)  # the microbatch loop as the command line builds it (switch_cli.patches)
  _absl_flags_parsed()
  parse_gin(list(gin_files), list(bindings))
  run_args = _run_bindings()
  mesh_shape = mtf.convert_to_shape(run_args["mesh_shape"])
  layout_rules = mtf.convert_to_layout_rules(run_args["layout_rules"])
  sequence_length = dict(run_args["sequence_length"])
  batch_size = utils.compute_batch_size(sequence_length, mesh_shape, layout_rules,
                                        run_args["batch_size"])
  learning_rate_schedule = _learning_rate_schedule(run_args)
  num_cores = mesh_shape.size
  topology = fake_v3_topology(num_cores)
  assignment = device_assignment_lib.DeviceAssignment.build(topology, num_replicas=num_cores)
  context = FakeTPUContext(assignment, num_hosts=topology.num_tasks, num_replicas=num_cores)
  own_dir = model_dir is None
  model_dir = model_dir or tempfile.mkdtemp(prefix="tpu_plan_")
  start = time.time()
  graph = tf.Graph()
  try:
    with graph.as_default(), gin.config_scope(""):
      model = utils.build_model(model_type="bitransformer", input_vocab_size=vocab_size,
                                output_vocab_size=vocab_size, layout_rules=layout_rules,
                                mesh_shape=mesh_shape)
      model_fn = utils.tpu_estimator_model_fn(
          model_type="bitransformer", transformer_model=model, vocabulary=None,
          model_dir=model_dir, use_tpu=True, mesh_shape=mesh_shape,
          layout_rules=layout_rules, batch_size=batch_size, sequence_length=sequence_length,
          autostack=run_args.get("autostack", True), keep_checkpoint_max=1,
          save_checkpoints_steps=1000,
          learning_rate_schedule=learning_rate_schedule,
          optimizer=run_args["optimizer"])
      # outer_batch_size, tpu_summaries...: gin's, as in utils.get_estimator, which does not
      # pass them either.
      tf.train.get_or_create_global_step()
      keys = ("inputs", "targets")
      shapes = [[batch_size, sequence_length[k]] for k in keys]

      def computation():
        # TPUEstimator feeds each core from infeed; every core sees the whole batch here, as
        # mesh-tf's import_fully_replicated expects.
        features = dict(zip(keys, tpu_ops.infeed_dequeue_tuple(
            dtypes=[tf.int32] * len(keys), shapes=shapes), strict=True))
        spec = model_fn(features, None, tf.estimator.ModeKeys.TRAIN,
                        params={"context": context, "batch_size": batch_size})
        with tf.control_dependencies([spec.train_op]):
          return tf.identity(spec.loss)

      tpu.replicate(computation, inputs=[[]] * num_cores, device_assignment=assignment)
      num_microbatches = utils.serialize_num_microbatches(
          mtf.Dimension("batch", batch_size), sequence_length, mesh_shape, layout_rules)
  finally:
    if own_dir:
      shutil.rmtree(model_dir, ignore_errors=True)
  replicate_ops, loop_ops = ops_with_function_bodies(
      [op for op in graph.get_operations() if inside_tpu_computation(op)])
  return TPUTrainStep(graph=graph, replicate_ops=replicate_ops, num_cores=num_cores,
                      mesh_shape=str(run_args["mesh_shape"]),
                      layout_rules=str(run_args["layout_rules"]), batch_size=batch_size,
                      sequence_length=sequence_length, num_microbatches=num_microbatches,
                      model=model, build_seconds=time.time() - start, loop_ops=loop_ops)


# ---- what the graph holds ----------------------------------------------------------------

def _static_bytes(tensor) -> Optional[int]:
  if not tensor.shape.is_fully_defined() or tensor.dtype.is_quantized:
    return None
  try:
    itemsize = tensor.dtype.size
  except (TypeError, ValueError):  # resource, variant, string
    return None
  return int(tensor.shape.num_elements()) * itemsize


def per_core_variable_bytes(step: TPUTrainStep) -> Dict[str, int]:
  """{"parameters": bytes, "optimizer": bytes} of the most loaded core's slice variables."""
  import tensorflow.compat.v1 as tf
  per_core = collections.defaultdict(lambda: {"parameters": 0, "optimizer": 0})
  with step.graph.as_default():
    slice_vars = tf.get_collection("TPU_VAR")
  for var in slice_vars:
    match = re.search(r"_slice_(\d+)$", var.op.name)
    if not match:
      continue
    base = var.op.name[:match.start()]
    kind = "optimizer" if any(s in base for s in SLOT_SUFFIXES) else "parameters"
    per_core[int(match.group(1))][kind] += var.shape.num_elements() * var.dtype.base_dtype.size
  if not per_core:
    raise ValueError("no TPU slice variables in the graph: was the step lowered on a SIMD mesh?")
  return max(per_core.values(), key=lambda d: d["parameters"] + d["optimizer"])


def largest_activations(step: TPUTrainStep, top: int = 5) -> List[Tuple[str, List[int], str, int]]:
  """The largest tensors inside the TPU computation: (op name, shape, dtype, bytes)."""
  found = []
  for op in step.replicate_ops:
    if op.type in ("ReadVariableOp", "Const") or "/adafactor/" in op.name:
      continue  # weights and the optimizer's update temporaries (parameter-sized) aside
    for t in op.outputs:
      size = _static_bytes(t)
      if size:
        found.append((op.name, t.shape.as_list(), t.dtype.name, size))
  found.sort(key=lambda r: -r[3])
  return found[:top]


def collective_counts(step: TPUTrainStep) -> Dict[str, int]:
  counts = collections.Counter(op.type for op in step.replicate_ops if op.type in COLLECTIVE_OPS)
  return {name: counts.get(name, 0) for name in COLLECTIVE_OPS}


def in_microbatch_loop(op) -> bool:
  """Whether op sits inside a while loop (Mesh-TF's microbatch loop) of the computation."""
  context = op._get_control_flow_context()  # noqa: SLF001
  while context is not None:
    if context.IsWhileContext():
      return True
    context = context.outer_context
  return False


_LAYER_SCOPE = re.compile(r"((?:encoder|decoder)/block_\d+/layer_\d+)")


def all_to_all_by_layer(step: TPUTrainStep) -> Dict[str, Dict[str, int]]:
  """{layer scope: {"ops": n per step, "bytes": per-core bytes per step, "operands": [...]}}.

  Bytes are the per-core operand of each AllToAll (what one core sends, its own share
  included); an op inside the microbatch loop counts once per microbatch.
  """
  layers = collections.defaultdict(lambda: {"ops": 0, "bytes": 0, "operands": []})
  for op in step.replicate_ops:
    if op.type != "AllToAll":
      continue
    match = _LAYER_SCOPE.search(op.name)
    scope = match.group(1) if match else "(outside a layer)"
    runs = step.num_microbatches if (op in step.loop_ops or in_microbatch_loop(op)) else 1
    layers[scope]["ops"] += runs
    layers[scope]["bytes"] += runs * (_static_bytes(op.inputs[0]) or 0)
    layers[scope].setdefault("operands", []).append(
        [op.name[len(scope) + 1:] if match else op.name, str(op.inputs[0].shape)])
  return dict(sorted(layers.items()))


# Ops the TPU computation may hold that tf2xla compiles only for the TPU device
# (DEVICE_TPU_XLA_JIT, registered by the TPU runtime library, which this machine lacks): the
# collectives, infeed, and the replication markers the TPU rewrite pass consumes.
TPU_ONLY_OPS = frozenset({
    "AllToAll", "CrossReplicaSum", "CollectivePermute", "AllGather", "InfeedDequeueTuple",
    "InfeedDequeue", "OutfeedEnqueueTuple", "TPUReplicateMetadata", "TPUReplicatedInput",
    "TPUReplicatedOutput", "TPUCompilationResultOp"})
# TPUs have no 64-bit floats; strings and variants never reach the device.
NON_TPU_DTYPES = ("float64", "complex128", "string", "variant")


def xla_compilable_kernels() -> Dict[str, list]:
  """{op type: [KernelDef]} of tf2xla's compilation kernels (device XLA_CPU_JIT).

  TF registers tf2xla's kernels in the kernel registry only once an XLA device is set up, so
  one tiny computation is compiled with XLA on the CPU first. XLA_CPU_JIT and TPU_XLA_JIT
  share tf2xla's op kernels (REGISTER_XLA_OP without a Device restriction registers for
  every XLA backend); the TPU-only ones are TPU_ONLY_OPS, and TPU's narrower dtype set is
  checked apart (NON_TPU_DTYPES).
  """
  import tensorflow.compat.v1 as tf
  from tensorflow.python.framework import kernels
  with tf.Graph().as_default():
    one = tf.xla.experimental.compile(lambda: tf.constant(1.0) + 1.0)
    with tf.Session() as session:
      session.run(one)
  found = collections.defaultdict(list)
  for kernel in kernels.get_all_registered_kernels().kernel:
    if kernel.device_type == "XLA_CPU_JIT":
      found[kernel.op].append(kernel)
  if not found:
    raise RuntimeError("no XLA_CPU_JIT kernels registered: cannot check TPU compatibility")
  return found


def _satisfies(node_def, kernel) -> bool:
  for constraint in kernel.constraint:
    allowed = set(constraint.allowed_values.list.type)
    attr = node_def.attr.get(constraint.name)
    if attr is None:
      continue
    values = list(attr.list.type) if attr.HasField("list") else [attr.type]
    if not set(values) <= allowed:
      return False
  return True


def ops_not_for_tpu(step: TPUTrainStep, xla_kernels: Dict[str, list]) -> List[str]:
  """The TPU computation's ops that could not run there, each with the reason.

  An op fails if it has no XLA compilation kernel for its dtypes (and is not a TPU-only op),
  outputs a dtype TPUs lack, is pinned to a CPU device, or is marked for outside
  compilation (it would run on the host in every step).
  """
  problems = []
  for op in step.replicate_ops:
    node_def = op.node_def
    if op.type == "Placeholder" and hasattr(op.graph, "outer_graph"):
      continue  # a function body's argument
    if op.type not in TPU_ONLY_OPS:
      candidates = xla_kernels.get(op.type, [])
      if not candidates:
        problems.append(f"{op.name} ({op.type}): no XLA kernel")
      elif not any(_satisfies(node_def, k) for k in candidates):
        problems.append(f"{op.name} ({op.type}): no XLA kernel for its dtypes")
    for t in op.outputs:
      if t.dtype.base_dtype.name in NON_TPU_DTYPES:
        problems.append(f"{op.name} ({op.type}): outputs {t.dtype.name}")
    if "CPU" in op.device.upper():
      problems.append(f"{op.name} ({op.type}): placed on {op.device}")
    if "_xla_outside_compilation" in node_def.attr:
      problems.append(f"{op.name} ({op.type}): outside compilation")
  return problems


def layout_bytes_per_core(model_file: str, bindings: Sequence[str], mesh_shape: str,
                          layout: str, vocab_size: int = table9.VOCAB_SIZE) -> Dict[str, int]:
  """One core's {"parameters", "optimizer"} float32 bytes from mtf shapes and the layout alone.

  No lowering: table9's mtf graph (seconds even for Switch-C) and, per variable, its size
  over the mesh splits of its dimensions. Optimizer bytes are Adafactor's slots for each
  variable, shaped by the gin-bound optimizer's own ``_factored_dims`` (vr and vc without one
  of the two largest dimensions each, else a full v; m when beta1 is set), laid out like any
  variable; another optimizer gives None. For models whose TPU graph is too big to build
  here; checked against the built graph's slice variables (tests/test_tpu_graphs.py).
  """
  import copy

  import mesh_tensorflow as mtf
  from mesh_tensorflow import optimize

  import gin
  parse_gin([model_file], bindings)
  lengths = gin.query_parameter("utils.run.sequence_length")
  # Only the optimizer: copying the whole of utils.run's bindings would evaluate its mesh
  # shape, which without a mesh file is @tpu_mesh_shape() and needs a TPU topology.
  optimizer_fn = copy.deepcopy(
      gin.get_bindings("utils.run", resolve_references=False).get("optimizer"))
  mtf_graph, _ = table9.build_graph(model_file, bindings, batch=1,
                                    inputs_length=lengths["inputs"],
                                    targets_length=lengths["targets"], vocab_size=vocab_size)

  def size_per_core(name: str, shape) -> int:
    size = 1
    for dim in shape.dims:
      split = mtf.tensor_dim_to_mesh_dim_size(layout, mesh_shape, dim)
      if dim.size % split:
        raise ValueError(f"{name}: {dim} does not split {split} ways")
      size *= dim.size // split
    return size * 4

  with gin.config_scope(""):
    optimizer = optimizer_fn() if callable(optimizer_fn) else None
  if not isinstance(optimizer, optimize.AdafactorOptimizer):
    optimizer = None
  total = {"parameters": 0, "optimizer": 0 if optimizer else None}
  for variable in mtf_graph.all_variables:
    shape = variable.outputs[0].shape
    total["parameters"] += size_per_core(variable.name, shape)
    if optimizer is None or not variable.trainable:
      continue
    factored = optimizer._factored_dims(shape)  # noqa: SLF001
    slots = [shape - factored[0], shape - factored[1]] if factored else [shape]
    if optimizer._beta1:  # noqa: SLF001
      slots.append(shape)
    total["optimizer"] += sum(size_per_core(variable.name, s) for s in slots)
  return total


# ---- the plan -----------------------------------------------------------------------------

def plan(model_file: str, mesh_file: str, bindings: Sequence[str] = (),
         paper: str = "", vocab_size: int = table9.VOCAB_SIZE,
         xla_kernels: Optional[Dict[str, list]] = None) -> dict:
  """Builds one model's TPU step; returns its per-core report as a JSON-ready dict."""
  import gin
  start = time.time()
  step = build_tpu_train_step([model_file, mesh_file], bindings, vocab_size=vocab_size)
  not_for_tpu = ops_not_for_tpu(step, xla_kernels or xla_compilable_kernels())
  variables = per_core_variable_bytes(step)
  a2a = all_to_all_by_layer(step)
  switch_layers = len(a2a)
  capacity_factor = None
  for layer in ("mtf_switch.SwitchFFN", "mtf_switch.MoEFFN"):
    try:
      capacity_factor = gin.query_parameter(f"{layer}.capacity_factor_train")
      break
    except ValueError:
      pass
  try:
    num_experts = gin.query_parameter("mtf_switch.SwitchFFN.num_experts")
  except ValueError:
    num_experts = None
  try:
    num_layers = gin.query_parameter("%num_layers")
  except ValueError:
    num_layers = None
  per_core_total = variables["parameters"] + variables["optimizer"]
  report = {
      "model": model_file, "mesh": mesh_file, "bindings": list(bindings),
      "mesh_shape": step.mesh_shape, "layout_rules": step.layout_rules,
      "cores": step.num_cores, "num_experts": num_experts, "num_layers": num_layers,
      "batch_size": step.batch_size, "sequence_length": step.sequence_length,
      "capacity_factor_train": capacity_factor, "num_microbatches": step.num_microbatches,
      "param_bytes_per_core": variables["parameters"],
      "optimizer_bytes_per_core": variables["optimizer"],
      "hbm_fraction_params_and_optimizer": per_core_total / V3_HBM_BYTES_PER_CORE,
      "largest_activations": [
          {"op": n, "shape": s, "dtype": d, "bytes": b} for n, s, d, b in largest_activations(step)],
      "collectives": collective_counts(step),
      "layers_with_all_to_all": switch_layers,
      "all_to_all_per_layer": a2a,
      "ops_not_for_tpu": not_for_tpu[:20],
      "graph_ops": len(step.graph.get_operations()),
      "tpu_computation_ops": len(step.replicate_ops),
      "build_seconds": round(time.time() - start, 1),
      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "paper": paper,
  }
  return report


# ---- figures against the number of layers ------------------------------------------------
# Full-depth Switch-C on 2048 cores is too big to build here (one slice variable per core for
# every variable: millions of TF ops). Every per-core figure is affine in num_layers, which
# layer_fit checks exactly on builds at three or more depths; extrapolate then gives the
# figures at another depth from a measured build and per-layer increments.

# Per-core figures that grow with the layers; the rest of the report's per-core figures (the
# largest tensors, each Switch layer's all-to-all, microbatches) must not change with them.
LAYER_SCALARS = ("param_bytes_per_core", "optimizer_bytes_per_core", "layers_with_all_to_all")
_BLOCK = re.compile(r"block_\d+")


def _scalars(report: dict) -> Dict[str, int]:
  found = {name: report[name] for name in LAYER_SCALARS}
  found.update({f"collectives.{k}": v for k, v in report["collectives"].items()})
  return found


def _per_layer_constants(report: dict) -> dict:
  """What a report holds once per Switch layer kind, and the sizes of its largest tensors."""
  kinds = {}
  for scope, counts in report["all_to_all_per_layer"].items():
    value = [counts["ops"], counts["bytes"], [shape for _, shape in counts["operands"]]]
    kind = _BLOCK.sub("block_*", scope)
    if kinds.setdefault(kind, value) != value:
      raise ValueError(f"{scope}: all-to-all {value} differs from another {kind}'s {kinds[kind]}")
  return {
      "num_microbatches": report["num_microbatches"],
      "all_to_all_per_layer_kind": kinds,
      # Sizes only: equal-sized tensors of other blocks tie with these and may take a place.
      "largest_activation_bytes": [a["bytes"] for a in report["largest_activations"]],
  }


def layer_fit(reports: Dict[int, dict]) -> dict:
  """Every per-core figure of reports (built at those num_layers) as a + b * num_layers.

  Raises unless the fit is exact at every depth (three depths at least, so that two points
  do not fit trivially) and the per-layer constants are the same at every depth.
  """
  depths = sorted(reports)
  if len(depths) < 3:
    raise ValueError(f"layer_fit: {len(depths)} depths {depths}; give three or more")
  scalars = {depth: _scalars(reports[depth]) for depth in depths}
  affine = {}
  first, second = depths[:2]
  for name, y0 in scalars[first].items():
    slope, rest = divmod(scalars[second][name] - y0, second - first)
    if rest:
      raise ValueError(f"{name}: {y0} at {first} layers, {scalars[second][name]} at {second}: "
                       "not a whole number per layer")
    offset = y0 - slope * first
    for depth in depths:
      if offset + slope * depth != scalars[depth][name]:
        raise ValueError(f"{name} is not affine in the layers: {offset} + {slope} x {depth} != "
                         f"{scalars[depth][name]} (at {depth} layers)")
    affine[name] = [offset, slope]
  constants = _per_layer_constants(reports[first])
  for depth in depths[1:]:
    other = _per_layer_constants(reports[depth])
    for key, value in constants.items():
      if other[key] != value:
        raise ValueError(f"{key} changes with the layers: {value} at {first}, "
                         f"{other[key]} at {depth}")
  return {"layers": depths, "mesh_shape": reports[first]["mesh_shape"], "affine": affine,
          "constants": constants}


def extrapolate(report: dict, layers: int, increments: Dict[str, int],
                largest_checked: bool = True) -> dict:
  """report (built at report["num_layers"]) carried to `layers` layers: figure + n x increment.

  increments: {LAYER_SCALARS name or "collectives.<op>": per-layer increment}. Each Switch
  layer kind's all-to-all entry is repeated for the new blocks. Graph size, build time and
  RSS are not carried over (they are not per-core figures); the result says what it is.
  largest_checked: whether layer_fit saw the largest tensors stay put on this mesh; if not,
  they are left out. Mesh-TF's autostack combines same-shaped variables into one slice
  variable of up to 2**27 elements (``Graph.rewrite_stack_variables``), so with more layers a
  stacked tensor can outgrow what the shallow build's largest tensors were.
  """
  measured_layers = report["num_layers"]
  extra = layers - measured_layers
  out = dict(report)
  missing = set(_scalars(report)) - set(increments)
  if missing:
    raise ValueError(f"extrapolate: no per-layer increment for {sorted(missing)}")
  for name in LAYER_SCALARS:
    out[name] = report[name] + extra * increments[name]
  out["collectives"] = {k: v + extra * increments[f"collectives.{k}"]
                        for k, v in report["collectives"].items()}
  out["hbm_fraction_params_and_optimizer"] = (
      (out["param_bytes_per_core"] + out["optimizer_bytes_per_core"]) / V3_HBM_BYTES_PER_CORE)
  kinds = {}
  for scope, counts in report["all_to_all_per_layer"].items():
    kinds.setdefault(_BLOCK.sub("block_*", scope), counts)
  out["all_to_all_per_layer"] = {
      kind.replace("block_*", f"block_{block:03d}"): counts
      for kind, counts in sorted(kinds.items()) for block in range(layers)}
  if len(out["all_to_all_per_layer"]) != out["layers_with_all_to_all"]:
    raise ValueError("extrapolate: the layer kinds do not give layers_with_all_to_all")
  for name in ("graph_ops", "tpu_computation_ops", "build_seconds", "peak_rss_bytes"):
    out[name] = None
  if not largest_checked:
    out["largest_activations"] = []
  out["num_layers"] = layers
  out["extrapolated"] = {"from_layers": measured_layers, "increments": dict(increments),
                         "largest_activations": "checked" if largest_checked else
                         "not extrapolated (not checked on this mesh)"}
  return out


def layout_increments(model_file: str, bindings: Sequence[str], mesh_shape: str, layout: str,
                      layers: int = 1, vocab_size: int = table9.VOCAB_SIZE) -> Dict[str, int]:
  """Per-core parameter and optimizer bytes one more layer adds, from the layout arithmetic."""
  sizes = [layout_bytes_per_core(model_file, list(bindings) + [f"num_layers = {n}"],
                                 mesh_shape, layout, vocab_size)
           for n in (layers, layers + 1)]
  return {"param_bytes_per_core": sizes[1]["parameters"] - sizes[0]["parameters"],
          "optimizer_bytes_per_core": sizes[1]["optimizer"] - sizes[0]["optimizer"]}


def _gib(value: float) -> str:
  return f"{value / 2**30:.2f} GiB"


def _mib(value: float) -> str:
  return f"{value / 2**20:.1f} MiB"


def _build_text(report: dict) -> str:
  if report.get("extrapolated"):
    return f"extrapolated from {report['extrapolated']['from_layers']} layers"
  return str(report["build_seconds"])


def markdown(reports: List[dict]) -> str:
  import mesh_tensorflow as mtf
  lines = [
      "| model | mesh | cores | experts/core | params/core | Adafactor/core | of 16 GiB | "
      "largest activation | all-to-all per Switch layer per step | collectives "
      "(a2a / all-reduce / permute) | build s | paper (Section 5) |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in reports:
    experts_per_core = "-"
    if r["num_experts"]:
      split = mtf.tensor_dim_to_mesh_dim_size(r["layout_rules"], r["mesh_shape"],
                                              mtf.Dimension("experts", r["num_experts"]))
      experts_per_core = f"{r['num_experts'] / split:g}"
    a2a = r["all_to_all_per_layer"]
    parts = []
    for stack in ("encoder", "decoder"):
      layers = [v for k, v in a2a.items() if k.startswith(stack)]
      if layers:
        parts.append(f"{stack[:3]} {max(v['ops'] for v in layers)} ops "
                     f"{_mib(max(v['bytes'] for v in layers))}")
    a2a_text = ", ".join(parts) or "none"
    act = r["largest_activations"][0] if r["largest_activations"] else None
    act_text = f"{_mib(act['bytes'])} {act['shape']} {act['dtype']}" if act else "-"
    c = r["collectives"]
    lines.append(
        f"| {os.path.basename(r['model'])} | {os.path.basename(r['mesh'])} "
        f"`{r['mesh_shape']}` | {r['cores']} | {experts_per_core} | "
        f"{_gib(r['param_bytes_per_core'])} | {_gib(r['optimizer_bytes_per_core'])} | "
        f"{100 * r['hbm_fraction_params_and_optimizer']:.0f}% | {act_text} | {a2a_text} | "
        f"{c['AllToAll']} / {c['CrossReplicaSum']} / {c['CollectivePermute']} | "
        f"{_build_text(r)} | {r['paper']} |")
  return "\n".join(lines)


def assumptions(reports: List[dict]) -> str:
  lines = ["Assumed sizes (from the gin files):"]
  for r in reports:
    lines.append(
        f"- {os.path.basename(r['model'])}: batch {r['batch_size']} sequences, lengths "
        f"{r['sequence_length']}, capacity factor {r['capacity_factor_train']}, "
        f"{r['num_microbatches']} microbatch(es) per step, vocabulary {table9.VOCAB_SIZE}; "
        "bfloat16 activations, float32 parameters (mesh-tf defaults).")
  return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
  parser.add_argument("--models", default="",
                      help="comma-separated model names (e.g. switch_base,switch_c); "
                           "default: every paper model with its mesh")
  parser.add_argument("--mesh", default="", help="a mesh gin file for every model instead")
  parser.add_argument("--gin_param", action="append", default=[],
                      help="extra gin bindings for every model")
  parser.add_argument("--json", action="store_true", help="one JSON line per model only")
  parser.add_argument("--layout_only", action="store_true",
                      help="only per-core parameter and Adafactor bytes from the layout "
                           "(no TPU graph)")
  parser.add_argument("--layers", default="",
                      help="comma-separated num_layers values (each stack), one build each")
  parser.add_argument("--extrapolate_to", type=int, default=0,
                      help="with three or more --layers: check that every per-core figure is "
                           "affine in the layers (and that the parameter and optimizer "
                           "increments are the layout's), then print the figures at this "
                           "depth, marked extrapolated; with one --layers: take the "
                           "increments from --increments_from")
  parser.add_argument("--increments_from", default="",
                      help="a JSON file of layer_fit's result (a line --extrapolate_to "
                           "printed at a smaller mesh): its collective-count increments; "
                           "parameter and optimizer increments come from the layout")
  return parser


def _extrapolated(reports: List[dict], target: int, increments_from: str,
                  model_file: str, bindings: Sequence[str]) -> List[dict]:
  """The lines --extrapolate_to prints: the layer fit (if several depths) and the report."""
  by_depth = {r["num_layers"]: r for r in reports}
  report = by_depth[min(by_depth)]
  layout = (model_file, bindings, report["mesh_shape"], report["layout_rules"])
  from_layout = layout_increments(*layout, layers=report["num_layers"])
  lines = []
  if len(by_depth) > 1:
    fit = layer_fit(by_depth)
    fitted = {name: slope for name, (_, slope) in fit["affine"].items()}
    for name, value in from_layout.items():
      if fitted[name] != value:
        raise ValueError(f"{name}: {fitted[name]} per layer in the builds, {value} from "
                         "the layout")
    fit["matches_layout_increments"] = from_layout
    lines.append({"layer_fit": fit})
  else:
    if not increments_from:
      raise SystemExit("--extrapolate_to with one --layers value needs --increments_from")
    with open(increments_from) as f:
      fit = json.load(f)["layer_fit"]
    fitted = {name: slope for name, (_, slope) in fit["affine"].items()}
    fitted.update(from_layout)
  lines.append(extrapolate(report, target, fitted, largest_checked=len(by_depth) > 1))
  return lines


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  wanted = [m.strip() for m in args.models.split(",") if m.strip()]
  plans = [(m, args.mesh or mesh, paper) for m, mesh, paper in PAPER_PLANS
           if not wanted or os.path.basename(m)[:-4] in wanted]
  for name in wanted:
    if not any(os.path.basename(m)[:-4] == name for m, _, _ in plans):
      if not args.mesh:
        raise SystemExit(f"--models {name}: not a paper model here; give --mesh for it")
      plans.append((f"models/{name}.gin", args.mesh, ""))
  depths = [int(n) for n in args.layers.split(",") if n.strip()]
  if args.extrapolate_to and not depths:
    raise SystemExit("--extrapolate_to needs --layers")
  reports = []
  for model_file, mesh_file, paper in plans:
    bindings = ([] if args.mesh else PLAN_BINDINGS.get(model_file, [])) + args.gin_param
    if args.layout_only:
      for depth in depths or [None]:
        these = bindings + ([f"num_layers = {depth}"] if depth else [])
        parse_gin([model_file, mesh_file], these)
        run_args = _run_bindings()
        mesh_shape, layout = run_args["mesh_shape"], run_args["layout_rules"]
        sizes = layout_bytes_per_core(model_file, these, mesh_shape, layout)
        params = sizes["parameters"]
        print(json.dumps({"model": model_file, "mesh_shape": mesh_shape, "layout_rules": layout,
                          "num_layers": depth, "param_bytes_per_core": params,
                          "optimizer_bytes_per_core": sizes["optimizer"],
                          "param_gib_per_core": params / 2**30,
                          "of_v3_hbm": params / V3_HBM_BYTES_PER_CORE}), flush=True)
      continue
    built = []
    for depth in depths or [None]:
      these = bindings + ([f"num_layers = {depth}"] if depth else [])
      report = plan(model_file, mesh_file, these, paper)
      built.append(report)
      print(json.dumps(report), flush=True)
    if args.extrapolate_to:
      for line in _extrapolated(built, args.extrapolate_to, args.increments_from,
                                model_file, bindings):
        print(json.dumps(line), flush=True)
        if "extrapolated" in line:
          built.append(line)
    reports.extend(built)
  if not args.json and reports:
    print()
    print(markdown(reports))
    print()
    print(assumptions(reports))
    print(f"\nv3 HBM per core: {_gib(V3_HBM_BYTES_PER_CORE)}. Peak RSS of this process: "
          f"{_gib(max(r['peak_rss_bytes'] or 0 for r in reports))}.")
  return 0
