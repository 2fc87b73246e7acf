"""Parity with the paper authors' Mesh-TF code, ``mesh_tensorflow.transformer.moe``.

Same inputs, same weights, the argmax policy and float32: the project's layers and
``moe.transformer_moe_layer_v1`` must give the same outputs, the same auxiliary loss and the
same gradients. Configurations are drawn at random (experts, group sizes, capacity factors
that drop tokens and ones that do not), restricted to sizes where the two agree on the static
shapes; the deliberate differences (capacity rounding, group sizing, NTLB's loss, padding in
the loss) are tested at the end.
"""

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import moe

from mesh_harness import run_on_mesh
from mtf_switch import layers

D_MODEL = 8
HIDDEN = 16
F32 = mtf.VariableDType(tf.float32)


def _dims(batch, length):
  return [mtf.Dimension("batch", batch), mtf.Dimension("length", length),
          mtf.Dimension("d_model", D_MODEL)]


def _weights(rng, num_experts, router_scale):
  """Shared weights; the router is scaled up so that routing is uneven and tokens drop."""
  return {
      "router": rng.randn(D_MODEL, num_experts) * router_scale,
      "wi": rng.randn(num_experts, D_MODEL, HIDDEN) / np.sqrt(D_MODEL),
      "wo": rng.randn(num_experts, HIDDEN, D_MODEL) / np.sqrt(HIDDEN),
  }


def _loss_of(y, aux, probe):
  """A scalar that depends on every output element, plus the aux loss."""
  return mtf.reduce_sum(y * probe) + mtf.cast(aux, tf.float32)


def _run_reference(x, probe, weights, gating, train, num_experts, group_size, capacity_factor,
                   min_capacity, **hparams):
  layer = moe.MoE1D(
      num_experts=num_experts, hidden_size=HIDDEN, group_size=group_size,
      capacity_factor_train=capacity_factor, capacity_factor_eval=capacity_factor,
      min_expert_capacity=min_capacity, moe_gating=gating, loss_coef=1e-2,
      switch_policy_train="argmax", switch_policy_eval="argmax", activation="relu", **hparams)

  def build(mesh, inputs):
    ones = mtf.ones(mesh, inputs["x"].shape.dims[:-1], tf.float32)
    y, loss = moe.transformer_moe_layer_v1(
        inputs["x"], inputs["x"].shape.dims[-1], layer._hparams, train, F32,
        layout="", mesh_shape="", nonpadding=ones, activation="relu")
    return {"y": y, "aux": loss, "objective": _loss_of(y, loss, inputs["probe"])}

  gate_name = {"switch": "switch_gating", "top_2": "top_2_gating", "ntlb": "ntlb_gating"}[gating]
  ref_weights = {f"{gate_name}/kernel": weights["router"], "wi/kernel": weights["wi"],
                 "wo/kernel": weights["wo"]}
  run = run_on_mesh(build, {"x": x, "probe": probe}, weights=ref_weights, grad_of="objective")
  run.variable_grads = {k.replace(gate_name, "router"): v for k, v in run.variable_grads.items()}
  return run


def _run_ours(x, probe, weights, layer, train, nonpadding=None):
  def build(mesh, inputs):
    mask = None if nonpadding is None else mtf.import_tf_tensor(
        mesh, tf.constant(nonpadding[0]), mtf.Shape(nonpadding[1]))
    out = layer.apply(inputs["x"], train=train, variable_dtype=F32, nonpadding=mask)
    return {"y": out.outputs, "aux": out.aux_loss,
            "dropped": out.routing.statistics.dropped_fraction,
            "objective": _loss_of(out.outputs, out.aux_loss, inputs["probe"])}

  ours = {"router/kernel": weights["router"], "wi/kernel": weights["wi"],
          "wo/kernel": weights["wo"]}
  return run_on_mesh(build, {"x": x, "probe": probe}, weights=ours, grad_of="objective")


