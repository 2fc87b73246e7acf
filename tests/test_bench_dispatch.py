"""tools/bench_dispatch.py's (switch_experiments.bench_dispatch) profile and memory helpers, on numbers checkable by hand."""

import collections
import resource

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import layers
from switch_experiments import bench_dispatch as bench


def _metadata(nodes):
  """RunMetadata from [(node name, op type, start us, end us, [(micros, bytes) records],
  [(slot, shape)])]."""
  metadata = tf.RunMetadata()
  device = metadata.step_stats.dev_stats.add(device="/cpu:0")
  for name, op_type, start, end, records, outputs in nodes:
    node = device.node_stats.add(node_name=name, op_start_rel_micros=start,
                                 op_end_rel_micros=end,
                                 timeline_label=f"{name} = {op_type}(a, b)")
    if records:
      memory = node.memory.add(allocator_name="cpu")
      for micros, size in records:
        memory.allocation_records.add(alloc_micros=micros, alloc_bytes=size)
    for slot, shape in outputs:
      output = node.output.add(slot=slot)
      for size in shape:
        output.tensor_description.shape.dim.add(size=size)
  return metadata


def test_traced_peak_replays_allocations_in_time_order():
  # a: 100 bytes live from t=1 to t=5; b: 50 from t=3 to t=4; c: 30 from t=4 (as b frees).
  metadata = _metadata([
      ("a", "X", 0, 1, [(1, 100), (5, -100)], []),
      ("b", "X", 0, 1, [(3, 50), (4, -50)], []),
      ("c", "X", 0, 1, [(4, 30), (6, -30)], []),
  ])
  # Peak 150 at t=3..4; at t=4 b's free is replayed before c's allocation (130, not 180).
  assert bench.traced_peak_bytes(metadata) == 150
  assert bench.traced_peak_bytes(_metadata([("a", "X", 0, 1, [], [])])) is None


def test_traced_peak_of_a_real_step_sees_its_tensors():
  with tf.Graph().as_default(), tf.Session() as session:
    x = tf.random.normal([1024, 256])  # 1 MiB
    total = tf.reduce_sum(tf.matmul(x, x, transpose_a=True))  # + a 256 KiB product
    metadata = tf.RunMetadata()
    session.run(total, options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE),
                run_metadata=metadata)
  peak = bench.traced_peak_bytes(metadata)
  assert 2**20 + 2**18 <= peak < 2**20 + 2**18 + 2**16, peak


def test_forward_op_of_finds_the_mtf_op_and_the_direction():
  names = {"router/einsum", "gather_dispatch", "einsum"}
  assert bench.forward_op_of("router/einsum/Einsum", names) == ("router/einsum", False)
  assert bench.forward_op_of("router/einsum/gradients/einsum_1/Einsum", names) == (
      "router/einsum", True)
  assert bench.forward_op_of("gather_dispatch/parallel_0/GatherV2", names) == (
      "gather_dispatch", False)
  assert bench.forward_op_of("random_normal", names) == (None, False)
  assert bench.scope_of("router/einsum_3/x_12") == "router/einsum/x"


def test_product_flops_use_run_time_shapes_and_transposes():
  with tf.Graph().as_default():
    a = tf.placeholder(tf.float32, [None, 4])
    plain = tf.matmul(a, tf.zeros([4, 5])).op
    # 2 x m x k x n with m = 3 known only at run time.
    assert bench.product_flops(plain, {a.name: (3, 4)}) == 2 * 3 * 4 * 5
    assert bench.product_flops(plain, {}) == 0  # unknown, not guessed
    transposed = tf.matmul(tf.zeros([6, 4]), tf.zeros([5, 4]), transpose_b=True).op
    assert bench.product_flops(transposed, {}) == 2 * 6 * 4 * 5
    einsum = tf.einsum("btd,df->btf", tf.zeros([2, 3, 4]), tf.zeros([4, 8])).op
    assert bench.product_flops(einsum, {}) == 2 * 2 * 3 * 4 * 8
    assert bench.matmul_signature(transposed) == "MatMul [6,4] x [5,4]^T"
    assert bench.matmul_signature(plain) == "MatMul [?,4] x [4,5]"


