"""The Switch layer's behaviour, with numbers that can be checked by hand."""

import math

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mesh_harness import run_on_mesh
from mtf_switch import dispatch, layers, routing

F32 = mtf.VariableDType(tf.float32)
BF16 = mtf.VariableDType(tf.float32, tf.float32, tf.bfloat16)


def _dims(batch, length, d_model):
  return [mtf.Dimension("batch", batch), mtf.Dimension("length", length),
          mtf.Dimension("d_model", d_model)]


def _apply(layer, x, weights, train=True, dtype=tf.float32, grad_of=None, seed=0,
           variable_dtype=F32):
  """Runs layer.apply on x (numpy [batch, length, d_model]); returns the MeshRun."""

  def build(mesh, inputs):
    inp = mtf.cast(inputs["x"], dtype)
    out = layer.apply(inp, train=train, variable_dtype=variable_dtype)
    stats = out.routing.statistics
    result = {"y": mtf.cast(out.outputs, tf.float32), "aux": mtf.cast(out.aux_loss, tf.float32),
              "dropped": stats.dropped_fraction, "load": stats.expert_fraction,
              "entropy": stats.router_entropy, "sum_y": mtf.reduce_sum(out.outputs)}
    return result

  return run_on_mesh(build, {"x": (x, _dims(*x.shape))}, weights=weights, grad_of=grad_of,
                     seed=seed)


def _all_to_expert_zero(num_experts, d_model, hidden, logit=5.0):
  """Weights whose router sends every token with x[..., 0] = 1 to expert 0 with logit 5."""
  router = np.zeros((d_model, num_experts), np.float32)
  router[0, 0] = logit
  rng = np.random.RandomState(0)
  return {
      "router/kernel": router,
      "wi/kernel": rng.randn(num_experts, d_model, hidden).astype(np.float32),
      "wo/kernel": rng.randn(num_experts, hidden, d_model).astype(np.float32),
  }


def _tokens_with_first_feature_one(batch, length, d_model, seed=1):
  x = np.random.RandomState(seed).randn(batch, length, d_model).astype(np.float32)
  x[..., 0] = 1.0
  return x


def test_tokens_over_capacity_are_dropped_and_kept_ones_are_gated_ffn_outputs():
  # One group of 8 tokens, 4 experts, capacity factor 1 -> 2 slots per expert. Every token
  # picks expert 0, so tokens 0 and 1 are processed and tokens 2..7 are dropped.
  layer = layers.SwitchFFN(num_experts=4, hidden_size=6, group_size=8, capacity_factor_train=1.0,
                           min_expert_capacity=1, router_policy_train="argmax", summaries=False)
  weights = _all_to_expert_zero(4, 3, 6)
  x = _tokens_with_first_feature_one(1, 8, 3)
  run = _apply(layer, x, weights)
  y = run.outputs["y"][0]
  gate = math.exp(5.0) / (math.exp(5.0) + 3.0)
  expected = gate * np.maximum(x[0, :2] @ weights["wi/kernel"][0], 0.0) @ weights["wo/kernel"][0]
  np.testing.assert_allclose(y[:2], expected, rtol=1e-5)
  assert np.all(y[2:] == 0.0)  # a zero update: the residual carries the token unchanged
  assert run.outputs["dropped"] == pytest.approx(0.75)
  np.testing.assert_allclose(run.outputs["load"], [1.0, 0.0, 0.0, 0.0])
  # All tokens on expert 0 with probability p0: loss = alpha * N * (1 * p0).
  assert run.outputs["aux"] == pytest.approx(0.01 * 4 * gate, rel=1e-6)


def test_dropped_token_leaves_a_residual_layer_stack_unchanged():
  """In a Mesh-TF LayerStack (norm -> layer -> dropout -> residual add), a dropped token's
  output equals its input exactly."""
  from mesh_tensorflow.transformer import transformer

  layer = layers.SwitchFFN(num_experts=4, hidden_size=6, group_size=8, capacity_factor_train=1.0,
                           min_expert_capacity=1, router_policy_train="argmax", summaries=False)
  stack = transformer.LayerStack(
      [layer], sublayers_initial=[], sublayers_final=[],
      sublayers_per_layer=[transformer.sublayer_rms_norm, transformer.sublayer_call_layer,
                           transformer.sublayer_residual])
  model = transformer.Unitransformer(
      layer_stack=stack, d_model=3, input_vocab_size=8, output_vocab_size=8, autoregressive=False,
      max_length=8)
  x = _tokens_with_first_feature_one(1, 8, 3)
  # The layer norm's output is what the router sees; scale=1, so keep x[..., 0] = 1 routing
  # by using a router weight large enough to win for any normalised token.
  weights = _all_to_expert_zero(4, 3, 6, logit=50.0)

  def build(mesh, inputs):
    context = transformer.Context(
        model=model, mesh=mesh, batch_dims=inputs["x"].shape.dims[:1],
        length_dim=inputs["x"].shape.dims[1], variable_dtype=F32, mode="train",
        losses=[], sequence_id=1)
    context.layer_outputs = []
    with tf.variable_scope("stack"):
      y = stack.call(context, inputs["x"])
    return {"y": y, "aux": context.losses[0]}

  run = run_on_mesh(build, {"x": (x, _dims(1, 8, 3))}, weights=weights)
  np.testing.assert_array_equal(run.outputs["y"][0, 2:], x[0, 2:])
  assert not np.allclose(run.outputs["y"][0, :2], x[0, :2])


