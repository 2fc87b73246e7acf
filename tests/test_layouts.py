"""Layout equivalence (paper Section 5): splitting a layer over a mesh must not change its math.

Each layer configuration runs once on a single device (the reference) and once per layout on
4 or 8 virtual CPU devices, with the same numpy weights and inputs. Outputs, the auxiliary
loss, routing statistics and the gradients of a scalar loss with respect to the input and every
variable must agree to float32 rounding. The sizes make every layout real: 8 x 8 = 64 tokens in
groups of 16 give 4 groups, one per device of the "batch" mesh dimension, and 4 experts give
one expert per device under expert parallelism. A structural test checks that the layouts do
split the tensors they name, so the equivalence tests cannot pass by everything staying
replicated.
"""

import functools

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mesh_harness import run_on_mesh
from mtf_switch import capacity as capacity_lib
from mtf_switch import layers

F32 = mtf.VariableDType(tf.float32)
BATCH, LENGTH, D_MODEL, HIDDEN, EXPERTS = 8, 8, 16, 32, 4
GROUP_SIZE = 16  # 64 tokens -> 4 groups on every mesh, so capacity is the same everywhere.

# (mesh_shape, layout) of the paper's Figure 9 strategies, by name.
LAYOUTS = {
    "data": ("batch:4", "batch:batch"),
    "model": ("model:4", "expert_hidden:model"),
    "expert_data": ("batch:4", "batch:batch;experts:batch"),
    "expert_model_data": ("batch:4;model:2", "batch:batch;experts:batch;expert_hidden:model"),
    # gin/mesh/cpu_data_parallel.gin: experts named on a batch dimension of one device.
    "expert_data_one_device": ("batch:1", "batch:batch;experts:batch"),
}

# skip_empty_slots=True: these experts are too small for "auto" to pack them, and the packed
# FFN (wherever a layout allows it) is the path whose layouts most need checking.
_COMMON = dict(num_experts=EXPERTS, hidden_size=HIDDEN, group_size=GROUP_SIZE,
               min_expert_capacity=1, router_policy_train="argmax", skip_empty_slots=True)

# Layer configurations, by name. Deterministic routing (argmax, second expert "all") is what
# makes exact equivalence a fair requirement; random policies draw per-device noise.
CONFIGS = {
    # Capacity factor 1.0: 4 slots per expert for 16 tokens, so an unbalanced router drops.
    # Summaries stay on here so that their lowering is exercised on every mesh too.
    "switch_drops": (layers.SwitchFFN, dict(capacity_factor_train=1.0)),
    # Capacity factor 4.0: 16 slots per expert = every token of a group fits anywhere.
    "switch_no_drop": (layers.SwitchFFN, dict(capacity_factor_train=4.0, summaries=False)),
    "moe_top2_all": (layers.MoEFFN, dict(capacity_factor_train=2.0, second_policy_train="all",
                                         summaries=False)),
    # No-Token-Left-Behind: overflow of the first choice goes to the second choice.
    "switch_ntlb": (layers.SwitchFFN, dict(capacity_factor_train=1.0, num_overflow_choices=1,
                                           summaries=False)),
}


def _make_layer(config_name):
  cls, kwargs = CONFIGS[config_name]
  return cls(**dict(_COMMON, **kwargs))


def _dims(batch=BATCH, length=LENGTH, d_model=D_MODEL):
  # The batch dim must be called "batch" so the layout rule "batch:batch" applies to it.
  return [mtf.Dimension("batch", batch), mtf.Dimension("length", length),
          mtf.Dimension("d_model", d_model)]


@functools.lru_cache(maxsize=None)
def _data():
  """Inputs, a fixed output projection for the loss, and the shared weights (numpy, once)."""
  rng = np.random.RandomState(1234)
  x = rng.randn(BATCH, LENGTH, D_MODEL).astype(np.float32)
  projection = rng.randn(BATCH, LENGTH, D_MODEL).astype(np.float32)
  weights = {
      # Unit-scale router weights give confident, unbalanced routing, so capacity matters.
      "router/kernel": rng.randn(D_MODEL, EXPERTS).astype(np.float32),
      "wi/kernel": (rng.randn(EXPERTS, D_MODEL, HIDDEN) / np.sqrt(D_MODEL)).astype(np.float32),
      "wo/kernel": (rng.randn(EXPERTS, HIDDEN, D_MODEL) / np.sqrt(HIDDEN)).astype(np.float32),
  }
  return x, projection, weights