def test_summary_sums_per_step_by_part_type_and_scope():
  labels = {"router/einsum": "routing: router", "ffn": "packed_experts: ffn"}
  step = _metadata([
      ("router/einsum/Einsum", "Einsum", 0, 300, [], []),
      ("ffn/MatMul", "MatMul", 10, 610, [], []),
      ("ffn/gradients/x/MatMul", "MatMul", 0, 900, [], []),
      ("random_normal", "RandomStandardNormal", 0, 200, [], []),
  ])
  traces = [bench.traced_ops(step)] * 2  # two identical steps: the tables are per step
  tables, total_ms = bench.summarize_profile(traces, labels)
  assert total_ms == pytest.approx(2.0)  # 300 + 600 + 900 + 200 us
  parts = {key: (ms, share, nodes) for key, ms, share, nodes, _ in tables["part"]}
  assert parts["packed_experts: ffn [backward]"] == pytest.approx((0.9, 0.45, 1))
  assert parts["packed_experts: ffn"] == pytest.approx((0.6, 0.3, 1))
  assert parts[bench.OUTSIDE_LAYER] == pytest.approx((0.2, 0.1, 1))
  types = {key: ms for key, ms, *_ in tables["type"]}
  assert types == pytest.approx({"MatMul": 1.5, "Einsum": 0.3, "RandomStandardNormal": 0.2})
  assert tables["type"][0][0] == "MatMul"  # largest first


def test_op_builders_label_the_layer_stages():
  with tf.Graph().as_default(), bench.OpBuilders() as builders:
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    dims = [mtf.Dimension("batch", 2), mtf.Dimension("length", 8), mtf.Dimension("d_model", 4)]
    layer = layers.SwitchFFN(num_experts=2, hidden_size=8, group_size=16, summaries=False,
                             dispatch_path="gather", skip_empty_slots=True)
    layer.apply(mtf.zeros(mesh, dims), train=True, variable_dtype=mtf.VariableDType(tf.float32))
  labels = set(builders.labels.values())
  for stage in ("routing: Router.__call__ > Router._compute_router_probabilities",
                "routing: Router.__call__ > assign_slots", "dispatch: gather_dispatch",
                "packed_experts: packed_expert_ffn", "dispatch: gather_combine"):
    assert stage in labels, sorted(labels)
  assert mtf.Operation.__init__ is not None and "recording" not in mtf.Operation.__init__.__name__


def test_profile_flag_prints_the_tables(capsys):
  assert bench.main(["--tokens", "256", "--length", "64", "--d_model", "8", "--d_ff", "16",
                     "--configs", "4:1.25:64", "--profile", "gather", "--profile_steps", "1"]) == 0
  out = capsys.readouterr().out
  for title in ("layer part", "op type", "op name scope", "matmul kind"):
    assert f"| {title}" in out
  assert "| packed_experts: packed_expert_ffn [backward] |" in out
  assert "JSON_PROFILE" in out
  with pytest.raises(SystemExit):
    bench.main(["--profile", "nonsense"])


def _executed_op_types(step):
  """Counts of the op types a traced step ran, outside the fetch's own scope."""
  metadata = tf.RunMetadata()
  step.session.run(step.fetch, options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE),
                   run_metadata=metadata)
  ops, _ = bench.traced_ops(metadata)
  return collections.Counter(op_type for name, op_type, _ in ops
                             if bench.FETCH_SCOPE not in name and not name.startswith("_SOURCE"))


# 40 slots per expert (batched weight gradients) and 256 (per expert, stacked).
@pytest.mark.parametrize("variant,config", [
    ("gather", bench.Config(8, 1.25, 64)), ("gather", bench.Config(2, 2.0, 256)),
    ("einsum", bench.Config(8, 1.25, 64)), ("moe_py", bench.Config(8, 1.25, 64)),
    ("dense", bench.Config(8, 1.25, 64))])