def test_balance_loss_is_exactly_alpha_under_uniform_routing():
  # A zero router gives every expert probability 1/N, so N * sum_i f_i / N = 1 whatever f is.
  layer = layers.SwitchFFN(num_experts=8, hidden_size=4, group_size=16,
                           router_policy_train="argmax", load_balance_loss_coef=0.01)
  rng = np.random.RandomState(2)
  weights = {"router/kernel": np.zeros((4, 8), np.float32)}
  run = _apply(layer, rng.randn(4, 8, 4).astype(np.float32), weights)
  assert run.outputs["aux"] == pytest.approx(0.01, rel=1e-6)
  assert run.outputs["entropy"] == pytest.approx(math.log(8), rel=1e-5)


def test_balance_loss_is_alpha_for_balanced_choices_and_n_alpha_for_collapse():
  # Two tokens, two experts, logits +-L: each expert gets one token with probability p and
  # the other with 1 - p: f = (1/2, 1/2), P = (1/2, 1/2) -> loss = 2 * 2 * 1/4 = 1.
  layer = layers.SwitchFFN(num_experts=2, hidden_size=4, group_size=2, min_expert_capacity=1,
                           router_policy_train="argmax")
  router = np.array([[3.0, -3.0], [0.0, 0.0]], np.float32)
  x = np.array([[[1.0, 0.0], [-1.0, 0.0]]], np.float32)
  run = _apply(layer, x, {"router/kernel": router})
  assert run.outputs["aux"] == pytest.approx(0.01, rel=1e-6)
  # Both tokens on expert 0 with probability p: loss = 2 * (1 * p) -> 2 alpha as p -> 1.
  x = np.array([[[1.0, 0.0], [1.0, 0.0]]], np.float32)
  run = _apply(layer, x, {"router/kernel": router})
  p = 1.0 / (1.0 + math.exp(-6.0))
  assert run.outputs["aux"] == pytest.approx(0.01 * 2 * p, rel=1e-6)


def test_router_runs_in_float32_under_bfloat16_activations():
  layer = layers.SwitchFFN(num_experts=4, hidden_size=8, group_size=16,
                           router_policy_train="argmax", summaries=False)
  graph = tf.Graph()
  with graph.as_default():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    x = mtf.zeros(mesh, _dims(2, 8, 4), dtype=tf.bfloat16)
    logits = routing.SwitchRouter().router_logits(
        mtf.reshape(x, [mtf.Dimension("batch", 1), mtf.Dimension("tokens", 16), x.shape[-1]]),
        mtf.Dimension("experts", 4), True, BF16)
    assert logits.dtype == tf.float32
    out = layer.apply(x, train=True, variable_dtype=BF16)
    assert out.outputs.dtype == tf.bfloat16
    # The router's small per-token choices are float32; the einsum path's one-hot tensors
    # are built from them in the activation dtype.
    assert {t.dtype for c in out.routing.choices
            for t in (c.expert, c.slot, c.kept, c.gate)} == {tf.float32}
    assert dispatch.dispatch_mask(out.routing, tf.bfloat16).dtype == tf.bfloat16
    assert out.routing.load_balance_loss.dtype == tf.float32
    assert out.routing.statistics.router_entropy.dtype == tf.float32
    # The router's softmax is computed on float32 tensors: no bfloat16 softmax in the graph.
    softmax_dtypes = {op.outputs[0].dtype for op in mesh.graph.operations
                      if "softmax" in op.name.lower() and op.outputs}
    assert softmax_dtypes == {tf.float32}


