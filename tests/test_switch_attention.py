"""Switch attention (App. A): routed q/k/v projections inside Mesh-TF self-attention."""

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import transformer, transformer_layers

from mesh_harness import run_on_mesh
from mtf_switch import attention

F32 = mtf.VariableDType(tf.float32)
HEADS, D_KV, D_MODEL, VOCAB, LENGTH = 2, 4, 8, 16, 8


def _model(layer, mesh_shape="", layout=""):
  stack = transformer.LayerStack(
      [layer], sublayers_initial=[], sublayers_final=[],
      sublayers_per_layer=[transformer.sublayer_call_layer, transformer.sublayer_residual])
  return transformer.Unitransformer(
      layer_stack=stack, d_model=D_MODEL, input_vocab_size=VOCAB, output_vocab_size=VOCAB,
      autoregressive=True, max_length=LENGTH, name="decoder", vocab_divisor=1,
      layout=layout, mesh_shape=mesh_shape)


def _run(layer, tokens, weights, grad=False, mesh_shape="", layout=""):
  model = _model(layer, mesh_shape, layout)
  dims = [mtf.Dimension("batch", tokens.shape[0]), mtf.Dimension("length", LENGTH)]

  def build(mesh, inputs):
    logits, loss = model.call_simple(
        inputs=inputs["inputs"], targets=inputs["targets"], compute_loss=True,
        mode="train", variable_dtype=F32)
    return {"logits": logits, "loss": loss}

  feed = {"inputs": (tokens, dims), "targets": (np.roll(tokens, -1, axis=1), dims)}
  return run_on_mesh(build, feed, mesh_shape=mesh_shape, layout=layout, weights=weights,
                     grad_of="loss" if grad else None)


def _tokens(seed=0, batch=2):
  return np.random.RandomState(seed).randint(1, VOCAB, size=(batch, LENGTH)).astype(np.int32)


def _shared_weights(rng):
  return {
      "decoder/embedding": rng.randn(VOCAB, D_MODEL).astype(np.float32),
      "positional_embedding": rng.randn(LENGTH, D_MODEL).astype(np.float32) * 0.3,
      "logits/kernel": rng.randn(D_MODEL, VOCAB).astype(np.float32) * 0.3,
      "/o": rng.randn(HEADS * D_KV, D_MODEL).astype(np.float32) * 0.3,
  }


def test_one_expert_switch_attention_equals_self_attention():
  """One expert has gate 1 and keeps every token, so App. A reduces to plain attention with
  W_q = W_q^0 / sqrt(d_kv) (Mesh-TF folds that scale into W_q's init)."""
  rng = np.random.RandomState(1)
  shared = _shared_weights(rng)
  wq, wk, wv = (rng.randn(D_MODEL, HEADS * D_KV).astype(np.float32) for _ in range(3))
  dense = transformer_layers.SelfAttention(num_heads=HEADS, key_value_size=D_KV)
  switch = attention.SwitchAttention(
      num_experts=1, capacity_factor_train=1.0, router_policy_train="argmax",
      num_heads=HEADS, key_value_size=D_KV, load_balance_loss_coef=0.0, summaries=False)
  tokens = _tokens()
  dense_run = _run(dense, tokens, dict(shared, **{"/q": wq / np.sqrt(D_KV), "/k": wk, "/v": wv}))
  qkv = np.concatenate([wq, wk, wv], axis=1)[None]
  switch_run = _run(switch, tokens, dict(shared, **{"qkv/kernel": qkv}))
  np.testing.assert_allclose(switch_run.outputs["logits"], dense_run.outputs["logits"],
                             rtol=1e-4, atol=1e-4)


def test_switch_attention_trains_its_experts_and_router():
  layer = attention.SwitchAttention(num_experts=4, capacity_factor_train=2.0,
                                    num_heads=HEADS, key_value_size=D_KV)
  run = _run(layer, _tokens(2, batch=4), {}, grad=True)
  names = sorted(run.variable_grads)
  router = [n for n in names if n.endswith("router/kernel")]
  experts = [n for n in names if n.endswith("qkv/kernel")]
  assert router and experts, names
  assert run.variables[experts[0]].shape == (4, D_MODEL, 3 * HEADS * D_KV)
  assert np.abs(run.variable_grads[router[0]]).max() > 0
  assert np.abs(run.variable_grads[experts[0]]).max() > 0
  assert np.isfinite(run.outputs["loss"])


def test_switch_attention_is_layout_independent():
  layer = attention.SwitchAttention(num_experts=4, capacity_factor_train=1.0,
                                    router_policy_train="argmax", num_heads=HEADS,
                                    key_value_size=D_KV, group_size=8)
  tokens = _tokens(3, batch=4)
  one = _run(layer, tokens, {}, grad=True)
  weights = {name: value for name, value in one.variables.items()}
  one = _run(layer, tokens, weights, grad=True)
  four = _run(layer, tokens, weights, grad=True, mesh_shape="batch:4",
              layout="batch:batch;experts:batch")
  np.testing.assert_allclose(four.outputs["loss"], one.outputs["loss"], rtol=1e-5)
  for name, grad in one.variable_grads.items():
    np.testing.assert_allclose(four.variable_grads[name], grad, rtol=1e-4, atol=1e-5,
                               err_msg=name)


@pytest.mark.parametrize("kwargs, message", [
    (dict(shared_kv=True), "shared_kv=True"),
    (dict(num_memory_heads=1), "num_memory_heads=1"),
    (dict(capacity_factor_train=0.0), "capacity_factor_train must be"),
])
def test_unsupported_attention_settings_fail_at_build_time(kwargs, message):
  with pytest.raises(ValueError, match=message):
    attention.SwitchAttention(**kwargs)
