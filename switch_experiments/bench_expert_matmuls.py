"""The six matrix products of an FFN training step, one at a time: experts against dense.

``bench_dispatch.py`` times whole layers. This asks where a Switch layer with many experts
and few tokens per expert loses to the dense FFN of the same FLOPs: it times each product of
the FFN's forward and backward by itself, for the dense FFN (one product over every token)
and for the experts (one product per expert on its own rows), side by side in one process.

Products, per FFN (x, dy [rows, d_model]; pre, h, dpre [rows, d_ff]; wi [d_model, d_ff];
wo [d_ff, d_model]):
  forward wi        x . wi
  forward wo        h . wo
  input grad wo     dy . wo^T     (the hidden layer's gradient)
  input grad wi     dpre . wi^T   (the input's gradient)
  weight grad wi    x^T . dpre
  weight grad wo    h^T . dy

Forms:
  dense               one product over all tokens (the bar; bench_dispatch's dense variant).
  per expert          one product per expert on its filled rows; input gradients as
                      (W dY^T)^T, weight gradients stacked.
  per expert padded   (forward) each expert's weight padded with zero columns, the extra
                      columns dropped from the product (``mtf_switch.cpu_gemm``).
  per expert direct   input gradients as one tf.matmul(.., transpose_b=True) per expert.
  slots               one batched product over every capacity slot (the empty ones too);
                      input gradients as (W dY^T)^T.
  slots direct        input gradients as one batched tf.matmul(.., transpose_b=True).
The "layer" column marks the forms ``mtf_switch.packed_experts`` builds at these sizes on this
machine: the forward per expert (padded where ``cpu_gemm.forward_padding`` says so); the
backward over the slots up to ``BATCHED_BACKWARD_MAX_SLOTS`` slots per expert, per expert
beyond; input gradients direct for small weights, and per expert and direct where ``cpu_gemm``
says so.
TensorFlow runs as ``switch_mesh_transformer`` runs it: oneDNN on unless TF_ENABLE_ONEDNN_OPTS
is set (switch_cli).
Routing is taken as balanced: every expert fills tokens / experts rows (the mean load), out
of groups x capacity slots. GFLOP/s counts useful FLOPs only (filled rows), so a form that
multiplies empty slots shows it as lower throughput.

Each timed fetch is a scalar that needs every product's output (one element of each), so
nothing is pruned; inputs are variables, so no step pays for generating them. Rounds run
every fetch once, in an order that rotates from round to round. Prints a markdown table and
a JSON line.

  PYTHONPATH=. python tools/bench_expert_matmuls.py                 # 128 experts (~1 min)
  PYTHONPATH=. python tools/bench_expert_matmuls.py --experts 32 --group_size 1024
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# The command's process settings before TensorFlow is imported (oneDNN's kernels).
import switch_cli  # noqa: E402,F401
import mtf_switch  # noqa: E402,F401  (compat repair before TensorFlow's v1 API is used)
import tensorflow.compat.v1 as tf  # noqa: E402

from mtf_switch import capacity as capacity_lib  # noqa: E402
from mtf_switch import cpu_gemm, packed_experts  # noqa: E402

PRODUCTS = ("forward wi", "forward wo", "input grad wo", "input grad wi", "weight grad wi",
            "weight grad wo")


@dataclasses.dataclass(frozen=True)
class Shape:
  """The sizes of one measurement."""

  tokens: int = 8192
  experts: int = 128
  group_size: int = 4096
  capacity_factor: float = 1.25
  d_model: int = 512
  d_ff: int = 2048

  @property
  def rows_per_expert(self) -> int:
    """Filled rows of each expert under balanced routing."""
    return self.tokens // self.experts

  @property
  def slots_per_expert(self) -> int:
    """Capacity slots per expert over all groups (what a batched form multiplies)."""
    plan = capacity_lib.plan_groups(self.tokens, self.group_size)
    per_group = capacity_lib.expert_capacity(plan.tokens_per_group, self.experts,
                                             self.capacity_factor)
    return plan.num_groups * per_group


def check_shape(shape: Shape) -> None:
  """ValueError naming the bad value, before TensorFlow builds anything."""
  for name in ("tokens", "experts", "group_size", "d_model", "d_ff"):
    capacity_lib.require_positive_int(name, getattr(shape, name))
  capacity_lib.check_capacity_factor("capacity_factor", shape.capacity_factor)
  if shape.tokens % shape.experts:
    raise ValueError(f"tokens ({shape.tokens}) must be a multiple of experts "
                     f"({shape.experts}): balanced routing fills tokens / experts rows each")
  if shape.slots_per_expert < shape.rows_per_expert:
    raise ValueError(f"capacity_factor {shape.capacity_factor} gives {shape.slots_per_expert} "
                     f"slots per expert, fewer than the {shape.rows_per_expert} rows each "
                     "expert fills: use a capacity factor >= 1")


def layer_form(shape: Shape, product: str) -> str:
  """The form mtf_switch.packed_experts builds for this product at these sizes."""
  if product.startswith("forward"):
    columns = shape.d_ff if product == "forward wi" else shape.d_model
    padded = cpu_gemm.forward_padding(shape.rows_per_expert, columns, 4)
    return "per expert padded" if padded else "per expert"
  layout = ("slots" if shape.slots_per_expert <= packed_experts.BATCHED_BACKWARD_MAX_SLOTS
            else "per expert")
  if product.startswith("input grad"):
    if cpu_gemm.direct_transposed_products():  # per expert in either layout
      return "per expert direct"
    if 4 * shape.d_model * shape.d_ff < packed_experts.TRANSPOSED_PRODUCT_MIN_WEIGHT_BYTES:
      return layout + " direct"
  return layout


def useful_gflop(shape: Shape) -> float:
  """GFLOP of one product over every token: 2 x tokens x d_model x d_ff (all six are this)."""
  return 2 * shape.tokens * shape.d_model * shape.d_ff / 1e9


def _one_element_of_each(tensors):
  """A scalar needing every tensor: the sum of one element of each."""
  return tf.add_n([tf.reshape(t, [-1])[0] for t in tensors])


def build_fetches(shape: Shape):
  """{(product, form): scalar fetch} in one graph; call inside a tf.Graph()."""
  e, n, s = shape.experts, shape.rows_per_expert, shape.slots_per_expert
  d, f = shape.d_model, shape.d_ff

  def var(name, dims, filled_rows=None):
    """A variable of normal noise; with filled_rows, rows from there on along axis 1 zero."""
    value = tf.random.normal(dims, stddev=0.05)
    if filled_rows is not None:
      value *= tf.sequence_mask([filled_rows] * dims[0], dims[1], dtype=tf.float32)[..., None]
    return tf.Variable(value, name=name)

  # Dense: every token in one matrix.
  x, dy = var("x", [shape.tokens, d]), var("dy", [shape.tokens, d])
  h, dpre = var("h", [shape.tokens, f]), var("dpre", [shape.tokens, f])
  wi, wo = var("wi", [d, f]), var("wo", [f, d])
  # Experts: filled rows per expert (packed), and the capacity-slot layout [experts, slots, k]
  # (batched forms): filled rows first, the empty slots zero, as routing leaves them.
  expert_x = [var(f"x_{i}", [n, d]) for i in range(e)]
  expert_dy = [var(f"dy_{i}", [n, d]) for i in range(e)]
  expert_h = [var(f"h_{i}", [n, f]) for i in range(e)]
  expert_dpre = [var(f"dpre_{i}", [n, f]) for i in range(e)]
  expert_wi, expert_wo = var("expert_wi", [e, d, f]), var("expert_wo", [e, f, d])
  wi_e, wo_e = tf.unstack(expert_wi, num=e), tf.unstack(expert_wo, num=e)

  slot_x, slot_dy = var("slot_x", [e, s, d], n), var("slot_dy", [e, s, d], n)
  slot_h, slot_dpre = var("slot_h", [e, s, f], n), var("slot_dpre", [e, s, f], n)

  def per_expert(fn, *lists):
    return [fn(*args) for args in zip(*lists, strict=True)]

  def direct(a, b):
    return tf.matmul(a, b, transpose_b=True)

  def weight_grad(a, b):
    return tf.matmul(a, b, transpose_a=True)

  def transposed(a, b):
    """(b a^T)^T: the product form for a large weight b on most kernels."""
    return tf.linalg.matrix_transpose(tf.matmul(b, a, transpose_b=True))

  def padded(pieces, stacked, per_expert_weights, width):
    with cpu_gemm.assume_onednn_avx2_sgemm(True):
      weights = packed_experts._forward_kernels(  # noqa: SLF001
          stacked, per_expert_weights, shape.rows_per_expert)
    return [packed_experts._times(piece, w, width)  # noqa: SLF001
            for piece, w in zip(pieces, weights, strict=True)]

  outputs = {
      ("forward wi", "dense"): [tf.matmul(x, wi)],
      ("forward wi", "per expert"): per_expert(tf.matmul, expert_x, wi_e),
      ("forward wi", "per expert padded"): padded(expert_x, expert_wi, wi_e, f),
      ("forward wi", "slots"): [tf.matmul(slot_x, expert_wi)],
      ("forward wo", "dense"): [tf.matmul(h, wo)],
      ("forward wo", "per expert"): per_expert(tf.matmul, expert_h, wo_e),
      ("forward wo", "per expert padded"): padded(expert_h, expert_wo, wo_e, d),
      ("forward wo", "slots"): [tf.matmul(slot_h, expert_wo)],
  }
  for product, d_out, d_out_e, d_out_slots, w, w_e, w_stacked in (
      ("input grad wo", dy, expert_dy, slot_dy, wo, wo_e, expert_wo),
      ("input grad wi", dpre, expert_dpre, slot_dpre, wi, wi_e, expert_wi)):
    outputs[(product, "dense")] = [direct(d_out, w)]
    outputs[(product, "per expert")] = per_expert(transposed, d_out_e, w_e)
    outputs[(product, "per expert direct")] = per_expert(direct, d_out_e, w_e)
    outputs[(product, "slots")] = [transposed(d_out_slots, w_stacked)]
    outputs[(product, "slots direct")] = [direct(d_out_slots, w_stacked)]
  for product, left, left_e, left_slots, right, right_e, right_slots in (
      ("weight grad wi", x, expert_x, slot_x, dpre, expert_dpre, slot_dpre),
      ("weight grad wo", h, expert_h, slot_h, dy, expert_dy, slot_dy)):
    outputs[(product, "dense")] = [weight_grad(left, right)]
    outputs[(product, "per expert")] = [tf.stack(per_expert(weight_grad, left_e, right_e))]
    outputs[(product, "slots")] = [weight_grad(left_slots, right_slots)]
  return {key: _one_element_of_each(tensors) for key, tensors in outputs.items()}


def measure(shape: Shape, rounds: int, threads: int, inter_op_threads: int):
  """{(product, form): [seconds per round]}."""
  graph = tf.Graph()
  with graph.as_default():
    fetches = build_fetches(shape)
    config = tf.ConfigProto(intra_op_parallelism_threads=threads,
                            inter_op_parallelism_threads=inter_op_threads)
    with tf.Session(graph=graph, config=config) as session:
      session.run(tf.global_variables_initializer())
      keys = list(fetches)
      for key in keys:  # warm-up: graph optimisation and first allocations
        session.run(fetches[key])
      times = {key: [] for key in keys}
      for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
          start = time.perf_counter()
          session.run(fetches[key])
          times[key].append(time.perf_counter() - start)
  return times


def summarize(shape: Shape, times):
  """Rows: per (product, form) the median ms, GFLOP/s and the paired ratio to dense."""
  gflop = useful_gflop(shape)
  rows = []
  for (product, form), seconds in times.items():
    dense = times[(product, "dense")]
    rows.append({
        "product": product, "form": form,
        "median_ms": 1e3 * statistics.median(seconds),
        "useful_gflop_per_s": gflop / statistics.median(seconds),
        "x_dense": statistics.median(t / d for t, d in zip(seconds, dense, strict=True)),
        "layer": form == layer_form(shape, product),
    })
  rounds = len(times[(PRODUCTS[0], "dense")])
  dense = [sum(times[(p, "dense")][r] for p in PRODUCTS) for r in range(rounds)]
  layer = [sum(times[(p, layer_form(shape, p))][r] for p in PRODUCTS) for r in range(rounds)]
  return rows, {"dense_ms": 1e3 * statistics.median(dense),
                "layer_ms": 1e3 * statistics.median(layer),
                "layer_x_dense": statistics.median(
                    t / d for t, d in zip(layer, dense, strict=True))}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  defaults = Shape()
  for field in dataclasses.fields(Shape):
    parser.add_argument(f"--{field.name}", type=field.type, default=getattr(defaults, field.name))
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
  parser.add_argument("--inter_op_threads", type=int, default=2)
  args = parser.parse_args(argv)
  shape = Shape(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Shape)})
  try:
    check_shape(shape)
    for name in ("rounds", "threads", "inter_op_threads"):
      capacity_lib.require_positive_int(name, getattr(args, name))
  except ValueError as error:
    parser.error(str(error))

  print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, TF {tf.__version__} (built for "
        f"oneDNN's AVX2 sgemm: {cpu_gemm.onednn_avx2_sgemm()}); "
        f"threads {args.threads} intra-op, {args.inter_op_threads} inter-op; {args.rounds} rounds;"
        f" {dataclasses.asdict(shape)}: {shape.rows_per_expert} rows and "
        f"{shape.slots_per_expert} slots per expert", flush=True)
  times = measure(shape, args.rounds, args.threads, args.inter_op_threads)
  rows, totals = summarize(shape, times)
  print("| product | form | layer | median ms | useful GFLOP/s | x dense (paired median) |")
  print("| --- | --- | --- | --- | --- | --- |")
  for row in sorted(rows, key=lambda r: (PRODUCTS.index(r["product"]), r["form"] != "dense")):
    print(f"| {row['product']} | {row['form']} | {'yes' if row['layer'] else ''} | "
          f"{row['median_ms']:.1f} | "
          f"{row['useful_gflop_per_s']:.1f} | {row['x_dense']:.2f} |")
  print(f"\nall six products: dense {totals['dense_ms']:.1f} ms, the layer's forms "
        f"{totals['layer_ms']:.1f} ms, {totals['layer_x_dense']:.2f}x dense", flush=True)
  print("JSON " + json.dumps({"shape": dataclasses.asdict(shape),
                              "rows_per_expert": shape.rows_per_expert,
                              "slots_per_expert": shape.slots_per_expert,
                              "rounds": args.rounds, "threads": args.threads,
                              "inter_op_threads": args.inter_op_threads,
                              "products": rows, "totals": totals}))
  return 0