def test_bfloat16_layer_routes_like_float32_and_stays_close():
  layer = layers.SwitchFFN(num_experts=4, hidden_size=8, group_size=16,
                           router_policy_train="argmax", summaries=False)
  rng = np.random.RandomState(3)
  x = rng.randn(2, 8, 4).astype(np.float32)
  weights = {"router/kernel": rng.randn(4, 4).astype(np.float32)}
  f32 = _apply(layer, x, weights)
  bf16 = _apply(layer, x, weights, dtype=tf.bfloat16, variable_dtype=BF16)
  np.testing.assert_allclose(bf16.outputs["load"], f32.outputs["load"])
  np.testing.assert_allclose(bf16.outputs["y"], f32.outputs["y"], rtol=0.05, atol=0.05)


def _bfloat16_round(values):
  """values rounded to the nearest bfloat16 (round to nearest even), as float32."""
  bits = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
  bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
  return bits.astype(np.uint32).view(np.float32)


def test_bfloat16_router_option_computes_logits_and_softmax_in_bfloat16():
  """Table 2's "bfloat16 everywhere": with router_dtype="bfloat16" the logits and the
  probabilities are bfloat16 values (widened to float32 afterwards); the float32 router's
  are not."""
  rng = np.random.RandomState(12)
  x = rng.randn(1, 16, 8).astype(np.float32)
  router = rng.randn(8, 4).astype(np.float32)
  dims = [mtf.Dimension("batch", 1), mtf.Dimension("tokens", 16), mtf.Dimension("d_model", 8)]
  experts = mtf.Dimension("experts", 4)
  results = {}
  for dtype in routing.ROUTER_DTYPES:
    switch_router = routing.SwitchRouter(policy_train="argmax", dtype=dtype)

    def build(mesh, inputs, switch_router=switch_router):
      logits, probs = switch_router._compute_router_probabilities(  # noqa: SLF001
          mtf.cast(inputs["x"], tf.bfloat16), experts, True, BF16)
      assert logits.dtype == probs.dtype == tf.float32
      return {"logits": logits, "probs": probs}

    results[dtype] = run_on_mesh(build, {"x": (x, dims)}, weights={"router/kernel": router})
  # Under bfloat16 activations Mesh-TF reads every weight in the activation dtype, the
  # router's too (as in moe.py): only the product and what follows are float32.
  exact_logits = _bfloat16_round(x) @ _bfloat16_round(router)
  exact = np.exp(exact_logits - exact_logits.max(-1, keepdims=True))
  exact /= exact.sum(-1, keepdims=True)
  f32, bf16 = results["float32"].outputs, results["bfloat16"].outputs
  np.testing.assert_allclose(f32["probs"], exact, rtol=1e-5, atol=1e-6)
  for name in ("logits", "probs"):
    np.testing.assert_array_equal(bf16[name], _bfloat16_round(bf16[name]))
    assert not np.array_equal(f32[name], _bfloat16_round(f32[name]))
  # bfloat16 keeps 8 significant bits: errors of a few parts in a thousand, not more.
  np.testing.assert_allclose(bf16["probs"], exact, rtol=0.05, atol=0.02)
  assert np.abs(bf16["probs"] - exact).max() > 1e-4


def test_bfloat16_router_graph_has_a_bfloat16_softmax_and_bad_dtypes_are_named():
  layer = layers.SwitchFFN(num_experts=4, hidden_size=8, group_size=16,
                           router_policy_train="argmax", router_dtype="bfloat16",
                           summaries=False)
  with tf.Graph().as_default():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    out = layer.apply(mtf.zeros(mesh, _dims(2, 8, 4), dtype=tf.bfloat16), train=True,
                      variable_dtype=BF16)
    softmax_dtypes = {op.outputs[0].dtype for op in mesh.graph.operations
                      if "softmax" in op.name.lower() and op.outputs}
    assert tf.bfloat16 in softmax_dtypes
    assert out.routing.load_balance_loss.dtype == tf.float32
  with pytest.raises(ValueError, match="router_dtype='float16'"):
    layers.SwitchFFN(num_experts=4, router_dtype="float16")