def _run(config_name, mesh_shape, layout):
  """Runs the layer in train mode; returns (MeshRun, GroupPlan, expert capacity)."""
  layer = _make_layer(config_name)
  x, projection, weights = _data()
  static = {}

  def build(mesh, inputs):
    del mesh
    out = layer.apply(inputs["x"], train=True, variable_dtype=F32, layout=layout,
                      mesh_shape=mesh_shape)
    static["plan"], static["capacity"] = out.group_plan, out.expert_capacity
    # A random projection makes every output element matter to the gradients; adding the aux
    # loss sends gradient to the router through the load-balance path as well as the gates.
    loss = mtf.reduce_sum(out.outputs * inputs["projection"]) + out.aux_loss
    stats = out.routing.statistics
    return {"y": out.outputs, "aux": out.aux_loss, "loss": loss,
            "load": stats.expert_fraction, "dropped": stats.dropped_fraction,
            "entropy": stats.router_entropy}

  run = run_on_mesh(build, {"x": (x, _dims()), "projection": (projection, _dims())},
                    mesh_shape=mesh_shape, layout=layout, weights=weights, grad_of="loss")
  return run, static["plan"], static["capacity"]


@functools.lru_cache(maxsize=None)
def _reference(config_name):
  """The single-device run of a configuration, computed once per test session."""
  return _run(config_name, "", "")


def _assert_close(actual, desired, what):
  # float32 with a different reduction order (all-reduce, split d_ff sums): a few ulps of the
  # largest magnitude involved, nothing more.
  desired = np.asarray(desired)
  scale = max(1.0, float(np.abs(desired).max()))
  np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=2e-6 * scale, err_msg=what)


@pytest.mark.parametrize("layout_name", list(LAYOUTS))
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_layout_matches_single_device(config_name, layout_name):
  mesh_shape, layout = LAYOUTS[layout_name]
  ref, ref_plan, ref_capacity = _reference(config_name)
  run, plan, capacity = _run(config_name, mesh_shape, layout)

  # The groups really are split: 4 groups of 16, a multiple of the batch mesh dimension.
  batch_mesh_size = mtf.tensor_dim_to_mesh_dim_size(layout, mesh_shape,
                                                    mtf.Dimension("batch", BATCH))
  assert plan == ref_plan == capacity_lib.GroupPlan(num_groups=4, tokens_per_group=16)
  assert plan.num_groups % batch_mesh_size == 0
  assert capacity == ref_capacity

  # Identical routing decisions: integer-valued loads and drop fractions match exactly.
  np.testing.assert_array_equal(run.outputs["load"], ref.outputs["load"])
  np.testing.assert_array_equal(run.outputs["dropped"], ref.outputs["dropped"])
  _assert_close(run.outputs["entropy"], ref.outputs["entropy"], "router entropy")
  _assert_close(run.outputs["y"], ref.outputs["y"], "outputs")
  np.testing.assert_allclose(run.outputs["aux"], ref.outputs["aux"], rtol=1e-6,
                             err_msg="aux loss")
  _assert_close(run.outputs["loss"], ref.outputs["loss"], "loss")

  _assert_close(run.input_grads["x"], ref.input_grads["x"], "d loss / d x")
  assert sorted(run.variable_grads) == sorted(ref.variable_grads) == [
      "router/kernel", "wi/kernel", "wo/kernel"]
  for name, grad in ref.variable_grads.items():
    # A zero gradient would make the comparison vacuous.
    assert np.abs(grad).max() > 1e-3, name
    _assert_close(run.variable_grads[name], grad, f"d loss / d {name}")


