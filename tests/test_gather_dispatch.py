"""The gather dispatch path: the same routing, outputs and gradients as the einsum path.

Every configuration runs once with ``dispatch_path="einsum"`` (the paper's one-hot einsums,
the reference, its expert FFN as Mesh-TF einsums too) and once with ``"gather"`` (tokens
moved by index; the expert FFN packed or batched over the slots, as planned), with the same numpy
weights and inputs, in float32. Routing statistics must be identical; outputs, the aux loss
and the gradients of a scalar loss with respect to the input and every weight must agree to
float32 rounding. The gather path runs both with the expert FFN on filled slots only (the
default on CPU) and on every slot, and on the Section 5 layouts of ``test_layouts``.
"""

import functools

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from tensorflow.python.tpu import tpu_function

from mesh_harness import run_on_mesh
from mtf_switch import cpu_gemm, dispatch, layers, packed_experts

F32 = mtf.VariableDType(tf.float32)
BF16 = mtf.VariableDType(tf.float32, tf.float32, tf.bfloat16)
BATCH, LENGTH, D_MODEL, HIDDEN, EXPERTS = 8, 8, 16, 32, 4

_COMMON = dict(num_experts=EXPERTS, hidden_size=HIDDEN, group_size=16, min_expert_capacity=1,
               router_policy_train="argmax", summaries=False)

# name -> (layer class, kwargs). Unit-scale router weights make routing uneven, so capacity
# factor 1.0 drops tokens; 4.0 fits every token anywhere.
CONFIGS = {
    "switch_drops": (layers.SwitchFFN, dict(capacity_factor_train=1.0)),
    "switch_no_drop": (layers.SwitchFFN, dict(capacity_factor_train=4.0)),
    "switch_tight": (layers.SwitchFFN, dict(capacity_factor_train=0.5)),
    "switch_geglu": (layers.SwitchFFN, dict(capacity_factor_train=1.25, activation="geglu")),
    "switch_swiglu_groups_of_8": (layers.SwitchFFN, dict(capacity_factor_train=1.0,
                                                         activation="swiglu", group_size=8)),
    "ntlb": (layers.SwitchFFN, dict(capacity_factor_train=1.0, num_overflow_choices=2)),
    "top2_all": (layers.MoEFFN, dict(capacity_factor_train=2.0, second_policy_train="all")),
    "top2_tight": (layers.MoEFFN, dict(capacity_factor_train=1.0, second_policy_train="all")),
    "top2_threshold": (layers.MoEFFN, dict(capacity_factor_train=1.5,
                                           second_policy_train="threshold",
                                           second_threshold=0.3)),
}

LAYOUTS = {
    "single": ("", ""),
    "data": ("batch:4", "batch:batch"),
    "model": ("model:4", "expert_hidden:model"),
    "expert_data": ("batch:4", "batch:batch;experts:batch"),
    "expert_model_data": ("batch:4;model:2", "batch:batch;experts:batch;expert_hidden:model"),
    "expert_data_one_device": ("batch:1", "batch:batch;experts:batch"),
}


def _dims(batch=BATCH, length=LENGTH, d_model=D_MODEL):
  return [mtf.Dimension("batch", batch), mtf.Dimension("length", length),
          mtf.Dimension("d_model", d_model)]


@functools.lru_cache(maxsize=None)
def _data(activation="relu"):
  rng = np.random.RandomState(4321)
  x = rng.randn(BATCH, LENGTH, D_MODEL).astype(np.float32)
  probe = rng.randn(BATCH, LENGTH, D_MODEL).astype(np.float32)
  # Padding: the last two positions of every other sequence.
  nonpadding = np.ones((BATCH, LENGTH), np.float32)
  nonpadding[::2, -2:] = 0.0
  weights = {"router/kernel": rng.randn(D_MODEL, EXPERTS).astype(np.float32)}
  wi_names = ["wi_0", "wi_1"] if activation in ("geglu", "swiglu") else ["wi"]
  for name in wi_names:
    weights[f"{name}/kernel"] = (rng.randn(EXPERTS, D_MODEL, HIDDEN)
                                 / np.sqrt(D_MODEL)).astype(np.float32)
  weights["wo/kernel"] = (rng.randn(EXPERTS, HIDDEN, D_MODEL) / np.sqrt(HIDDEN)).astype(np.float32)
  return x, probe, nonpadding, weights


