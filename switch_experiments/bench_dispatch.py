"""Forward + backward time of one Switch layer: einsum path, gather path, moe.py, dense FFN.

For each configuration (experts, capacity factor, group size) the variants are built side by
side in one process, each in its own graph and session, warmed up, and then timed in rounds:
every round runs every variant once, in an order that rotates from round to round, so that
machine load (this is a shared 2-core box) hits all variants alike. Reported per variant:
the median step time over the rounds, the spread (min..max), the median of the per-round
ratios to the dense FFN run in the same round, and the step's working memory.

Variants (same tokens, d_model, d_ff; training graph; loss = mean square of the output +
aux loss; gradients with respect to the input and every weight; no optimizer update):
  gather          mtf_switch.SwitchFFN, dispatch_path="gather" (index dispatch/combine and
                  the expert FFN on filled slots only)
  gather_untuned  the same built as for any matmul kernel, without the tuning for oneDNN's
                  AVX2 sgemm that gather gets on such a machine (mtf_switch.cpu_gemm: padded
                  weights in the forward, direct input-gradient products). Not in the
                  default set: --variants gather,gather_untuned,dense
  gather_static   the same but skip_empty_slots=False (every capacity slot computed, as
                  batched matmuls over the slots: batch_expert_slots)
  gather_static_mesh_tf  the same with batch_expert_slots=False: the expert FFN as Mesh-TF's
                  einsums over every slot
  einsum          mtf_switch.SwitchFFN, dispatch_path="einsum" (the paper's one-hot einsums;
                  the expert FFN batched over the slots)
  einsum_mesh_tf  the same with batch_expert_slots=False: the expert FFN as Mesh-TF's einsums
  moe_py          mesh_tensorflow.transformer.moe.transformer_moe_layer_v1, moe_gating="switch"
  dense           DenseReluDense with d_ff = the expert d_ff: the same FLOPs per token as
                  top-1 routing at capacity 1.0, no router, no dispatch: the bar.

Memory, measured on one extra step of each variant, two ways (weights of all live variants
are resident before the step and excluded from both):
  traced     replay of the allocation records of a fully traced step (RunOptions
             FULL_TRACE): peak bytes the step's ops held at once. Works with any allocator.
  allocator  tf.config.experimental.get_memory_info("CPU:0") peak minus the bytes in use
             before the step. Only the oneDNN allocator keeps these statistics: with oneDNN off
             (TF_ENABLE_ONEDNN_OPTS=0, or a CPU on which TensorFlow leaves it off) TensorFlow
             raises "Allocator stats not available", and the column says n/a and why.

Profile (``--profile VARIANT``): instead of timing, trace a few steps of one variant at each
configuration and sum the traced op times per layer part (the mtf_switch function that built
each op, forward and backward apart), per op type and per op name scope, with the GFLOP/s of
the matmuls (FLOPs from the run-time shapes). It runs one op at a time by default
(--profile_inter_op_threads 1), so the op times add up to the step's; with more inter-op
threads they overlap, can exceed the wall time, and ops that overlap both look slower.

Prints a markdown table and one JSON line per configuration, then a JSON summary line.

TensorFlow runs as ``switch_mesh_transformer`` runs it: oneDNN on unless TF_ENABLE_ONEDNN_OPTS
is set (switch_cli). At 128 experts that matters beyond the kernels: TensorFlow's default CPU
allocator hands the layer's 1 GiB of fresh weight gradients to malloc every step, and oneDNN's
allocator keeps and reuses them (docs/performance.md).

  PYTHONPATH=. python tools/bench_dispatch.py              # the default set (~10 min)
  PYTHONPATH=. python tools/bench_dispatch.py --grid full  # every combination (long)
  PYTHONPATH=. python tools/bench_dispatch.py --quick      # the two target configurations only
  PYTHONPATH=. python tools/bench_dispatch.py --quick --profile gather   # where gather's time goes
"""

import argparse
import collections
import contextlib
import dataclasses
import itertools
import json
import os
import platform
import re
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The command's process settings before TensorFlow is imported: oneDNN's kernels and caching
# allocator, as switch_mesh_transformer runs the layer (TF_ENABLE_ONEDNN_OPTS=0 turns them off).
import switch_cli  # noqa: E402,F401
import mtf_switch  # noqa: E402,F401  (compat repair before mesh_tensorflow)
import mesh_tensorflow as mtf  # noqa: E402
import tensorflow as tf2  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from mesh_tensorflow.transformer import moe  # noqa: E402