def test_gradients_reach_the_router_through_the_gate():
  """With the balance loss off, the only path to the router is y = gate * E(x)."""
  layer = layers.SwitchFFN(num_experts=4, hidden_size=6, group_size=8, capacity_factor_train=2.0,
                           router_policy_train="argmax", load_balance_loss_coef=0.0,
                           summaries=False)
  rng = np.random.RandomState(4)
  x = rng.randn(1, 8, 3).astype(np.float32)
  weights = {"router/kernel": rng.randn(3, 4).astype(np.float32),
             "wi/kernel": rng.randn(4, 3, 6).astype(np.float32),
             "wo/kernel": rng.randn(4, 6, 3).astype(np.float32)}
  run = _apply(layer, x, weights, grad_of="sum_y")
  grad = run.variable_grads["router/kernel"]
  assert np.abs(grad).max() > 1e-3
  # Central difference on one router weight agrees (routing is unchanged by a small step).
  i, j = np.unravel_index(np.abs(grad).argmax(), grad.shape)
  eps = 1e-3
  sums = []
  for sign in (1.0, -1.0):
    bumped = dict(weights)
    bumped["router/kernel"] = weights["router/kernel"].copy()
    bumped["router/kernel"][i, j] += sign * eps
    sums.append(float(_apply(layer, x, bumped).outputs["sum_y"]))
  assert (sums[0] - sums[1]) / (2 * eps) == pytest.approx(float(grad[i, j]), rel=2e-2)


def test_input_jitter_only_perturbs_training():
  layer = layers.SwitchFFN(num_experts=4, hidden_size=4, group_size=32, router_policy_train=
                           "input_jitter", jitter_eps=0.01, summaries=False)
  rng = np.random.RandomState(5)
  x = rng.randn(4, 8, 4).astype(np.float32)
  weights = {"router/kernel": rng.randn(4, 4).astype(np.float32),
             "wi/kernel": rng.randn(4, 4, 4).astype(np.float32),
             "wo/kernel": rng.randn(4, 4, 4).astype(np.float32)}
  eval_a = _apply(layer, x, weights, train=False, seed=1).outputs["y"]
  eval_b = _apply(layer, x, weights, train=False, seed=2).outputs["y"]
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a = _apply(layer, x, weights, seed=1).outputs["y"]
  train_b = _apply(layer, x, weights, seed=2).outputs["y"]
  assert not np.array_equal(train_a, train_b)


def test_input_jitter_moves_logits_by_at_most_eps_times_the_input_contributions():
  """Jitter multiplies each router input by U(1 - eps, 1 + eps), so each logit moves by at
  most eps * sum_j |x_j w_jk|; eval logits are the unperturbed W_r x."""
  eps = 0.01
  rng = np.random.RandomState(11)
  x = rng.randn(2, 16, 4).astype(np.float32)
  router = rng.randn(4, 3).astype(np.float32)
  switch_router = routing.SwitchRouter(policy_train="input_jitter", jitter_eps=eps)
  dims = [mtf.Dimension("batch", 2), mtf.Dimension("tokens", 16), mtf.Dimension("d_model", 4)]
  experts = mtf.Dimension("experts", 3)

  def build(mesh, inputs):
    with tf.variable_scope("shared", reuse=tf.AUTO_REUSE):
      jittered = switch_router.router_logits(inputs["x"], experts, True, F32)
      clean = switch_router.router_logits(inputs["x"], experts, False, F32)
    return {"jittered": jittered, "clean": clean}

  run = run_on_mesh(build, {"x": (x, dims)}, weights={"router/kernel": router})
  np.testing.assert_allclose(run.outputs["clean"], x @ router, rtol=1e-5, atol=1e-5)
  moved = np.abs(run.outputs["jittered"] - run.outputs["clean"])
  bound = eps * (np.abs(x)[..., :, None] * np.abs(router)).sum(-2)  # [b, t, experts]
  assert np.all(moved <= bound + 1e-5)
  assert moved.max() > 0.1 * bound.max()


def test_sample_policy_follows_the_router_distribution():
  # Zero router: sampling is uniform over 4 experts; 4096 tokens give each about 1/4.
  layer = layers.SwitchFFN(num_experts=4, hidden_size=4, group_size=1024,
                           router_policy_train="sample", summaries=False)
  x = np.random.RandomState(6).randn(16, 256, 4).astype(np.float32)
  load = _apply(layer, x, {"router/kernel": np.zeros((4, 4), np.float32)}).outputs["load"]
  np.testing.assert_allclose(load, 0.25, atol=0.03)
  # argmax on ties always picks expert 0.
  argmax = layers.SwitchFFN(num_experts=4, hidden_size=4, group_size=1024,
                            router_policy_train="argmax", summaries=False)
  load = _apply(argmax, x, {"router/kernel": np.zeros((4, 4), np.float32)}).outputs["load"]
  np.testing.assert_allclose(load, [1.0, 0.0, 0.0, 0.0])