def test_reference_configurations_exercise_what_they_claim():
  """The single-device runs drop tokens where the configuration says, and NTLB rescues some."""
  drops = _reference("switch_drops")[0].outputs["dropped"]
  no_drop = _reference("switch_no_drop")[0].outputs["dropped"]
  ntlb = _reference("switch_ntlb")[0].outputs["dropped"]
  assert _reference("switch_drops")[2] == 4  # ceil(16 tokens / 4 experts * 1.0)
  assert _reference("switch_no_drop")[2] == 16
  assert drops > 0.05
  assert no_drop == 0.0
  # NTLB re-routes overflow to the second choice, so it drops strictly fewer tokens.
  assert ntlb < drops
  # Top-2 with "all": every kept token has two gates summing to 1; y differs from top-1's.
  moe_y = _reference("moe_top2_all")[0].outputs["y"]
  assert not np.allclose(moe_y, _reference("switch_no_drop")[0].outputs["y"], atol=1e-3)


def _tensor_layouts(config_name, mesh_shape, layout):
  """Builds (never runs) the layer; returns {dim names: mesh axes} of its big tensors."""
  layer = _make_layer(config_name)
  with tf.Graph().as_default():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    x = mtf.zeros(mesh, _dims())
    layer.apply(x, train=True, variable_dtype=F32, layout=layout, mesh_shape=mesh_shape)
    shape = mtf.convert_to_shape(mesh_shape)
    mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(
        shape, layout, ["/cpu:%d" % i for i in range(shape.size)])
    found = {}
    for op in mesh.graph.operations:
      for t in op.outputs:
        found[tuple(t.shape.dimension_names)] = mesh_impl.tensor_layout(t).tensor_axis_to_mesh_axis
    return found


def test_layouts_split_the_tensors_they_name():
  """Guards the equivalence tests against a layout that silently replicates everything."""
  hidden = ("experts", "batch", "expert_capacity", "expert_hidden")
  hidden_a2a = ("experts", "batch_unsplit", "expert_capacity", "expert_hidden")
  wi = ("experts", "d_model", "expert_hidden")

  # Data parallel: the groups of the expert activations are split; experts are not.
  found = _tensor_layouts("switch_drops", *LAYOUTS["data"])
  assert found[hidden] == (None, 0, None, None)
  assert found[wi] == (None, None, None)

  # Model parallel: each device holds a quarter of every expert's d_ff.
  found = _tensor_layouts("switch_drops", *LAYOUTS["model"])
  assert found[wi] == (None, None, 0)
  assert found[hidden] == (None, None, None, 0)

  # Expert + model + data: the all-to-all leaves each device one expert's tokens from all
  # groups, and half of that expert's d_ff.
  found = _tensor_layouts("switch_drops", *LAYOUTS["expert_model_data"])
  assert found[hidden_a2a] == (0, None, None, 1)
  assert found[wi] == (0, None, 1)
  assert found[("batch", "tokens_per_group", "d_model")] == (0, None, None)


@pytest.mark.parametrize("layer_cls", [layers.SwitchFFN, layers.MoEFFN])
@pytest.mark.parametrize("kwargs, dims, mesh_shape, layout, message", [
    # 6 experts cannot be spread over 4 devices.
    (dict(num_experts=6), _dims(), "batch:4", "batch:batch;experts:batch", "num_experts=6"),
    # 3 x 5 = 15 tokens cannot form groups that split over 4 devices.
    (dict(), _dims(batch=3, length=5), "batch:4", "batch:batch", "num_tokens=15"),
    # d_ff 30 cannot be split 4 ways.
    (dict(hidden_size=30), _dims(), "model:4", "expert_hidden:model", "hidden_size=30"),
])
def test_bad_configuration_raises_naming_the_value(layer_cls, kwargs, dims, mesh_shape, layout,
                                                   message):
  layer = layer_cls(**dict(_COMMON, summaries=False, **kwargs))
  with tf.Graph().as_default():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    x = mtf.zeros(mesh, dims)
    with pytest.raises(ValueError, match=message):
      layer.apply(x, train=True, variable_dtype=F32, layout=layout, mesh_shape=mesh_shape)
    # Nothing was built before the check: no variable exists.
    assert not mesh.graph.all_variables


def test_same_configuration_on_a_matching_mesh_builds():
  """The bad-configuration checks do not fire for the sizes the equivalence tests use."""
  layer = _make_layer("switch_drops")
  with tf.Graph().as_default():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    out = layer.apply(mtf.zeros(mesh, _dims()), train=True, variable_dtype=F32,
                      layout="batch:batch;experts:batch", mesh_shape="batch:4")
    assert out.group_plan.num_groups == 4
    assert out.outputs.shape == mtf.Shape(_dims())