def _assert_same(ours, ref):
  np.testing.assert_allclose(ours.outputs["y"], ref.outputs["y"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ours.outputs["aux"], ref.outputs["aux"], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(ours.input_grads["x"], ref.input_grads["x"], rtol=1e-4, atol=1e-5)
  assert sorted(ours.variable_grads) == sorted(ref.variable_grads)
  for name, grad in ref.variable_grads.items():
    np.testing.assert_allclose(ours.variable_grads[name], grad, rtol=1e-4, atol=1e-5,
                               err_msg=name)


def _random_configs(count, seed):
  """Configurations whose capacity is an exact integer, so both codes size it alike."""
  rng = np.random.RandomState(seed)
  configs = []
  while len(configs) < count:
    num_experts = int(rng.choice([2, 4, 8]))
    group_size = int(rng.choice([8, 16, 32]))
    factor = float(rng.choice([0.5, 1.0, 1.25, 2.0]))
    exact = group_size * factor / num_experts
    if exact != int(exact) or exact < 1:
      continue
    num_groups = int(rng.choice([1, 2, 4]))
    configs.append((num_experts, group_size, factor, num_groups, int(rng.randint(1 << 16))))
  return configs


def _inputs(rng, batch, length):
  x = (rng.randn(batch, length, D_MODEL).astype(np.float32), _dims(batch, length))
  probe = (rng.randn(batch, length, D_MODEL).astype(np.float32), _dims(batch, length))
  return x, probe


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("num_experts, group_size, factor, num_groups, seed",
                         _random_configs(4, seed=7))
def test_switch_matches_moe_py(num_experts, group_size, factor, num_groups, seed, train):
  rng = np.random.RandomState(seed)
  batch, length = num_groups * 2, group_size // 2
  x, probe = _inputs(rng, batch, length)
  weights = _weights(rng, num_experts, router_scale=2.0)
  layer = layers.SwitchFFN(
      num_experts=num_experts, hidden_size=HIDDEN, group_size=group_size,
      capacity_factor_train=factor, capacity_factor_eval=factor, min_expert_capacity=1,
      router_policy_train="argmax", summaries=False)
  ours = _run_ours(x, probe, weights, layer, train)
  ref = _run_reference(x, probe, weights, "switch", train, num_experts, group_size, factor, 1)
  _assert_same(ours, ref)


def test_parity_configs_include_dropped_and_undropped_tokens():
  """The random configurations really exercise both sides of the capacity limit."""
  dropped = []
  for num_experts, group_size, factor, num_groups, seed in _random_configs(4, seed=7):
    rng = np.random.RandomState(seed)
    x, probe = _inputs(rng, num_groups * 2, group_size // 2)
    layer = layers.SwitchFFN(
        num_experts=num_experts, hidden_size=HIDDEN, group_size=group_size,
        capacity_factor_train=factor, min_expert_capacity=1, router_policy_train="argmax")
    run = _run_ours(x, probe, _weights(rng, num_experts, 2.0), layer, train=True)
    dropped.append(float(run.outputs["dropped"]))
  assert max(dropped) > 0.1, dropped
  assert min(dropped) == 0.0, dropped


@pytest.mark.parametrize("num_experts, group_size, factor, seed", [
    (4, 16, 2.0, 1),   # roomy
    (8, 32, 1.0, 2),   # tight: second choices overflow
])
def test_top2_matches_moe_py(num_experts, group_size, factor, seed):
  """Top-2 with the second expert always used ("all"), where the semantics agree."""
  rng = np.random.RandomState(seed)
  x, probe = _inputs(rng, 4, group_size // 2)
  weights = _weights(rng, num_experts, router_scale=2.0)
  layer = layers.MoEFFN(
      num_experts=num_experts, hidden_size=HIDDEN, group_size=group_size,
      capacity_factor_train=factor, min_expert_capacity=1, second_policy_train="all",
      summaries=False)
  ours = _run_ours(x, probe, weights, layer, train=True)
  ref = _run_reference(x, probe, weights, "top_2", True, num_experts, group_size, factor, 1,
                       second_policy_train="all")
  _assert_same(ours, ref)


def test_no_token_left_behind_outputs_match_moe_py_but_loss_uses_first_choices():
  """NTLB routes exactly as moe.py's "ntlb" gating; only the balance loss differs (by design:
  moe.py averages f_i over all k choices, eq. 4 counts the chosen expert only)."""
  num_experts, group_size, factor, choices = 4, 16, 1.0, 3
  rng = np.random.RandomState(3)
  x, probe = _inputs(rng, 4, group_size // 2)
  weights = _weights(rng, num_experts, router_scale=3.0)
  ntlb = layers.SwitchFFN(
      num_experts=num_experts, hidden_size=HIDDEN, group_size=group_size,
      capacity_factor_train=factor, min_expert_capacity=1, router_policy_train="argmax",
      num_overflow_choices=choices - 1, summaries=False)
  plain = layers.SwitchFFN(
      num_experts=num_experts, hidden_size=HIDDEN, group_size=group_size,
      capacity_factor_train=factor, min_expert_capacity=1, router_policy_train="argmax",
      summaries=False)
  ours = _run_ours(x, probe, weights, ntlb, train=True)
  ours_plain = _run_ours(x, probe, weights, plain, train=True)
  ref = _run_reference(x, probe, weights, "ntlb", True, num_experts, group_size, factor, 1,
                       ntlb_top_k=choices)
  np.testing.assert_allclose(ours.outputs["y"], ref.outputs["y"], rtol=1e-5, atol=1e-5)
  # Re-routing really happened: fewer drops than plain Switch with the same weights.
  assert ours.outputs["dropped"] < ours_plain.outputs["dropped"]
  np.testing.assert_allclose(ours.outputs["aux"], ours_plain.outputs["aux"], rtol=1e-6)
  assert abs(ours.outputs["aux"] - ref.outputs["aux"]) > 1e-6


def _moe_py_graph_sizes(num_tokens, num_experts, capacity_factor):
  """(group size, expert capacity) that moe.py's own layer builds for one sequence."""
  layer = moe.MoE1D(num_experts=num_experts, hidden_size=HIDDEN, group_size=num_tokens,
                    capacity_factor_train=capacity_factor, min_expert_capacity=1,
                    moe_gating="switch", switch_policy_train="argmax", activation="relu")
  with tf.Graph().as_default():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    x = mtf.zeros(mesh, _dims(1, num_tokens))
    moe.transformer_moe_layer_v1(
        x, x.shape.dims[-1], layer._hparams, True, F32, layout="", mesh_shape="",
        nonpadding=mtf.ones(mesh, x.shape.dims[:-1], tf.float32), activation="relu")
    sizes = {dim.name: dim.size for op in mesh.graph.operations for t in op.outputs
             for dim in t.shape.dims}
  return sizes["group"], sizes["expert_capacity"]


def _our_sizes(num_tokens, num_experts, capacity_factor):
  layer = layers.SwitchFFN(num_experts=num_experts, hidden_size=HIDDEN, group_size=num_tokens,
                           capacity_factor_train=capacity_factor, min_expert_capacity=1,
                           router_policy_train="argmax", summaries=False)
  with tf.Graph().as_default():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    out = layer.apply(mtf.zeros(mesh, _dims(1, num_tokens)), train=True, variable_dtype=F32)
  return out.group_plan.tokens_per_group, out.expert_capacity


def test_capacity_rounding_differs_from_moe_py_where_the_division_is_inexact():
  """40 tokens over 16 experts at capacity factor 1.0: moe.py's layer truncates 2.5 to 2
  slots (32 < 40: a balanced router would drop), ours rounds up to 3. Where the division is
  exact (32 tokens) the two agree. Both sides are read from the graphs the layers build."""
  assert _moe_py_graph_sizes(40, 16, 1.0) == (40, 2)
  assert _our_sizes(40, 16, 1.0) == (40, 3)
  assert _moe_py_graph_sizes(32, 16, 1.0) == _our_sizes(32, 16, 1.0) == (32, 2)


def test_padding_is_left_out_of_the_balance_loss():
  """With padding, f_i and P_i average over real tokens only (hand-computed here)."""
  num_experts, group_size = 4, 8
  rng = np.random.RandomState(5)
  x, probe = _inputs(rng, 2, group_size)
  weights = _weights(rng, num_experts, router_scale=2.0)
  mask = np.ones((2, group_size), np.float32)
  mask[:, 5:] = 0.0
  layer = layers.SwitchFFN(
      num_experts=num_experts, hidden_size=HIDDEN, group_size=group_size,
      capacity_factor_train=2.0, min_expert_capacity=1, router_policy_train="argmax",
      summaries=False)
  run = _run_ours(x, probe, weights, layer, train=True, nonpadding=(mask, _dims(2, group_size)[:2]))
  logits = x[0] @ weights["router"]
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  per_group = []
  for g in range(2):
    real = probs[g][mask[g] == 1]
    f = np.bincount(real.argmax(-1), minlength=num_experts) / len(real)
    per_group.append(num_experts * np.sum(f * real.mean(0)))
  np.testing.assert_allclose(run.outputs["aux"], 0.01 * np.mean(per_group), rtol=1e-5)
  # Padding tokens are not processed at all.
  assert np.all(run.outputs["y"][:, 5:] == 0.0)