def test_expert_dropout_applies_in_training_only():
  kwargs = dict(num_experts=2, hidden_size=64, group_size=16, router_policy_train="argmax",
                capacity_factor_train=2.0, capacity_factor_eval=2.0, summaries=False)
  rng = np.random.RandomState(7)
  x = rng.randn(2, 8, 4).astype(np.float32)
  weights = {"router/kernel": rng.randn(4, 2).astype(np.float32),
             "wi/kernel": rng.randn(2, 4, 64).astype(np.float32),
             "wo/kernel": rng.randn(2, 64, 4).astype(np.float32)}
  plain = layers.SwitchFFN(**kwargs)
  dropped = layers.SwitchFFN(expert_dropout_rate=0.4, **kwargs)
  np.testing.assert_allclose(_apply(dropped, x, weights, train=False).outputs["y"],
                             _apply(plain, x, weights, train=False).outputs["y"], rtol=1e-6)
  assert not np.allclose(_apply(dropped, x, weights).outputs["y"],
                         _apply(plain, x, weights).outputs["y"])


def test_geglu_expert_is_gelu_times_linear():
  layer = layers.SwitchFFN(num_experts=2, hidden_size=5, group_size=4, capacity_factor_train=2.0,
                           activation="geglu", router_policy_train="argmax", summaries=False)
  rng = np.random.RandomState(8)
  x = rng.randn(1, 4, 3).astype(np.float32)
  weights = {"router/kernel": np.zeros((3, 2), np.float32),  # everything to expert 0, gate 1/2
             "wi_0/kernel": rng.randn(2, 3, 5).astype(np.float32),
             "wi_1/kernel": rng.randn(2, 3, 5).astype(np.float32),
             "wo/kernel": rng.randn(2, 5, 3).astype(np.float32)}
  run = _apply(layer, x, weights)

  def gelu(v):  # the tanh approximation mtf.gelu uses
    return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))

  hidden = gelu(x[0] @ weights["wi_0/kernel"][0]) * (x[0] @ weights["wi_1/kernel"][0])
  np.testing.assert_allclose(run.outputs["y"][0], 0.5 * hidden @ weights["wo/kernel"][0],
                             rtol=1e-4, atol=1e-5)


def test_weights_start_truncated_normal_with_scale_point_one():
  layer = layers.SwitchFFN(num_experts=8, hidden_size=256, group_size=64, summaries=False)
  run = _apply(layer, np.zeros((2, 32, 64), np.float32), weights={})
  for name, fan_in in (("router/kernel", 64), ("wi/kernel", 64), ("wo/kernel", 256)):
    sigma = math.sqrt(0.1 / fan_in)
    values = run.variables[name]
    assert np.abs(values).max() <= 2 * sigma + 1e-7, name  # truncated at two sigma
    # A normal truncated at +-2 sigma has standard deviation 0.880 sigma.
    assert values.std() == pytest.approx(0.880 * sigma, rel=0.05), name


def test_summaries_name_the_layer():
  layer = layers.SwitchFFN(num_experts=2, hidden_size=4, group_size=8)
  graph = tf.Graph()
  with graph.as_default():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    with tf.variable_scope("encoder/layer_001"):
      layer.apply(mtf.zeros(mesh, _dims(1, 8, 4)), train=True, variable_dtype=F32)
    names = [op.name for op in mesh.graph.operations
             if isinstance(op, mtf.ops.ScalarSummaryOperation)]
  prefix = "moe/encoder/layer_001/"
  for suffix in ("expert_load/000", "expert_load/001", "expert_load_max", "expert_load_min",
                 "dropped_fraction", "router_entropy", "load_balance_loss", "aux_loss"):
    assert any(prefix + suffix in name for name in names), (suffix, names)


@pytest.mark.parametrize("kwargs, message", [
    (dict(capacity_factor_train=0.0), "capacity_factor_train must be .* got 0.0"),
    (dict(capacity_factor_eval=-1.0), "capacity_factor_eval must be .* got -1.0"),
    (dict(router_policy_train="jitter"), "router policy_train='jitter'"),
    (dict(router_policy_eval="top2"), "router policy_eval='top2'"),
    (dict(activation="tanh"), "activation='tanh'"),
    (dict(num_experts=0), "num_experts must be a positive integer, got 0"),
    (dict(expert_dropout_rate=1.0), "expert_dropout_rate must be in"),
    (dict(num_overflow_choices=4, num_experts=4), "num_overflow_choices=4"),
    (dict(jitter_eps=-0.1), "jitter_eps"),
])
def test_bad_configuration_names_the_value(kwargs, message):
  with pytest.raises(ValueError, match=message):
    layers.SwitchFFN(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_experts=1), "num_experts=1 is too few"),
    (dict(second_policy_train="sometimes"), "second_policy_train='sometimes'"),
    (dict(router_policy_train="sample"), "'sample' picks one expert"),
])
def test_bad_moe_configuration_names_the_value(kwargs, message):
  with pytest.raises(ValueError, match=message):
    layers.MoEFFN(**kwargs)