def test_sliced_fetch_runs_every_op_of_the_summed_one(variant, config):
  # The default fetch reads one entry per row of each gradient; if Grappler could prune work
  # behind those slices (say one expert's product behind a slice of a tf.stack), the step
  # would run fewer ops than with whole sums.
  sizes = bench.Sizes(tokens=256, length=32, d_model=32, d_ff=64)
  counts = {}
  for fetch in bench.FETCHES:
    step = bench.Step(variant, config, sizes, threads=1, inter_op_threads=1, fetch=fetch)
    try:
      step.run()
      counts[fetch] = _executed_op_types(step)
    finally:
      step.close()
  del counts["slices"]["Const"], counts["sums"]["Const"]  # the slice's own index constants
  assert counts["slices"] == counts["sums"]
  assert sum(counts["slices"][t] for t in counts["slices"] if "MatMul" in t or "Einsum" in t)


def test_fetch_names_a_bad_mode():
  with tf.Graph().as_default(), pytest.raises(ValueError, match="'total'"):
    bench.fetch_of([tf.zeros([2, 2])], tf.zeros([]), "total")


class _TouchingSession:
  """A session whose step writes `fresh_bytes` of memory the process never had, or reuses one
  buffer (what a caching allocator does)."""

  def __init__(self, fresh_bytes, reuse):
    self.fresh_bytes, self.reuse, self.kept = fresh_bytes, reuse, None

  def run(self, fetch):
    if self.reuse and self.kept is not None:
      self.kept[:] = 2.0
      return
    self.kept = np.full(self.fresh_bytes // 8, 1.0)  # written: every page is faulted in


@pytest.mark.parametrize("reuse", [False, True])
def test_a_step_counts_the_fresh_pages_it_touches(reuse):
  # numpy asks for huge pages (one fault per 2 MiB); TensorFlow's allocations do not.
  hugepages = np.core.multiarray._set_madvise_hugepage(False)
  try:
    fresh = 64 * 2**20
    step = bench.Step.__new__(bench.Step)
    step.session, step.fetch = _TouchingSession(fresh, reuse), None
    step.run()  # warm-up: the first step always touches its memory
    step.run()
  finally:
    np.core.multiarray._set_madvise_hugepage(hugepages)
  pages = fresh // resource.getpagesize()
  if reuse:
    assert step.minor_page_faults < pages // 16
  else:
    # glibc hands 64 MiB out by mmap and returns it on free: new pages every step.
    assert 0.95 * pages <= step.minor_page_faults <= 1.1 * pages


def test_the_untuned_variant_builds_the_gather_path_without_the_avx2_tuning(monkeypatch):
  # Mesh-TF builds the TensorFlow ops when it lowers the graph, after the layer is applied:
  # the variant must keep the tuning off through the lowering, or it times the tuned layer.
  from mtf_switch import cpu_gemm
  monkeypatch.setattr(cpu_gemm, "machine_runs_onednn_avx2_sgemm", lambda: True)
  sizes = bench.Sizes(tokens=512, length=64, d_model=512, d_ff=1024)
  ops = {}
  for variant in ("gather", "gather_untuned"):
    step = bench.Step(variant, bench.Config(8, 1.25, 64), sizes, threads=1)
    try:
      ops[variant] = collections.Counter(op.type for op in step.graph.get_operations())
    finally:
      step.close()
  # Tuned: one tf.pad per kernel (wi and wo), and no transpose of the 2 MiB weights' input
  # gradients; untuned: no pad, and the (W dY^T)^T forms' transposes.
  assert ops["gather"]["Pad"] == 2 and ops["gather_untuned"]["Pad"] == 0
  assert ops["gather"]["Transpose"] < ops["gather_untuned"]["Transpose"]
