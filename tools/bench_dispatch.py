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
  gather_static   the same but skip_empty_slots=False (every capacity slot computed)
  einsum          mtf_switch.SwitchFFN, dispatch_path="einsum" (the paper's one-hot einsums)
  moe_py          mesh_tensorflow.transformer.moe.transformer_moe_layer_v1, moe_gating="switch"
  dense           DenseReluDense with d_ff = the expert d_ff: the same FLOPs per token as
                  top-1 routing at capacity 1.0, no router, no dispatch: the bar.

Memory: TensorFlow's CPU allocator statistics (tf.config.experimental.get_memory_info on
"CPU:0"), reset before one extra step of each variant: working memory = peak during the step
minus the bytes in use before it (weights of all live variants are resident and excluded).

Prints a markdown table and one JSON line per configuration, then a JSON summary line.

  PYTHONPATH=. python tools/bench_dispatch.py              # the default set (~10 min)
  PYTHONPATH=. python tools/bench_dispatch.py --grid full  # every combination (long)
  PYTHONPATH=. python tools/bench_dispatch.py --quick      # the two target configurations only
"""

import argparse
import dataclasses
import itertools
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mtf_switch  # noqa: E402,F401  (compat repair before mesh_tensorflow)
import mesh_tensorflow as mtf  # noqa: E402
import tensorflow as tf2  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from mesh_tensorflow.transformer import moe  # noqa: E402

from mtf_switch import layers  # noqa: E402


VARIANTS = ("gather", "gather_static", "einsum", "moe_py", "dense")


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
  if variant in ("gather", "gather_static", "einsum"):
    layer = layers.SwitchFFN(
        num_experts=config.experts, hidden_size=sizes.d_ff, group_size=config.group_size,
        capacity_factor_train=config.capacity_factor, summaries=False,
        dispatch_path="einsum" if variant == "einsum" else "gather",
        skip_empty_slots=variant == "gather")
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


class Step:
  """One variant's forward + backward graph, in its own session."""

  def __init__(self, variant, config, sizes, threads):
    self.variant = variant
    self.graph = tf.Graph()
    with self.graph.as_default():
      tf.set_random_seed(0)
      mesh = mtf.Mesh(mtf.Graph(), "mesh")
      dims = [mtf.Dimension("batch", sizes.tokens // sizes.length),
              mtf.Dimension("length", sizes.length), mtf.Dimension("d_model", sizes.d_model)]
      x_tf = tf.random.normal([d.size for d in dims], seed=1)
      x = mtf.import_tf_tensor(mesh, x_tf, mtf.Shape(dims))
      y, aux = _layer_output(self.variant, x, config, sizes)
      loss = mtf.reduce_mean(mtf.square(y)) + mtf.cast(aux, tf.float32)
      variables = [v.outputs[0] for v in mesh.graph.trainable_variables]
      grads = mtf.gradients([loss], [x] + variables)
      mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(mtf.Shape([]), "", ["/cpu:0"])
      lowering = mtf.Lowering(mesh.graph, {mesh: mesh_impl})
      exported = [lowering.export_to_tf_tensor(g) for g in grads if g is not None]
      # A scalar that needs every gradient: a tf.group of them let Grappler prune the work.
      self.fetch = tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32)) for t in exported]
                            + [lowering.export_to_tf_tensor(loss)])
      config_proto = tf.ConfigProto(intra_op_parallelism_threads=threads,
                                    inter_op_parallelism_threads=threads)
      self.session = tf.Session(graph=self.graph, config=config_proto)
      self.session.run(tf.global_variables_initializer())
      self.session.run(lowering.copy_masters_to_slices())

  def run(self) -> float:
    start = time.perf_counter()
    self.session.run(self.fetch)
    return time.perf_counter() - start

  def working_memory(self):
    """Bytes the step needs beyond what is resident before it (None if not measurable)."""
    try:
      tf2.config.experimental.reset_memory_stats("CPU:0")
      before = tf2.config.experimental.get_memory_info("CPU:0")["current"]
      self.run()
      peak = tf2.config.experimental.get_memory_info("CPU:0")["peak"]
    except (ValueError, RuntimeError):
      return None
    return max(0, peak - before)

  def close(self):
    self.session.close()


def measure(config, sizes, variants, rounds, threads):
  steps = [Step(v, config, sizes, threads) for v in variants]
  times = {s.variant: [] for s in steps}
  ratios = {s.variant: [] for s in steps}
  try:
    for step in steps:  # warm-up: graph optimisation and first allocations
      step.run()
    for r in range(rounds):
      order = steps[r % len(steps):] + steps[:r % len(steps)]
      this_round = {step.variant: step.run() for step in order}
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
        "working_memory_mb": (None if memory[variant] is None
                              else round(memory[variant] / 2**20, 1)),
    }
  return result


def _fmt_ratio(value):
  return "-" if value is None else f"{value:.2f}"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--grid", choices=("default", "full"), default="default")
  parser.add_argument("--quick", action="store_true",
                      help="only the two target configurations")
  parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3)")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--tokens", type=int, default=Sizes.tokens)
  parser.add_argument("--length", type=int, default=Sizes.length)
  parser.add_argument("--d_model", type=int, default=Sizes.d_model)
  parser.add_argument("--d_ff", type=int, default=Sizes.d_ff)
  parser.add_argument("--configs", default=None,
                      help="explicit experts:capacity:group list, e.g. 32:1.25:1024,8:1.0:512")
  args = parser.parse_args(argv)

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

  print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"TF {tf.__version__}, threads {args.threads}; sizes {dataclasses.asdict(sizes)}; "
        f"{rounds} rounds", flush=True)
  header = ("| experts | capacity factor | group size | variant | median s | min..max s | "
            "x dense (paired median) | step working memory MB |")
  print(header)
  print("|" + " --- |" * 8, flush=True)
  summary = []
  for config in configs:
    result = measure(config, sizes, variants, rounds, args.threads)
    for variant in variants:
      r = result[variant]
      print(f"| {config.experts} | {config.capacity_factor} | {config.group_size} | {variant} | "
            f"{r['median_s']:.3f} | {r['min_s']:.3f}..{r['max_s']:.3f} | "
            f"{_fmt_ratio(r['ratio_to_dense'])} | {r['working_memory_mb']} |", flush=True)
    record = dict(dataclasses.asdict(config), results=result)
    summary.append(record)
    print("JSON " + json.dumps(record), flush=True)
  print("JSON_SUMMARY " + json.dumps({"sizes": dataclasses.asdict(sizes), "rounds": rounds,
                                      "threads": args.threads, "configs": summary}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