from mtf_switch import cpu_gemm, layers  # noqa: E402

from switch_experiments import profile_train_step  # its FLOP arithmetic


VARIANTS = ("gather", "gather_static", "gather_static_mesh_tf", "einsum", "einsum_mesh_tf",
            "moe_py", "dense", "gather_untuned")
DEFAULT_VARIANTS = VARIANTS[:-1]


@dataclasses.dataclass(frozen=True)
class Config:
  experts: int
  capacity_factor: float
  group_size: int


@dataclasses.dataclass(frozen=True)
class Sizes:
  tokens: int = 8192
  length: int = 512
  d_model: int = 512
  d_ff: int = 2048


def default_configs():
  """One-at-a-time sweeps around the target point (32 experts, 1.25, 1024), plus 128 x 4096."""
  center = Config(32, 1.25, 1024)
  configs = [center, Config(8, 1.25, 1024), Config(128, 1.25, 1024),
             Config(32, 1.0, 1024), Config(32, 2.0, 1024),
             Config(32, 1.25, 512), Config(32, 1.25, 4096), Config(128, 1.25, 4096)]
  return configs


def full_grid():
  return [Config(e, c, g) for e, c, g in itertools.product((8, 32, 128), (1.0, 1.25, 2.0),
                                                           (512, 1024, 4096))]


def _layer_output(variant, x, config, sizes):
  """(y, aux_loss) of one variant on x [batch, length, d_model]."""
  f32 = mtf.VariableDType(tf.float32)
  d_model_dim = x.shape.dims[-1]
  if variant in ("gather", "gather_untuned", "gather_static", "gather_static_mesh_tf", "einsum",
                 "einsum_mesh_tf"):
    layer = layers.SwitchFFN(
        num_experts=config.experts, hidden_size=sizes.d_ff, group_size=config.group_size,
        capacity_factor_train=config.capacity_factor, summaries=False,
        dispatch_path="einsum" if variant.startswith("einsum") else "gather",
        skip_empty_slots=variant in ("gather", "gather_untuned"),
        batch_expert_slots=not variant.endswith("_mesh_tf"))
    out = layer.apply(x, train=True, variable_dtype=f32)
    return out.outputs, out.aux_loss
  if variant == "moe_py":
    hparams = moe.MoE1D(
        num_experts=config.experts, hidden_size=sizes.d_ff, group_size=config.group_size,
        capacity_factor_train=config.capacity_factor, moe_gating="switch",
        activation="relu")._hparams
    ones = mtf.ones(x.mesh, x.shape.dims[:-1], tf.float32)
    return moe.transformer_moe_layer_v1(x, d_model_dim, hparams, True, f32, layout="",
                                        mesh_shape="", nonpadding=ones, activation="relu")
  if variant == "dense":
    hidden = mtf.layers.dense_product(
        x, reduced_dims=[d_model_dim], new_dims=[mtf.Dimension("d_ff", sizes.d_ff)],
        activation_functions=["relu"], use_bias=False, variable_dtype=f32, name="wi")
    y = mtf.layers.dense(hidden, d_model_dim, reduced_dims=hidden.shape.dims[-1:],
                         use_bias=False, variable_dtype=f32, name="wo")
    return y, mtf.zeros(x.mesh, [], tf.float32)
  raise ValueError(f"unknown variant {variant!r}")


def traced_peak_bytes(run_metadata):
  """Peak bytes that a traced run's ops held at once, from its allocation records.

  Every op's allocations and their frees (negative records) are replayed in time order; the
  peak of the running sum is the step's working memory: what was resident before the step
  (the weights) is not in it. None if the trace holds no allocation record at all. At equal
  times frees go first, so the figure is a lower bound when events coincide.
  """
  records = [(record.alloc_micros, record.alloc_bytes)
             for device in run_metadata.step_stats.dev_stats
             for node in device.node_stats
             for memory in node.memory
             for record in memory.allocation_records]
  if not records:
    return None
  in_use = peak = 0
  for _, size in sorted(records):
    in_use += size
    peak = max(peak, in_use)
  return peak