def _run(config_name, path, layout_name="single", skip_empty_slots=True, train=True,
         padding=False, mesh_tf_products=False):
  cls, kwargs = CONFIGS[config_name]
  layer = cls(**dict(_COMMON, dispatch_path=path, skip_empty_slots=skip_empty_slots,
                     batch_expert_slots=not mesh_tf_products, **kwargs))
  x, probe, nonpadding, weights = _data(kwargs.get("activation", "relu"))
  mesh_shape, layout = LAYOUTS[layout_name]

  op_names = []

  def build(mesh, inputs):
    out = layer.apply(inputs["x"], train=train, variable_dtype=F32, layout=layout,
                      mesh_shape=mesh_shape,
                      nonpadding=inputs["nonpadding"] if padding else None)
    op_names.extend(op.name for op in mesh.graph.operations)
    loss = mtf.reduce_sum(out.outputs * inputs["probe"]) + out.aux_loss
    stats = out.routing.statistics
    return {"y": out.outputs, "aux": out.aux_loss, "loss": loss, "load": stats.expert_fraction,
            "dropped": stats.dropped_fraction}

  inputs = {"x": (x, _dims()), "probe": (probe, _dims()),
            "nonpadding": (nonpadding, _dims()[:2])}
  run = run_on_mesh(build, inputs, mesh_shape=mesh_shape, layout=layout, weights=weights,
                    grad_of="loss")
  run.op_names = op_names  # the Mesh-TF graph's operations, to see which path was built
  return run


def _built_packed_ffn(run):
  return any("packed_expert_ffn" in name for name in run.op_names)


def _built_batched_ffn(run):
  return any("batched_expert_ffn" in name for name in run.op_names)


@functools.lru_cache(maxsize=None)
def _reference(config_name, train=True, padding=False):
  return _run(config_name, "einsum", train=train, padding=padding, mesh_tf_products=True)


def _assert_close(actual, desired, what):
  desired = np.asarray(desired)
  scale = max(1.0, float(np.abs(desired).max()))
  np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=2e-6 * scale, err_msg=what)


def _assert_same_as_reference(run, ref):
  # Routing does not depend on the path: the same loads and drops, exactly.
  np.testing.assert_array_equal(run.outputs["load"], ref.outputs["load"])
  np.testing.assert_array_equal(run.outputs["dropped"], ref.outputs["dropped"])
  np.testing.assert_allclose(run.outputs["aux"], ref.outputs["aux"], rtol=1e-6)
  _assert_close(run.outputs["y"], ref.outputs["y"], "outputs")
  _assert_close(run.outputs["loss"], ref.outputs["loss"], "loss")
  _assert_close(run.input_grads["x"], ref.input_grads["x"], "d loss / d x")
  assert sorted(run.variable_grads) == sorted(ref.variable_grads)
  for name, grad in ref.variable_grads.items():
    assert np.abs(grad).max() > 1e-3, name  # a zero gradient would prove nothing
    _assert_close(run.variable_grads[name], grad, f"d loss / d {name}")