def test_top2_sends_each_token_to_two_experts_with_gates_summing_to_one():
  layer = layers.MoEFFN(num_experts=4, hidden_size=4, group_size=8, capacity_factor_train=4.0,
                        second_policy_train="all", summaries=False)
  rng = np.random.RandomState(9)
  x = rng.randn(1, 8, 3).astype(np.float32)

  def build(mesh, inputs):
    out = layer.apply(inputs["x"], train=True, variable_dtype=F32)
    combine_weights = dispatch.combine_weights(out.routing, tf.float32)
    dims = combine_weights.shape.dims
    return {"per_token_weight": mtf.reduce_sum(combine_weights, output_shape=dims[:2]),
            "per_token_slots": mtf.reduce_sum(dispatch.dispatch_mask(out.routing, tf.float32),
                                              output_shape=dims[:2])}

  run = run_on_mesh(build, {"x": (x, _dims(1, 8, 3))},
                    weights={"router/kernel": rng.randn(3, 4).astype(np.float32)})
  np.testing.assert_allclose(run.outputs["per_token_weight"], 1.0, rtol=1e-5)
  np.testing.assert_array_equal(run.outputs["per_token_slots"], 2.0)


def test_layers_are_configured_from_gin_and_typos_are_reported():
  import gin
  import mtf_switch  # noqa: F401  (registers the configurables)

  with gin.unlock_config():
    gin.clear_config()
    gin.parse_config("""
        mtf_switch.SwitchFFN.num_experts = 128
        mtf_switch.SwitchFFN.activation = "geglu"
        mtf_switch.MoEFFN.second_policy_eval = "none"
        mtf_switch.SwitchAttention.num_heads = 4
    """)
    try:
      assert layers.SwitchFFN().num_experts == 128
      assert layers.SwitchFFN().activation == "geglu"
      assert layers.MoEFFN().router.second_policy_eval == "none"
      import mtf_switch.attention as switch_attention
      assert switch_attention.SwitchAttention().num_heads == 4
      # Quoted, so that a message about (correctly spelled) num_experts does not match.
      with pytest.raises(ValueError, match="'num_expert'"):
        gin.parse_config("mtf_switch.SwitchFFN.num_expert = 2")
    finally:
      gin.clear_config()


def test_summaries_are_written_as_tensorflow_summaries_on_a_cpu_mesh():
  """On CPU Mesh-TF drops the TPU host call, so the layer's statistics must also exist as
  ordinary tf summaries that the Estimator writes; their values are the routing statistics."""
  layer = layers.SwitchFFN(num_experts=4, hidden_size=6, group_size=8, capacity_factor_train=1.0,
                           min_expert_capacity=1, router_policy_train="argmax")
  weights = _all_to_expert_zero(4, 3, 6)
  x = _tokens_with_first_feature_one(1, 8, 3)
  graph = tf.Graph()
  with graph.as_default():
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    inp = mtf.import_tf_tensor(mesh, tf.constant(x), mtf.Shape(_dims(1, 8, 3)))
    with tf.variable_scope("encoder/layer_000"):
      layer.apply(inp, train=True, variable_dtype=F32)
    mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl("", "", ["/cpu:0"])
    lowering = mtf.Lowering(mtf_graph, {mesh: mesh_impl})
    merged = tf.summary.merge_all()
    masters = {v.name: v.get_master() for v in mtf_graph.trainable_variables}
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      sess.run([tf.assign(masters["encoder/layer_000/" + n], w) for n, w in weights.items()])
      sess.run(lowering.copy_masters_to_slices())
      summary = tf.Summary.FromString(sess.run(merged))
  values = {v.tag: v.simple_value for v in summary.value}
  prefix = "moe/encoder/layer_000/"
  assert values[prefix + "dropped_fraction"] == pytest.approx(0.75)
  assert values[prefix + "expert_load/000"] == pytest.approx(4.0)  # all load on one of 4
  assert values[prefix + "expert_load_max"] == pytest.approx(4.0)
  assert values[prefix + "expert_load_min"] == pytest.approx(0.0)


# --- Routers as components --------------------------------------------------------------

def _outputs_of(layer, x, weights, train=True):
  run = _apply(layer, x, weights, train=train)
  return run.outputs["y"], run.outputs["aux"], run.outputs["dropped"]


def _routing_weights(num_experts, d_model=4, hidden=6, seed=13):
  rng = np.random.RandomState(seed)
  return {"router/kernel": rng.randn(d_model, num_experts).astype(np.float32) * 2.0,
          "wi/kernel": rng.randn(num_experts, d_model, hidden).astype(np.float32),
          "wo/kernel": rng.randn(num_experts, hidden, d_model).astype(np.float32)}


