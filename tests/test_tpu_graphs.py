"""TPU training steps, built (never run) on a fake TPU v3 slice, for every Section 5 layout.

Each case builds a tiny Bitransformer with Switch layers from gin and its whole training step
the way TPUEstimator does (``tools/tpu_plan.build_tpu_train_step``: Mesh-TF's own
``tpu_estimator_model_fn`` in TRAIN mode under ``tpu.replicate``, with a device assignment of
a hand-made ``Topology``; loss, gradients, Adafactor update, SimdMeshImpl lowering), and
checks the TensorFlow graph TPUEstimator would compile:

* the one-hot einsum path is built (no gather or segment-sum op, the gather path's);
* AllToAll ops appear exactly when the experts are laid over the batch mesh dimension: 4 per
  Switch layer, because the slot tensor is re-split from groups to experts once for the
  dispatch and back once for the combine in the forward pass, and the gradient of each of
  those re-splits is the reverse re-split in the backward pass. Each moves one core's slot
  tensor, [experts, groups per core, capacity, d_model] in bfloat16;
* every op inside the computation can be compiled for a TPU (``tpu_plan.ops_not_for_tpu``);
* bad layouts fail while the graph is built, with an error that names the bad value.

The tiny model: switch_tiny.gin's sizes (d_model 128, 4 heads, 8 experts of d_ff 512) with
one attention layer and one Switch layer per stack, 16 sequences of 16 input and 8 target
tokens, vocabulary 64. The encoder's 256 tokens form 8 groups of 32 (capacity 5 at factor
1.25), the decoder's 128 tokens 8 groups of 16 (capacity 3).
"""

import math

import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import capacity as capacity_lib
from mtf_switch import dispatch
from switch_experiments import tpu_plan

VOCAB, D_MODEL, EXPERTS = 64, 128, 8
TOKENS = {"encoder": 16 * 16, "decoder": 16 * 8}
GROUP_SIZE = 1024  # switch_tiny.gin's and moe_tiny.gin's
SWITCH_LAYERS = 2
BF16_BYTES = 2

# (mesh file, mesh shape for 8 or 4 cores, whether experts are over "batch", batch split).
LAYOUTS = {
    "data": ("mesh/tpu_data.gin", "batch:8", False, 8),
    # t5_tiny's 4 heads limit model parallelism to 4 ways.
    "model": ("mesh/tpu_model.gin", "model:4", False, 1),
    "expert_data": ("mesh/tpu_expert_data.gin", "batch:8", True, 8),
    "expert_model_data": ("mesh/tpu_expert_model_data.gin", "batch:4;model:2", True, 4),
}


def _stacks(layer: str):
  return [
      f"encoder/make_layer_stack.layers = [@transformer_layers.SelfAttention, {layer}]",
      "decoder/make_layer_stack.layers = [@transformer_layers.SelfAttention, "
      f"@transformer_layers.EncDecAttention, {layer}]",
  ]


TINY = [
    'utils.run.sequence_length = {"inputs": 16, "targets": 8}',
    'utils.run.batch_size = ("sequences_per_batch", 16)',
    # Capacity is then the paper's ceil(tokens_per_group / experts x capacity factor).
    "mtf_switch.SwitchFFN.min_expert_capacity = 1",
    "mtf_switch.MoEFFN.min_expert_capacity = 1",
]
# Router name -> (model file, bindings).
ROUTERS = {
    "switch": ("models/switch_tiny.gin", _stacks("@mtf_switch.SwitchFFN")),
    "ntlb": ("models/switch_tiny.gin", _stacks("@mtf_switch.SwitchFFN")
             + ["mtf_switch.SwitchFFN.num_overflow_choices = 1"]),
    "top2": ("models/moe_tiny.gin", _stacks("@mtf_switch.MoEFFN")),
}

LAYER = {"switch": "SwitchFFN", "ntlb": "SwitchFFN", "top2": "MoEFFN"}


@pytest.fixture(scope="module")
def xla_kernels():
  return tpu_plan.xla_compilable_kernels()


@pytest.fixture(autouse=True)
def _forget_gin_bindings():
  import gin
  yield
  gin.clear_config()