@pytest.mark.parametrize("skip_empty_slots", [True, False], ids=["packed", "all_slots"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_gather_path_matches_einsum_path(config_name, skip_empty_slots):
  run = _run(config_name, "gather", skip_empty_slots=skip_empty_slots)
  # The "packed" case really ran the filled-slots-only FFN, and "all_slots" the batched one.
  assert _built_packed_ffn(run) == skip_empty_slots
  assert _built_batched_ffn(run) == (not skip_empty_slots)
  assert not _built_packed_ffn(_reference(config_name))
  assert not _built_batched_ffn(_reference(config_name))
  _assert_same_as_reference(run, _reference(config_name))


@pytest.mark.parametrize("config_name", ["switch_drops", "switch_geglu", "top2_all"])
def test_einsum_path_with_batched_experts_matches_mesh_tf_einsums(config_name):
  run = _run(config_name, "einsum")
  assert _built_batched_ffn(run)
  _assert_same_as_reference(run, _reference(config_name))


@pytest.mark.parametrize("config_name", ["switch_drops", "top2_tight"])
def test_gather_path_matches_einsum_path_with_padding_and_in_eval(config_name):
  _assert_same_as_reference(_run(config_name, "gather", padding=True),
                            _reference(config_name, padding=True))
  _assert_same_as_reference(_run(config_name, "gather", train=False),
                            _reference(config_name, train=False))


@pytest.mark.parametrize("layout_name", [name for name in LAYOUTS if name != "single"])
@pytest.mark.parametrize("config_name", ["switch_drops", "ntlb", "top2_all"])
def test_gather_path_on_every_layout_matches_single_device_einsum(config_name, layout_name):
  _assert_same_as_reference(_run(config_name, "gather", layout_name), _reference(config_name))


@pytest.mark.parametrize("layout_name", ["single", "expert_data"])
@pytest.mark.parametrize("config_name", ["switch_drops", "switch_geglu", "top2_all"])
def test_gather_path_built_for_the_avx2_sgemm_matches_einsum(config_name, layout_name):
  # The tuning for oneDNN's AVX2 sgemm changes the backward's form (input gradients per
  # expert on the filled rows); the test machine's own kernels may not ask for it.
  with cpu_gemm.assume_onednn_avx2_sgemm(True):
    run = _run(config_name, "gather", layout_name)
  assert _built_packed_ffn(run)
  _assert_same_as_reference(run, _reference(config_name))


def test_the_reference_configurations_drop_tokens_where_they_claim():
  dropped = {name: float(_reference(name).outputs["dropped"]) for name in CONFIGS}
  assert dropped["switch_no_drop"] == 0.0
  for name in ("switch_drops", "switch_tight", "top2_tight"):
    assert dropped[name] > 0.05, (name, dropped[name])
  assert dropped["ntlb"] < dropped["switch_drops"]


def _graph_tensors(layer, dtype=tf.float32, variable_dtype=F32):
  """Builds (never runs) the layer; returns [(dimension names, dtype)] of every tensor."""
  with tf.Graph().as_default():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    out = layer.apply(mtf.zeros(mesh, _dims(), dtype=dtype), train=True,
                      variable_dtype=variable_dtype)
    loss = mtf.reduce_sum(mtf.cast(out.outputs, tf.float32))
    mtf.gradients([loss], [v.outputs[0] for v in mesh.graph.trainable_variables])
    return [(tuple(t.shape.dimension_names), t.dtype)
            for op in mesh.graph.operations for t in op.outputs]


def _is_gtec(names):
  return "tokens_per_group" in names and "expert_capacity" in names


def test_gather_path_builds_no_groups_tokens_experts_capacity_tensor():
  gather = layers.SwitchFFN(**dict(_COMMON, dispatch_path="gather"))
  assert not [t for t in _graph_tensors(gather) if _is_gtec(t[0])]
  einsum = layers.SwitchFFN(**dict(_COMMON, dispatch_path="einsum"))
  assert [t for t in _graph_tensors(einsum) if _is_gtec(t[0])]


@pytest.mark.parametrize("path", ["einsum", "gather"])
def test_no_float32_groups_tokens_experts_capacity_tensor_under_bfloat16(path):
  for cls in (layers.SwitchFFN, layers.MoEFFN):
    layer = cls(**dict(_COMMON, dispatch_path=path))
    big = [t for t in _graph_tensors(layer, tf.bfloat16, BF16) if _is_gtec(t[0])]
    assert all(dtype == tf.bfloat16 for _, dtype in big), big


def test_bfloat16_gather_path_routes_like_einsum_path():
  rng = np.random.RandomState(8)
  x = rng.randn(2, 8, 4).astype(np.float32)
  weights = {"router/kernel": rng.randn(4, 4).astype(np.float32)}
  runs = {}
  for path in ("einsum", "gather"):
    layer = layers.SwitchFFN(num_experts=4, hidden_size=8, group_size=16,
                             router_policy_train="argmax", summaries=False, dispatch_path=path)

    def build(mesh, inputs, layer=layer):
      del mesh
      out = layer.apply(mtf.cast(inputs["x"], tf.bfloat16), train=True, variable_dtype=BF16)
      return {"y": mtf.cast(out.outputs, tf.float32),
              "load": out.routing.statistics.expert_fraction}

    runs[path] = run_on_mesh(build, {"x": (x, _dims(2, 8, 4))}, weights=weights)
  np.testing.assert_array_equal(runs["gather"].outputs["load"], runs["einsum"].outputs["load"])
  np.testing.assert_allclose(runs["gather"].outputs["y"], runs["einsum"].outputs["y"],
                             rtol=0.02, atol=0.02)


def test_auto_is_gather_on_cpu_and_einsum_inside_a_tpu_computation():
  assert dispatch.resolve_path("auto") == "gather"
  with tpu_function.tpu_shard_context(8):
    assert dispatch.resolve_path("auto") == "einsum"
  assert dispatch.resolve_path("einsum") == "einsum"
  assert dispatch.resolve_path("gather") == "gather"


def _plan(requested="auto", model_split=1, groups_split=1, experts_are_split=False,
          experts_can_pack=True, skip_empty_slots=True, batch_expert_slots=True):
  return dispatch.plan_dispatch(requested, model_split=model_split, groups_split=groups_split,
                                experts_are_split=experts_are_split,
                                experts_can_pack=experts_can_pack,
                                skip_empty_slots=skip_empty_slots,
                                batch_expert_slots=batch_expert_slots)


def test_one_function_decides_the_path_and_every_fallback():
  plan = _plan()
  assert (plan.path, plan.packed_experts) == ("gather", True)
  with tpu_function.tpu_shard_context(8):
    assert (_plan().path, _plan().packed_experts) == ("einsum", False)
    assert (_plan("gather").path, _plan("gather").packed_experts) == ("gather", False)
  assert (_plan("einsum").path, _plan("einsum").packed_experts) == ("einsum", False)
  # A split d_model: "auto" falls back to einsum, "gather" by name is an error.
  assert _plan(model_split=2).path == "einsum"
  with pytest.raises(ValueError, match="dispatch_path='gather' needs whole d_model rows"):
    _plan("gather", model_split=2)
  # The packed FFN: only when allowed, the experts can pack, and no weight is replicated
  # across devices that hold different groups (pure data parallelism).
  assert not _plan(skip_empty_slots=False).packed_experts
  assert not _plan(experts_can_pack=False).packed_experts
  assert not _plan(groups_split=4).packed_experts
  assert _plan(groups_split=4, experts_are_split=True).packed_experts
  assert _plan(experts_are_split=True).experts_are_split
  # Batched over every slot: where the packed FFN is not used but would be allowed, on
  # either path, with d_model whole, and never inside a TPU computation.
  assert not _plan().batched_experts
  assert _plan(skip_empty_slots=False).batched_experts
  assert _plan("einsum").batched_experts
  assert not _plan("einsum", batch_expert_slots=False).batched_experts
  assert not _plan(experts_can_pack=False).batched_experts
  assert not _plan(groups_split=4).batched_experts
  assert not _plan("einsum", model_split=2).batched_experts
  assert _plan("einsum", groups_split=4, experts_are_split=True).batched_experts
  with tpu_function.tpu_shard_context(8):
    assert not _plan().batched_experts
    assert not _plan("gather", skip_empty_slots=False).batched_experts


def test_the_layer_follows_the_plan():
  """The plan the layer reports is the path whose ops are in the graph."""
  for layout_name, expect_packed in (("single", True), ("data", False), ("model", False),
                                     ("expert_data", True)):
    run = _run("switch_drops", "gather", layout_name=layout_name)
    assert _built_packed_ffn(run) == expect_packed, layout_name
    assert not _built_batched_ffn(run), layout_name
  for layout_name, expect_batched in (("single", True), ("data", False), ("model", False),
                                      ("expert_data", True)):
    run = _run("switch_drops", "einsum", layout_name=layout_name)
    assert _built_batched_ffn(run) == expect_batched, layout_name
  gather = _run("switch_drops", "auto")
  assert any("gather_dispatch" in name for name in gather.op_names)
  einsum = _reference("switch_drops")
  assert not any("gather_dispatch" in name for name in einsum.op_names)


@pytest.mark.parametrize("cls", [layers.SwitchFFN, layers.MoEFFN])
def test_bad_dispatch_path_raises_naming_the_value(cls):
  with pytest.raises(ValueError, match="dispatch_path='scatter'"):
    cls(dispatch_path="scatter")
  with pytest.raises(ValueError, match="dispatch_path='scatter'"):
    dispatch.resolve_path("scatter")


def test_dispatch_path_is_a_gin_parameter():
  import gin
  import mtf_switch  # noqa: F401
  with gin.unlock_config():
    gin.parse_config('mtf_switch.SwitchFFN.dispatch_path = "einsum"')
  try:
    assert layers.SwitchFFN().dispatch_path == "einsum"
  finally:
    gin.clear_config()


def test_benchmark_tool_runs_at_a_toy_size(capsys):
  from switch_experiments import bench_dispatch as bench

  assert bench.main(["--tokens", "256", "--length", "64", "--d_model", "8", "--d_ff", "16",
                     "--configs", "4:1.25:64", "--rounds", "1"]) == 0
  out = capsys.readouterr().out
  assert "JSON_SUMMARY" in out
  for variant in bench.DEFAULT_VARIANTS:
    assert f"| {variant} |" in out
  assert "| gather_untuned |" not in out  # only when asked for


def test_packed_ffn_gradient_stays_inside_its_layer_when_variables_are_stacked():
  """The packed FFN's TensorFlow gradient (tf.gradients over the slice function) builds ops
  for its own layer only. Mesh-TF's autostack (on in every switch_mesh_transformer run) makes
  the kernels of same-shaped layers outputs of one unstack op; a gradient taken from that op
  would reach back through every earlier layer, a graph that grows with depth squared."""
  mesh_shape, layout = LAYOUTS["expert_data"]  # autostack stacks nothing on one device
  with tf.Graph().as_default():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    x = mtf.zeros(mesh, _dims())
    for scope in ("first", "second", "third"):
      with tf.variable_scope(scope):
        layer = layers.SwitchFFN(**dict(_COMMON, dispatch_path="gather", skip_empty_slots=True))
        x = layer.apply(x, train=True, variable_dtype=F32, layout=layout,
                        mesh_shape=mesh_shape).outputs
    loss = mtf.reduce_sum(x)
    variables = list(mesh.graph.trainable_variables)
    mtf.gradients([loss], [v.outputs[0] for v in variables])
    shape = mtf.convert_to_shape(mesh_shape)
    mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(
        shape, layout, [f"/cpu:{i}" for i in range(shape.size)])
    mtf.Lowering(mesh.graph, {mesh: mesh_impl}, autostack=True)
    names = [op.name for op in tf.get_default_graph().get_operations()]
  assert any(name.startswith("stacked/") for name in names)  # the kernels were stacked
  for scope in ("second", "third"):
    gradient = [n for n in names if n.startswith(f"{scope}/") and "packed_expert_ffn/gradients"
                in n]
    assert gradient, scope  # the packed FFN was built, and its generic gradient
    reaching_back = [n for n in gradient if "/gradients/first/" in n
                     or (scope == "third" and "/gradients/second/" in n)]
    assert not reaching_back, reaching_back[:3]


def test_auto_packs_only_experts_large_enough_to_pay(monkeypatch):
  # Built as for any matmul kernel: switch_tiny's experts (d_model 128 x d_ff 512) run on
  # every slot; the benchmark's (512 x 2048) are packed; an explicit True or False is honoured
  # at any size. Built for oneDNN's AVX2 sgemm, switch_tiny's are packed too.
  with cpu_gemm.assume_onednn_avx2_sgemm(True):
    assert packed_experts.packing_pays(128, 512) and not packed_experts.packing_pays(64, 512)
  monkeypatch.setattr(cpu_gemm, "_assumed", False)
  assert not packed_experts.packing_pays(128, 512)
  assert packed_experts.packing_pays(512, 2048)
  model = mtf.Dimension("d_model", 128)
  assert not layers.SwitchFFN(hidden_size=512)._skips_empty_slots(model)
  assert layers.SwitchFFN(hidden_size=512, skip_empty_slots=True)._skips_empty_slots(model)
  big = mtf.Dimension("d_model", 512)
  assert layers.SwitchFFN(hidden_size=2048)._skips_empty_slots(big)
  assert not layers.SwitchFFN(hidden_size=2048, skip_empty_slots=False)._skips_empty_slots(big)
  # The built graph follows the rule: this file's small layer is packed under "auto" only
  # once the threshold is lowered below its size.
  assert not _built_packed_ffn(_run("switch_drops", "gather", skip_empty_slots="auto"))
  monkeypatch.setattr(packed_experts, "PACKED_MIN_WEIGHT_ELEMENTS", D_MODEL * HIDDEN)
  assert _built_packed_ffn(_run("switch_drops", "gather", skip_empty_slots="auto"))


@pytest.mark.parametrize("skip_empty_slots", [True, False], ids=["packed", "batched"])
def test_slicewise_gradients_run_on_their_slices_devices(skip_empty_slots):
  """The gradients of the layer's slicewise ops (dispatch, expert FFN, combine) are built
  beside the forward ops of each slice. Mesh-TF's default slicewise gradient leaves them on
  the graph's default device: over a cluster, the client's, so every slice's activations and
  weights crossed to it and back each step."""
  devices = ["/job:worker/task:0/device:CPU:0", "/job:worker/task:1/device:CPU:0"]
  layout, mesh_shape = "batch:batch;experts:batch", "batch:2"
  with tf.Graph().as_default() as tf_graph:
    graph = mtf.Graph()
    mesh = mtf.Mesh(graph, "mesh")
    layer = layers.SwitchFFN(**dict(_COMMON, dispatch_path="gather",
                                    skip_empty_slots=skip_empty_slots))
    x = mtf.import_tf_tensor(mesh, tf.ones([BATCH, LENGTH, D_MODEL]), mtf.Shape(_dims()))
    out = layer.apply(x, train=True, variable_dtype=F32, layout=layout, mesh_shape=mesh_shape)
    loss = mtf.reduce_sum(out.outputs) + out.aux_loss
    variables = [v.outputs[0] for v in graph.trainable_variables]
    grads = mtf.gradients([loss], variables)
    mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(
        mtf.convert_to_shape(mesh_shape), mtf.convert_to_layout_rules(layout), devices)
    lowering = mtf.Lowering(graph, {mesh: mesh_impl})
    for grad in grads:
      lowering.export_to_tf_tensor(grad)
    ffn = "packed_expert_ffn" if skip_empty_slots else "batched_expert_ffn"
    products = [op for op in tf_graph.get_operations()
                if "generic_grad" in op.name and op.type in ("MatMul", "BatchMatMulV2")]
    assert any(ffn in op.name for op in products)
    for op in products:
      (group,) = op.colocation_groups()
      forward = tf_graph.get_operation_by_name(group.decode()[len("loc:@"):])
      assert forward is not op and forward.device in devices, (op.name, forward.device)