@pytest.mark.parametrize("given_router, old_keywords, cls", [
    (routing.SwitchRouter(policy_train="argmax"), dict(router_policy_train="argmax"),
     layers.SwitchFFN),
    (routing.SwitchRouter(policy_train="argmax", num_overflow_choices=2),
     dict(router_policy_train="argmax", num_overflow_choices=2), layers.SwitchFFN),
    (routing.MoERouter(second_policy_train="all"), dict(second_policy_train="all"),
     layers.MoEFFN),
], ids=["switch", "ntlb", "top2"])
def test_a_given_router_routes_like_the_one_built_from_the_old_keywords(given_router,
                                                                        old_keywords, cls):
  common = dict(num_experts=4, hidden_size=6, group_size=16, capacity_factor_train=1.0,
                min_expert_capacity=1, summaries=False)
  x = np.random.RandomState(14).randn(2, 8, 4).astype(np.float32)
  weights = _routing_weights(4)
  old = _outputs_of(cls(**common, **old_keywords), x, weights)
  # The router decides the algorithm: a SwitchFFN given a MoERouter is the top-2 layer.
  new = _outputs_of(layers.SwitchFFN(router=given_router, **common), x, weights)
  assert old[2] > 0.0  # the capacity binds, so the routers' slot filling matters
  for old_value, new_value in zip(old, new, strict=True):
    np.testing.assert_array_equal(new_value, old_value)


def test_routers_are_gin_configurable_components():
  import gin
  import mtf_switch  # noqa: F401

  with gin.unlock_config():
    gin.clear_config()
    gin.parse_config("""
        mtf_switch.SwitchFFN.router = @mtf_switch.SwitchRouter()
        mtf_switch.SwitchRouter.policy_train = "sample"
        mtf_switch.SwitchRouter.num_overflow_choices = 1
        mtf_switch.MoEFFN.router = @mtf_switch.MoERouter()
        mtf_switch.MoERouter.second_threshold = 0.5
        mtf_switch.SwitchAttention.router = @mtf_switch.SwitchRouter()
    """)
    try:
      router = layers.SwitchFFN().router
      assert isinstance(router, routing.SwitchRouter)
      assert (router.policy_train, router.num_overflow_choices) == ("sample", 1)
      assert layers.MoEFFN().router.second_threshold == 0.5
      import mtf_switch.attention as switch_attention
      assert switch_attention.SwitchAttention().projections.router.policy_train == "sample"
      with pytest.raises(ValueError, match="'polcy_train'"):
        gin.parse_config("mtf_switch.SwitchRouter.polcy_train = 'argmax'")
    finally:
      gin.clear_config()


def test_a_router_setting_beside_a_given_router_is_an_error():
  with pytest.raises(ValueError, match="jitter_eps=0.05 is a router setting.*SwitchRouter"):
    layers.SwitchFFN(router=routing.SwitchRouter(), jitter_eps=0.05)
  with pytest.raises(ValueError, match="second_threshold=0.3 is a router setting"):
    layers.MoEFFN(router=routing.MoERouter(), second_threshold=0.3)
  with pytest.raises(ValueError, match="router must be a mtf_switch Router"):
    layers.SwitchFFN(router="switch")


def test_the_router_checks_its_settings_against_the_layer_once():
  # The router owns the check; the layer calls it at construction, before any graph.
  with pytest.raises(ValueError, match="num_overflow_choices=3 must be .* = 2"):
    layers.SwitchFFN(num_experts=3, router=routing.SwitchRouter(num_overflow_choices=3))
  with pytest.raises(ValueError, match="num_experts=1 is too few"):
    layers.SwitchFFN(num_experts=1, router=routing.MoERouter())


def test_switch_attention_takes_the_router_settings_of_the_ffn_layers():
  import mtf_switch.attention as switch_attention

  layer = switch_attention.SwitchAttention(router_dtype="bfloat16", num_overflow_choices=1,
                                           num_experts=4)
  assert layer.projections.router.dtype == "bfloat16"
  assert layer.projections.router.num_overflow_choices == 1
  with pytest.raises(ValueError, match="router_dtype='float16'"):
    switch_attention.SwitchAttention(router_dtype="float16")


# --- Bad settings: each a ValueError at construction that names the parameter and value ---

_NAN, _INF = float("nan"), float("inf")