@dataclasses.dataclass(frozen=True)
class Memory:
  """A step's working memory, two ways.

  Attributes:
    traced_bytes: from the allocation records of a fully traced step (``traced_peak_bytes``):
      available with every allocator; counts what the ops allocate through TensorFlow
      (not, e.g., oneDNN's private scratch buffers). None only if the trace has no records.
    allocator_bytes: the CPU allocator's own peak minus its bytes in use before the step
      (tf.config.experimental.get_memory_info("CPU:0")), or None where the allocator keeps
      no statistics: TensorFlow's default CPU allocator does not; the oneDNN allocator, used
      when oneDNN is on, does.
    allocator_note: why allocator_bytes is None (the error TensorFlow raised).
  """

  traced_bytes: object
  allocator_bytes: object
  allocator_note: object = None


def tuning() -> str:
  """Whether the gather variants are built for oneDNN's AVX2 sgemm (mtf_switch.cpu_gemm): the
  layer's ratios differ between machines that are and machines that are not."""
  built = cpu_gemm.onednn_avx2_sgemm()
  return f"built for oneDNN's AVX2 sgemm: {'yes' if built else 'no'}"


def cpu_allocator() -> str:
  """Which CPU allocator TensorFlow uses here, and whether it caches freed memory.

  TensorFlow's default CPU allocator hands every large request to malloc, so a fresh
  multi-megabyte tensor (such as an expert layer's weight gradients, 1 GiB per step at 128
  experts) is new pages from the kernel each step; oneDNN's allocator and the BFC allocator
  (TF_CPU_ALLOCATOR_USE_BFC=true) keep and reuse freed memory.
  """
  if os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() in ("1", "true"):
    return "BFC (TF_CPU_ALLOCATOR_USE_BFC; caching)"
  if onednn_enabled() == "on":
    return "oneDNN's (caching)"
  return "default (no caching)"


def onednn_enabled() -> str:
  """"on", "off" or "unknown": whether TensorFlow runs its oneDNN CPU kernels (and allocator)."""
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel
    return "on" if _pywrap_util_port.IsMklEnabled() else "off"
  except (ImportError, AttributeError):
    return "unknown"


FETCHES = ("slices", "sums")
FETCH_SCOPE = "bench_fetch"  # the name scope of the fetch's own ops


def fetch_of(gradients, loss, fetch: str):
  """The scalar a step fetches: it needs every gradient, so Grappler prunes none of them.

  "slices" (the default): the sum of each gradient's first entry along its last axis
  (t[..., 0]): every expert's and every row's result is needed, and the extra reads are one
  element in d_ff or d_model. "sums": each gradient summed whole, which also reads every
  gradient once after the step (1 GiB of weight gradients at 128 experts of 512 x 2048): an
  optimizer reads them too, but it is not the layer's work, and it costs the variants with
  more parameters more. (A tf.group of the gradients would let Grappler prune the work.)
  """
  if fetch not in FETCHES:
    raise ValueError(f"fetch must be one of {FETCHES}, got {fetch!r}")
  with tf.name_scope(FETCH_SCOPE):
    if fetch == "sums":
      parts = [tf.reduce_sum(tf.cast(t, tf.float32)) for t in gradients]
    else:
      parts = [tf.reduce_sum(tf.cast(t[..., 0], tf.float32)) for t in gradients]
    return tf.add_n(parts + [loss])