def _build(router, layout, extra=()):
  model_file, bindings = ROUTERS[router]
  mesh_file, mesh_shape, _, _ = LAYOUTS[layout]
  return tpu_plan.build_tpu_train_step(
      [model_file, mesh_file],
      TINY + bindings + [f'utils.run.mesh_shape = "{mesh_shape}"'] + list(extra),
      vocab_size=VOCAB)


def _slot_bytes_per_core(stack: str, num_experts: int, batch_split: int,
                         layer: str = "SwitchFFN") -> int:
  """One core's [experts, groups per core, capacity, d_model] bfloat16 slot tensor.

  Groups: as few as split evenly over the batch cores with at most GROUP_SIZE tokens each;
  capacity: the paper's ceil(tokens_per_group / experts x capacity factor) (no minimum here).
  """
  import gin
  plan = capacity_lib.plan_groups(TOKENS[stack], GROUP_SIZE, batch_split)
  factor = gin.query_parameter(f"mtf_switch.{layer}.capacity_factor_train")
  capacity = math.ceil(plan.tokens_per_group * factor / num_experts)
  return num_experts * (plan.num_groups // batch_split) * capacity * D_MODEL * BF16_BYTES


def _check_step(step, router, layout, xla_kernels):
  _, mesh_shape, experts_over_batch, batch_split = LAYOUTS[layout]
  op_types = {op.type for op in step.replicate_ops}
  # The whole training step is inside the TPU computation: features from infeed, variable
  # updates, cross-core sums of the gradients (or of the model-parallel partial sums).
  assert {"InfeedDequeueTuple", "AssignVariableOp", "CrossReplicaSum"} <= op_types
  assert step.num_cores == 8 if layout != "model" else step.num_cores == 4
  assert step.num_microbatches == 1
  # The einsum path: the gather path's index ops are absent.
  assert not op_types & {"GatherV2", "UnsortedSegmentSum", "ScatterNd"}, op_types
  assert tpu_plan.ops_not_for_tpu(step, xla_kernels) == []

  all_to_all = [op for op in step.replicate_ops if op.type == "AllToAll"]
  if not experts_over_batch:
    assert all_to_all == []
    return
  assert len(all_to_all) == 4 * SWITCH_LAYERS
  by_layer = tpu_plan.all_to_all_by_layer(step)
  assert len(by_layer) == SWITCH_LAYERS
  for scope, counts in by_layer.items():
    stack = scope.split("/")[0]
    slot_bytes = _slot_bytes_per_core(stack, EXPERTS, batch_split, LAYER[router])
    assert (counts["ops"], counts["bytes"]) == (4, 4 * slot_bytes), (scope, counts)
  for op in all_to_all:
    assert ("SwitchFFN" in op.name or "MoEFFN" in op.name), op.name
  backward = [op for op in all_to_all if "gradients" in op.name]
  assert len(backward) == 2 * SWITCH_LAYERS  # dispatch and combine, once each way


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_switch_training_step_builds_for_tpu(layout, xla_kernels):
  _check_step(_build("switch", layout), "switch", layout, xla_kernels)


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("router", ["ntlb", "top2"])
def test_other_routers_training_step_builds_for_tpu(router, layout, xla_kernels):
  _check_step(_build(router, layout), router, layout, xla_kernels)


@pytest.mark.slow
def test_default_outer_batch_gives_all_to_all(xla_kernels):
  """TPUEstimator's default [outer_batch=1] leading dimension: the layer groups over the batch
  dimension after it (layers.grouping_dim), so the expert re-split is still an all-to-all."""
  step = _build("switch", "expert_data",
                ["utils.tpu_estimator_model_fn.outer_batch_size = 1"])
  assert len([op for op in step.replicate_ops if op.type == "AllToAll"]) == 4 * SWITCH_LAYERS


def test_auto_dispatch_resolves_to_einsum_inside_a_tpu_computation():
  from tensorflow.python.tpu import tpu
  seen = {}

  def computation():
    seen["replicate"] = dispatch.resolve_path("auto")
    return tf.constant(0.0)

  with tf.Graph().as_default():
    seen["outside"] = dispatch.resolve_path("auto")
    tpu.replicate(computation, inputs=[[]] * 2)
    tpu.rewrite(lambda: seen.setdefault("rewrite", dispatch.resolve_path("auto"))
                and tf.constant(0.0))
  assert seen == {"outside": "gather", "replicate": "einsum", "rewrite": "einsum"}


def test_ops_not_for_tpu_names_what_a_tpu_cannot_run(xla_kernels):
  """The checker itself: strings, float64, py_func and CPU placement are all reported."""
  from tensorflow.python.tpu import tpu

  def computation():
    x = tf.constant([1.0, 2.0])
    text = tf.strings.as_string(x)
    wide = tf.cast(x, tf.float64) * 2.0
    host = tf.py_func(lambda v: v, [x], tf.float32)
    with tf.device("/device:CPU:0"):
      pinned = tf.identity(x)
    ok = tf.matmul(x[None, :], x[:, None])
    return [tf.strings.length(text), tf.cast(wide, tf.float32), host, pinned, ok]

  graph = tf.Graph()
  with graph.as_default():
    tpu.replicate(computation, inputs=[[]] * 2)
  ops = [op for op in graph.get_operations() if tpu_plan.inside_tpu_computation(op)]
  step = tpu_plan.TPUTrainStep(graph=graph, replicate_ops=ops, num_cores=2, mesh_shape="",
                               layout_rules="", batch_size=0, sequence_length={},
                               num_microbatches=1, model=None, build_seconds=0.0)
  problems = "\n".join(tpu_plan.ops_not_for_tpu(step, xla_kernels))
  assert "(AsString): no XLA kernel" in problems
  assert "outputs float64" in problems
  assert "(PyFunc): no XLA kernel" in problems
  assert "placed on /device:CPU:0" in problems
  assert "MatMul" not in problems


@pytest.mark.parametrize("bindings, message", [
    # 8 experts cannot be spread over 16 cores.
    (['utils.run.mesh_shape = "batch:16"'], "num_experts=8"),
    # A v3 slice has an even number of cores.
    (['utils.run.mesh_shape = "batch:1"'], "num_cores=1"),
])
def test_bad_layout_fails_naming_the_value(bindings, message):
  model_file, router_bindings = ROUTERS["switch"]
  with pytest.raises(ValueError, match=message):
    tpu_plan.build_tpu_train_step([model_file, "mesh/tpu_expert_data.gin"],
                                  TINY + router_bindings + bindings, vocab_size=VOCAB)


def test_plan_of_a_micro_switch_c():
  """tpu_plan.plan, the tool's code path, on switch_c_tiny.gin (Switch in every FFN), 8 cores."""
  model_file, mesh = "models/switch_c_tiny.gin", 'utils.run.mesh_shape = "batch:8"'
  report = tpu_plan.plan(model_file, "mesh/tpu_expert_data.gin", TINY + [mesh],
                         vocab_size=VOCAB)
  assert report["cores"] == 8 and report["num_experts"] == 32
  assert report["batch_size"] == 16 and report["num_microbatches"] == 1
  # The built graph's slice variables against the layout's arithmetic on the mtf shapes.
  from_layout = tpu_plan.layout_bytes_per_core(
      model_file, TINY, "batch:8", "batch:batch;experts:batch", vocab_size=VOCAB)
  assert report["param_bytes_per_core"] == from_layout["parameters"]
  assert report["optimizer_bytes_per_core"] == from_layout["optimizer"]
  # Adafactor: factored second moments of the big matrices, full ones of vectors only.
  assert 0 < report["optimizer_bytes_per_core"] < report["param_bytes_per_core"]
  # Two blocks per stack, a Switch layer in each: 4 layers x 4 all-to-alls.
  assert report["collectives"]["AllToAll"] == 16
  assert report["layers_with_all_to_all"] == 4
  for scope, counts in report["all_to_all_per_layer"].items():
    slot_bytes = _slot_bytes_per_core(scope.split("/")[0], 32, 8)
    assert (counts["ops"], counts["bytes"]) == (4, 4 * slot_bytes), (scope, counts)
  assert report["ops_not_for_tpu"] == []
  biggest = report["largest_activations"][0]
  assert biggest["bytes"] > 0 and len(biggest["shape"]) >= 1
  line = tpu_plan.markdown([report])
  assert "switch_c_tiny.gin" in line and "16 ops" not in line


@pytest.mark.slow
def test_microbatch_loop_counts_its_all_to_alls_per_microbatch(xla_kernels):
  """Mesh-TF's microbatch loop is a while_v2 function body: its ops are found and counted."""
  step = tpu_plan.build_tpu_train_step(
      ["models/switch_c_tiny.gin", "mesh/tpu_expert_data.gin"],
      ['utils.run.sequence_length = {"inputs": 16, "targets": 8}',
       'utils.run.batch_size = ("sequences_per_batch", 32)', 'utils.run.mesh_shape = "batch:8"',
       "utils.serialize_num_microbatches.tokens_per_microbatch_per_replica = 32"],
      vocab_size=VOCAB)
  assert step.num_microbatches == 2
  loop_a2a = [op for op in step.loop_ops if op.type == "AllToAll"]
  assert len(loop_a2a) == 4 * 4  # 4 Switch layers, all inside the loop body
  by_layer = tpu_plan.all_to_all_by_layer(step)
  assert [v["ops"] for v in by_layer.values()] == [8] * 4
  assert tpu_plan.ops_not_for_tpu(step, xla_kernels) == []


@pytest.mark.slow
def test_per_core_figures_are_affine_in_the_layers():
  """The evidence behind extrapolating full-depth Switch-C: built at 1, 2 and 3 layers per stack,
  every per-core figure is exactly a + b x layers, b is the layout's per-layer bytes, and
  extrapolating the 1-layer build gives the 3-layer build's figures."""
  import copy

  model_file, mesh_file = "models/switch_c_tiny.gin", "mesh/tpu_expert_data.gin"
  mesh = 'utils.run.mesh_shape = "batch:8"'
  reports = {n: tpu_plan.plan(model_file, mesh_file, TINY + [mesh, f"num_layers = {n}"],
                              vocab_size=VOCAB)
             for n in (1, 2, 3)}
  assert [r["num_layers"] for r in reports.values()] == [1, 2, 3]
  fit = tpu_plan.layer_fit(reports)
  slopes = {name: slope for name, (_, slope) in fit["affine"].items()}
  from_layout = tpu_plan.layout_increments(model_file, TINY + [mesh], "batch:8",
                                           "batch:batch;experts:batch", vocab_size=VOCAB)
  assert from_layout["param_bytes_per_core"] > 0 and from_layout["optimizer_bytes_per_core"] > 0
  assert {k: slopes[k] for k in from_layout} == from_layout
  # One Switch layer per block and stack: 2 layers, 8 all-to-alls per added block.
  assert slopes["layers_with_all_to_all"] == 2 and slopes["collectives.AllToAll"] == 8
  assert slopes["collectives.CrossReplicaSum"] > 0

  third = tpu_plan.extrapolate(reports[1], 3, slopes)
  for name in tpu_plan.LAYER_SCALARS + ("collectives", "all_to_all_per_layer",
                                         "num_microbatches"):
    assert third[name] == reports[3][name], name
  assert ([a["bytes"] for a in third["largest_activations"]]
          == [a["bytes"] for a in reports[3]["largest_activations"]])
  assert third["hbm_fraction_params_and_optimizer"] == pytest.approx(
      reports[3]["hbm_fraction_params_and_optimizer"], rel=1e-12)
  assert third["extrapolated"] == {"from_layers": 1, "increments": slopes,
                                   "largest_activations": "checked"}
  assert tpu_plan.extrapolate(reports[1], 3, slopes, largest_checked=False)[
      "largest_activations"] == []
  assert third["graph_ops"] is None and "extrapolated from 1" in tpu_plan.markdown([third])

  # The check itself: one figure four bytes off at one depth, or a layer's all-to-all that
  # differs from its kind's, is refused.
  broken = copy.deepcopy(reports)
  broken[2]["optimizer_bytes_per_core"] += 4
  with pytest.raises(ValueError, match="optimizer_bytes_per_core is not affine"):
    tpu_plan.layer_fit(broken)
  broken = copy.deepcopy(reports)
  scope = sorted(broken[3]["all_to_all_per_layer"])[-1]
  broken[3]["all_to_all_per_layer"][scope]["bytes"] += 2
  with pytest.raises(ValueError, match="differs from another"):
    tpu_plan.layer_fit(broken)
  with pytest.raises(ValueError, match="three or more"):
    tpu_plan.layer_fit({1: reports[1], 2: reports[2]})