@pytest.mark.parametrize("cls, kwargs, message", [
    # Non-finite init scales gave all-NaN outputs and losses.
    (layers.SwitchFFN, dict(init_scale=_INF), "init_scale must be a finite number > 0, got inf"),
    (layers.SwitchFFN, dict(init_scale=_NAN), "init_scale must be a finite number > 0, got nan"),
    (layers.MoEFFN, dict(init_scale=-_INF), "init_scale must be .* got -inf"),
    # A number written as a string in gin gave a TypeError that did not name the parameter.
    (layers.SwitchFFN, dict(init_scale="0.1"), "init_scale must be .* got '0.1'"),
    (layers.SwitchFFN, dict(capacity_factor_train="1.25"), "capacity_factor_train .* got '1.25'"),
    (layers.SwitchFFN, dict(jitter_eps="0.01"), "jitter_eps .* got '0.01'"),
    (layers.SwitchFFN, dict(num_experts="8"), "num_experts must be a positive integer, got '8'"),
    (layers.SwitchFFN, dict(num_experts=8.0), "num_experts must be a positive integer, got 8.0"),
    (layers.SwitchFFN, dict(group_size=True), "group_size must be a positive integer, got True"),
    # MoEFFN accepted thresholds that make "threshold" and "random" meaningless.
    (layers.MoEFFN, dict(second_threshold=0.0), r"second_threshold must be in \(0, 1\], got 0.0"),
    (layers.MoEFFN, dict(second_threshold=-1), r"second_threshold must be in \(0, 1\], got -1"),
    (layers.MoEFFN, dict(second_threshold=_NAN), "second_threshold must be .* got nan"),
    # Non-finite coefficients and rates.
    (layers.SwitchFFN, dict(load_balance_loss_coef=_NAN), "load_balance_loss_coef .* got nan"),
    (layers.SwitchFFN, dict(z_loss_coef=_INF), "z_loss_coef .* got inf"),
    (layers.SwitchFFN, dict(sample_temperature=_INF), "sample_temperature .* got inf"),
    (layers.SwitchFFN, dict(router_input_dropout_rate=1.0), "input_dropout_rate .* got 1.0"),
    (layers.SwitchFFN, dict(expert_dropout_rate=_NAN), "expert_dropout_rate .* got nan"),
    # Strings where booleans belong are truthy: "false" would have meant True.
    (layers.SwitchFFN, dict(summaries="false"), "summaries must be True or False, got 'false'"),
    (layers.SwitchFFN, dict(skip_empty_slots="no"), "skip_empty_slots must be True, False or 'auto', got 'no'"),
    (layers.SwitchFFN, dict(batch_expert_slots="auto"), "batch_expert_slots must be True or False, got 'auto'"),
    (layers.SwitchFFN, dict(num_overflow_choices=True), "num_overflow_choices=True"),
    (layers.SwitchFFN, dict(num_overflow_choices=1.0), "num_overflow_choices=1.0"),
    (layers.SwitchFFN, dict(min_expert_capacity=0), "min_expert_capacity must be .* got 0"),
    (layers.SwitchFFN, dict(dispatch_path="Gather"), "dispatch_path='Gather'"),
])
def test_bad_setting_is_an_error_naming_it(cls, kwargs, message):
  with pytest.raises(ValueError, match=message):
    cls(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(init_scale=_INF), "init_scale must be a finite number > 0, got inf"),
    (dict(init_scale="0.1"), "init_scale must be .* got '0.1'"),
    (dict(num_experts=0), "num_experts must be a positive integer, got 0"),
    (dict(jitter_eps=_NAN), "jitter_eps .* got nan"),
])
def test_bad_switch_attention_setting_is_an_error_naming_it(kwargs, message):
  import mtf_switch.attention as switch_attention

  with pytest.raises(ValueError, match=message):
    switch_attention.SwitchAttention(**kwargs)


def test_a_batch_that_only_splits_into_one_token_groups_is_an_error_before_any_op():
  """131 x 1 tokens (prime) with group_size=64: the only groups that fit hold one token each,
  capacity 1, nothing routed; that used to build silently."""
  layer = layers.SwitchFFN(num_experts=4, hidden_size=4, group_size=64, summaries=False)
  with tf.Graph().as_default():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    with pytest.raises(ValueError, match=r"num_tokens=131 .* groups of 1 token.*group_size >= 131"):
      layer.apply(mtf.zeros(mesh, _dims(131, 1, 4)), train=True, variable_dtype=F32)
    assert not mesh.graph.all_variables
    # One token per sequence is fine when the tokens form real groups (decoding: batch 128).
    out = layer.apply(mtf.zeros(mesh, _dims(128, 1, 4)), train=False, variable_dtype=F32)
    assert out.group_plan.tokens_per_group == 64