class Step:
  """One variant's forward + backward graph, in its own session.

  The input is a variable (normal noise, fixed seed), so that no step times the generation
  of 16 MiB of random numbers (the same cost in every variant, which would pull every ratio
  towards 1); routing is then the same from step to step.
  """

  def __init__(self, variant, config, sizes, threads, inter_op_threads=None, fetch="slices"):
    self.variant = variant
    self.graph = tf.Graph()
    # Mesh-TF builds the TensorFlow ops at lowering, so the whole graph is built inside.
    tuning = (cpu_gemm.assume_onednn_avx2_sgemm(False) if variant == "gather_untuned"
              else contextlib.nullcontext())
    with self.graph.as_default(), tuning:
      tf.set_random_seed(0)
      mesh = mtf.Mesh(mtf.Graph(), "mesh")
      dims = [mtf.Dimension("batch", sizes.tokens // sizes.length),
              mtf.Dimension("length", sizes.length), mtf.Dimension("d_model", sizes.d_model)]
      x_tf = tf.Variable(tf.random.normal([d.size for d in dims], seed=1), trainable=False,
                         name="bench_input")
      x = mtf.import_tf_tensor(mesh, x_tf.read_value(), mtf.Shape(dims))
      y, aux = _layer_output(self.variant, x, config, sizes)
      loss = mtf.reduce_mean(mtf.square(y)) + mtf.cast(aux, tf.float32)
      variables = [v.outputs[0] for v in mesh.graph.trainable_variables]
      grads = mtf.gradients([loss], [x] + variables)
      mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(mtf.Shape([]), "", ["/cpu:0"])
      lowering = mtf.Lowering(mesh.graph, {mesh: mesh_impl})
      exported = [lowering.export_to_tf_tensor(g) for g in grads if g is not None]
      self.fetch = fetch_of(exported, lowering.export_to_tf_tensor(loss), fetch)
      config_proto = tf.ConfigProto(
          intra_op_parallelism_threads=threads,
          inter_op_parallelism_threads=threads if inter_op_threads is None else inter_op_threads)
      self.session = tf.Session(graph=self.graph, config=config_proto)
      self.session.run(tf.global_variables_initializer())
      self.session.run(lowering.copy_masters_to_slices())

  def run(self) -> float:
    """Seconds of one step; ``minor_page_faults`` holds the step's fresh pages."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    self.session.run(self.fetch)
    seconds = time.perf_counter() - start
    # Memory the process touches for the first time (the allocator did not keep it): a fault
    # per page (4 KiB; fewer with transparent huge pages, which TensorFlow does not ask for),
    # what an allocator without a cache pays for 1 GiB of weight gradients every step.
    self.minor_page_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return seconds

  def working_memory(self) -> "Memory":
    """The working memory of one extra step, measured both ways (see ``Memory``)."""
    allocator_bytes, note = None, None
    try:
      tf2.config.experimental.reset_memory_stats("CPU:0")
      before = tf2.config.experimental.get_memory_info("CPU:0")["current"]
      self.run()
      allocator_bytes = max(0, tf2.config.experimental.get_memory_info("CPU:0")["peak"] - before)
    except (ValueError, RuntimeError) as error:
      note = f"{type(error).__name__}: {error}"
    metadata = tf.RunMetadata()
    self.session.run(self.fetch, options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE),
                     run_metadata=metadata)
    return Memory(traced_bytes=traced_peak_bytes(metadata), allocator_bytes=allocator_bytes,
                  allocator_note=note)

  def close(self):
    self.session.close()


def measure(config, sizes, variants, rounds, threads, fetch="slices"):
  steps = [Step(v, config, sizes, threads, fetch=fetch) for v in variants]
  times = {s.variant: [] for s in steps}
  ratios = {s.variant: [] for s in steps}
  faults = {s.variant: [] for s in steps}
  try:
    for step in steps:  # warm-up: graph optimisation and first allocations
      step.run()
    for r in range(rounds):
      order = steps[r % len(steps):] + steps[:r % len(steps)]
      this_round = {}
      for step in order:
        this_round[step.variant] = step.run()
        faults[step.variant].append(step.minor_page_faults)
      for variant, seconds in this_round.items():
        times[variant].append(seconds)
        if "dense" in this_round:
          ratios[variant].append(seconds / this_round["dense"])
    memory = {step.variant: step.working_memory() for step in steps}
  finally:
    for step in steps:
      step.close()
  result = {}
  for variant in variants:
    result[variant] = {
        "median_s": statistics.median(times[variant]),
        "min_s": min(times[variant]), "max_s": max(times[variant]),
        "ratio_to_dense": statistics.median(ratios[variant]) if ratios[variant] else None,
        "minor_page_faults_per_step": statistics.median(faults[variant]),
        "working_memory_mb": _mb(memory[variant].traced_bytes),
        "allocator_working_memory_mb": _mb(memory[variant].allocator_bytes),
        "allocator_note": memory[variant].allocator_note,
    }
  return result


def _load_average() -> str:
  try:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
  except OSError:
    return "unknown"


def _mb(size):
  return None if size is None else round(size / 2**20, 1)


def _fmt_mb(value):
  return "n/a" if value is None else f"{value}"


def _fmt_ratio(value):
  return "-" if value is None else f"{value:.2f}"


# --- where the time goes (--profile VARIANT) -----------------------------------------------

# mtf_switch helpers that only wrap an op of their caller: an op they build belongs to the
# caller's part.
_TRANSPARENT_HELPERS = frozenset({"materialized", "unsplit_dim", "to_expert_major",
                                  "to_group_major"})
OUTSIDE_LAYER = "(outside the layer: input, loss, gradient export)"


class OpBuilders:
  """Records, for every Mesh-TF operation created inside it, which mtf_switch function built it.

  The label is "module: Function" of the outermost mtf_switch frame that is not the layer
  itself (layers.py only strings the stages together), so it names a stage of the layer:
  ``routing: Router.__call__ > Router._compute_router_probabilities``,
  ``dispatch: gather_dispatch``, ``packed_experts: packed_expert_ffn``. A ``__call__`` frame
  gets its callee appended (the router's stages). Ops built in layers.py itself keep that
  label; ops built outside mtf_switch (moe.py, the dense FFN, the benchmark) are labelled by
  their outermost frame outside the benchmark's own code (``mesh_tensorflow ...``).
  """

  def __init__(self):
    self.labels = {}  # mtf operation name -> label
    self._original_init = None

  def __enter__(self):
    original = self._original_init = mtf.Operation.__init__
    builders = self

    def recording_init(op, *args, **kwargs):
      original(op, *args, **kwargs)
      builders.labels[op.name] = builder_label(sys._getframe(1))

    mtf.Operation.__init__ = recording_init
    return self

  def __exit__(self, *exc):
    mtf.Operation.__init__ = self._original_init
    return False


_PACKAGE_DIR = os.path.dirname(os.path.abspath(mtf_switch.__file__)) + os.sep


def builder_label(frame) -> str:
  """The label ``OpBuilders`` gives an op created with ``frame`` innermost (see there)."""
  chain = []  # (module, qualified name), outermost first
  outer_library = None
  while frame is not None:
    path = os.path.abspath(frame.f_code.co_filename)
    if path.startswith(_PACKAGE_DIR):
      chain.append((os.path.basename(path)[:-3], frame.f_code.co_qualname))
    elif "mesh_tensorflow" in path and os.path.basename(path) != "ops.py":
      # moe.py or mtf.layers (the moe_py and dense variants); ops.py is every op's maker.
      outer_library = (f"mesh_tensorflow {os.path.basename(path)[:-3]}: "
                       f"{frame.f_code.co_qualname}")
    frame = frame.f_back
  chain.reverse()
  if not chain:
    return outer_library or OUTSIDE_LAYER
  stages = [(m, f) for m, f in chain
            if m != "layers" and f.split(".")[-1] not in _TRANSPARENT_HELPERS]
  if not stages:
    module, function = chain[-1]
    return f"{module}: {function}"
  module, function = stages[0]
  label = f"{module}: {function}"
  if function.endswith("__call__") and len(stages) > 1:
    label += " > " + stages[1][1]
  return label


def forward_op_of(node_name: str, op_names) -> tuple:
  """(mtf operation name, backward?) that a lowered TensorFlow node belongs to.

  Mesh-TF lowers each operation under its name (``tf.name_scope(op.name)``) and names each
  gradient operation "<forward op>/gradients/...", so the forward op is the longest prefix of
  the node's name (before any "/gradients/") that names an operation. (None, False) if none.
  """
  backward = "/gradients/" in node_name
  head = node_name.split("/gradients/")[0] if backward else node_name
  parts = head.split("/")
  for end in range(len(parts), 0, -1):
    candidate = "/".join(parts[:end])
    if candidate in op_names:
      return candidate, backward
  return None, False


_UNIQUIFIER = re.compile(r"_\d+$")


def scope_of(op_name: str) -> str:
  """An mtf op name without TensorFlow-style "_<n>" uniquifiers: "router/einsum_3" ->
  "router/einsum"."""
  return "/".join(_UNIQUIFIER.sub("", part) for part in op_name.split("/"))


_LABEL_TYPE = re.compile(r"\s*[^=]+=\s*([A-Za-z0-9_]+)\(")
MATMUL_TYPES = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum")


def traced_ops(run_metadata):
  """(ops, shapes) of one traced run: ops [(node name, op type, microseconds)] with the
  kernel actually run as the type (Grappler's fused and oneDNN kernels keep their own), and
  shapes {tensor name: shape} of every output the run produced."""
  ops, shapes = [], {}
  for device in run_metadata.step_stats.dev_stats:
    for node in device.node_stats:
      match = _LABEL_TYPE.match(node.timeline_label)
      op_type = match.group(1) if match else node.node_name.split(":")[0]
      ops.append((node.node_name, op_type, node.op_end_rel_micros - node.op_start_rel_micros))
      for output in node.output:
        dims = output.tensor_description.shape.dim
        shapes[f"{node.node_name}:{output.slot}"] = tuple(d.size for d in dims)
  return ops, shapes


def base_type(op_type: str) -> str:
  """The TensorFlow op a kernel implements: "_MklMatMul" -> "MatMul", "_MklEinsum" -> "Einsum"."""
  return op_type[4:] if op_type.startswith("_Mkl") else op_type.lstrip("_")


def product_flops(op, shapes) -> int:
  """Multiply-add FLOPs of one MatMul / BatchMatMul / Einsum from its inputs' run-time shapes
  (``shapes``: {tensor name: shape}, static shapes where the run recorded none); 0 if unknown."""
  inputs = []
  for tensor in op.inputs[:2]:
    shape = shapes.get(tensor.name)
    if shape is None:
      static = tensor.shape
      if static.rank is None or None in static.as_list():
        return 0
      shape = tuple(static.as_list())
    inputs.append(shape)
  return profile_train_step.product_flops_from_shapes(op, inputs)


def matmul_signature(op) -> str:
  """A product's kind from its static shapes, "?" for a size known only at run time:
  "MatMul [?,512] x [512,2048]^T" (^T: that operand is transposed)."""
  def operand(tensor, transposed):
    shape = tensor.shape
    dims = "?" if shape.rank is None else ",".join(
        "?" if d is None else str(d) for d in shape.as_list())
    return f"[{dims}]" + ("^T" if transposed else "")

  flags = []
  for names in (("transpose_a", "adj_x"), ("transpose_b", "adj_y")):
    value = False
    for name in names:
      try:
        value = bool(op.get_attr(name))
        break
      except ValueError:
        continue
    flags.append(value)
  if op.type == "Einsum":
    return f"Einsum {op.get_attr('equation').decode()}"
  return (f"{op.type} {operand(op.inputs[0], flags[0])} x "
          f"{operand(op.inputs[1], flags[1])}")


def summarize_profile(traces, labels, graph=None):
  """Per op type, per layer part, per op scope and per matmul kind: [(key, ms per step, share, nodes per step,
  GFLOP per step)], largest first, and the total op ms per step. ``traces``: traced_ops
  results; ``graph``: the tf.Graph, to count the matmuls' FLOPs (none counted without it)."""
  tables = {"type": collections.Counter(), "part": collections.Counter(),
            "scope": collections.Counter(), "matmul": collections.Counter()}
  counts = {name: collections.Counter() for name in tables}
  flops = {name: collections.Counter() for name in tables}
  for ops, shapes in traces:
    for node_name, op_type, micros in ops:
      op_name, backward = forward_op_of(node_name, labels)
      direction = " [backward]" if backward else ""
      part = (labels[op_name] if op_name else OUTSIDE_LAYER) + direction
      scope = (scope_of(op_name) if op_name else OUTSIDE_LAYER) + direction
      node_flops, keys = 0, [("type", op_type), ("part", part), ("scope", scope)]
      if graph is not None and base_type(op_type) in MATMUL_TYPES:
        try:
          op = graph.get_operation_by_name(node_name)
        except KeyError:  # a node Grappler made; not in the Python graph
          op = None
        if op is not None:
          node_flops = product_flops(op, shapes)
          keys.append(("matmul", f"{matmul_signature(op)}{direction}"))
      for table, key in keys:
        tables[table][key] += micros
        counts[table][key] += 1
        flops[table][key] += node_flops
  steps = max(1, len(traces))
  total_ms = sum(tables["type"].values()) / 1e3 / steps
  result = {}
  for name, table in tables.items():
    result[name] = [(key, micros / 1e3 / steps,
                     micros / 1e3 / steps / total_ms if total_ms else 0.0,
                     counts[name][key] / steps, flops[name][key] / 1e9 / steps)
                    for key, micros in table.most_common()]
  return result, total_ms


def profile(config, sizes, variant, steps, threads, top, inter_op_threads=1, fetch="slices"):
  """Traces ``steps`` forward+backward steps of one variant; prints where the time goes.

  One inter-op thread by default: ops then run one at a time, each with all ``threads``
  intra-op threads, so their times add up to the step's and no op looks slow because another
  ran beside it.
  """
  with OpBuilders() as builders:
    step = Step(variant, config, sizes, threads, inter_op_threads, fetch=fetch)
  try:
    step.run()  # warm-up
    untraced = sorted(step.run() for _ in range(steps))[steps // 2]
    options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
    traces, walls = [], []
    for _ in range(steps):
      metadata = tf.RunMetadata()
      start = time.perf_counter()
      step.session.run(step.fetch, options=options, run_metadata=metadata)
      walls.append(time.perf_counter() - start)
      traces.append(traced_ops(metadata))
  finally:
    step.close()
  tables, total_ms = summarize_profile(traces, builders.labels, step.graph)
  wall = sorted(walls)[len(walls) // 2]
  matmul_gflop = sum(row[4] for row in tables["type"])
  matmul_ms = sum(row[1] for row in tables["type"] if base_type(row[0]) in MATMUL_TYPES)
  print(f"\n## {variant}: {config.experts} experts, capacity factor {config.capacity_factor}, "
        f"group {config.group_size}\n")
  print(f"untraced step {untraced:.3f} s, traced step {wall:.3f} s (medians of {steps}); "
        f"op time {total_ms / 1e3:.3f} s per step ({inter_op_threads} inter-op thread(s): "
        f"with more, op times overlap and can exceed the wall time); matmuls {matmul_gflop:.1f} GFLOP in {matmul_ms:.0f} ms of op time: "
        f"{matmul_gflop / max(matmul_ms, 1e-9) * 1e3:.1f} GFLOP/s\n")
  titles = {"part": "layer part (the function that built the op)", "type": "op type",
            "scope": "op name scope (mtf op, uniquifiers stripped)",
            "matmul": "matmul kind (static shapes)"}
  for name in ("part", "type", "scope", "matmul"):
    print(f"| {titles[name]} | ms/step | share | nodes/step | matmul GFLOP/s |")
    print("| --- | --- | --- | --- | --- |")
    for key, ms, share, nodes, gflop in tables[name][:top]:
      rate = f"{gflop / ms * 1e3:.1f}" if gflop and ms else ""
      print(f"| {key} | {ms:.1f} | {share:.1%} | {nodes:g} | {rate} |")
    print()
  record = {"variant": variant, **dataclasses.asdict(config), "untraced_s": round(untraced, 4),
            "traced_s": round(wall, 4), "op_ms_per_step": round(total_ms, 1),
            "matmul_gflop_per_step": round(matmul_gflop, 2),
            **{name: {key: round(ms, 1) for key, ms, *_ in rows[:top]}
               for name, rows in tables.items()}}
  print("JSON_PROFILE " + json.dumps(record), flush=True)
  return record


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--grid", choices=("default", "full"), default="default")
  parser.add_argument("--quick", action="store_true",
                      help="only the two target configurations")
  parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3)")
  parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--tokens", type=int, default=Sizes.tokens)
  parser.add_argument("--length", type=int, default=Sizes.length)
  parser.add_argument("--d_model", type=int, default=Sizes.d_model)
  parser.add_argument("--d_ff", type=int, default=Sizes.d_ff)
  parser.add_argument("--configs", default=None,
                      help="explicit experts:capacity:group list, e.g. 32:1.25:1024,8:1.0:512")
  parser.add_argument("--bfc_cpu_allocator", action="store_true",
                      help="run with TensorFlow's caching BFC CPU allocator "
                           "(TF_CPU_ALLOCATOR_USE_BFC=true): what the default allocator "
                           "costs in fresh memory per step, with oneDNN off")
  parser.add_argument("--profile", metavar="VARIANT", default=None,
                      help="instead of timing, trace VARIANT at each configuration and print "
                           "where its time goes (by layer part, op type and op scope)")
  parser.add_argument("--profile_steps", type=int, default=3, help="traced steps (--profile)")
  parser.add_argument("--profile_inter_op_threads", type=int, default=1,
                      help="inter-op threads while profiling (1: op times add up to the step)")
  parser.add_argument("--top", type=int, default=25, help="rows per profile table")
  parser.add_argument("--fetch", choices=FETCHES, default="slices",
                      help="what each step fetches (see fetch_of): slices of every gradient "
                           "(the layer's work only), or sums (also reads every gradient once)")
  args = parser.parse_args(argv)

  if args.bfc_cpu_allocator:
    # Read when the first session creates the CPU device, which has not happened yet.
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
  sizes = Sizes(args.tokens, args.length, args.d_model, args.d_ff)
  variants = [v for v in args.variants.split(",") if v]
  for v in variants:
    if v not in VARIANTS:
      parser.error(f"unknown variant {v!r}; expected some of {VARIANTS}")
  if args.configs:
    configs = [Config(int(e), float(c), int(g))
               for e, c, g in (item.split(":") for item in args.configs.split(","))]
  elif args.quick:
    configs = [Config(32, 1.25, 1024), Config(128, 1.25, 4096)]
  else:
    configs = full_grid() if args.grid == "full" else default_configs()
  rounds = args.rounds or 3
  if args.profile is not None:
    if args.profile not in VARIANTS:
      parser.error(f"unknown --profile variant {args.profile!r}; expected one of {VARIANTS}")
    if args.profile_steps < 1:
      parser.error(f"--profile_steps must be >= 1, got {args.profile_steps}")
    print(f"# profile of {args.profile}: machine {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {_load_average()}, TF {tf.__version__} "
          f"(oneDNN {onednn_enabled()}, CPU allocator {cpu_allocator()}, {tuning()}), "
          f"threads {args.threads}; sizes {dataclasses.asdict(sizes)}", flush=True)
    for config in configs:
      profile(config, sizes, args.profile, args.profile_steps, args.threads, args.top,
              args.profile_inter_op_threads, args.fetch)
    return 0

  print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {_load_average()}, TF {tf.__version__} (oneDNN {onednn_enabled()}, "
        f"CPU allocator {cpu_allocator()}, {tuning()}), threads {args.threads}; "
        f"sizes {dataclasses.asdict(sizes)}; {rounds} rounds; fetch {args.fetch}", flush=True)
  header = ("| experts | capacity factor | group size | variant | median s | min..max s | "
            "x dense (paired median) | step working memory MB (traced) | "
            "(allocator) | page faults per step |")
  print(header)
  print("|" + " --- |" * 10, flush=True)
  notes = set()
  summary = []
  for config in configs:
    result = measure(config, sizes, variants, rounds, args.threads, args.fetch)
    for variant in variants:
      r = result[variant]
      print(f"| {config.experts} | {config.capacity_factor} | {config.group_size} | {variant} | "
            f"{r['median_s']:.3f} | {r['min_s']:.3f}..{r['max_s']:.3f} | "
            f"{_fmt_ratio(r['ratio_to_dense'])} | {_fmt_mb(r['working_memory_mb'])} | "
            f"{_fmt_mb(r['allocator_working_memory_mb'])} | "
            f"{r['minor_page_faults_per_step']:.0f} |", flush=True)
      if r["allocator_note"]:
        notes.add(r["allocator_note"])
    record = dict(dataclasses.asdict(config), results=result)
    summary.append(record)
    print("JSON " + json.dumps(record), flush=True)
  for note in sorted(notes):
    print(f"\nallocator column n/a: {note} (TensorFlow's default CPU allocator keeps no "
          f"statistics; oneDNN's allocator does, and oneDNN is {onednn_enabled()} here). The "
          "traced column does not need them.")
  print("JSON_SUMMARY " + json.dumps({"sizes": dataclasses.asdict(sizes), "rounds": rounds,
                                      "threads": args.threads, "fetch": args.fetch,
                                      "configs": summary}))
  return 0
