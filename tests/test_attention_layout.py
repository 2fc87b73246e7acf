"""The heads-major attention (mtf_switch.attention_layout) computes mesh-tf's attention exactly.

A tiny encoder-decoder whose layers use every attention path the models here use (self
attention with relative position biases and the causal mask, encoder-decoder attention, the
Switch attention of mtf_switch.attention) is run twice from the same weights: with mesh-tf's
``attention.attention`` and with the heads-major one. Loss, logits and the gradient of every
variable must agree to float32 rounding, on one device and with heads split over a model axis.
"""

import functools

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import attention as mtf_attention
from mesh_tensorflow.transformer import transformer, transformer_layers

from mtf_switch import attention as switch_attention
from mtf_switch import attention_layout
from tests.mesh_harness import run_on_mesh

BATCH, LENGTH, VOCAB, D_MODEL = 4, 8, 32, 16
HEADS, D_KV = 2, 8

_LAYER_STACK = functools.partial(
    transformer.LayerStack,
    sublayers_initial=[],
    sublayers_per_layer=[transformer.sublayer_rms_norm, transformer.sublayer_call_layer,
                         transformer.sublayer_residual],
    sublayers_final=[transformer.sublayer_rms_norm])


def _model(layout, mesh_shape):
  attention_kwargs = dict(num_heads=HEADS, key_value_size=D_KV)
  relative = dict(attention_kwargs, relative_attention_type="bias_shared",
                  relative_attention_num_buckets=8)
  switch = dict(num_heads=HEADS, key_value_size=D_KV, num_experts=2, group_size=8,
                router_policy_train="argmax", router_policy_eval="argmax")

  def stack(layer_specs, **kwargs):
    return transformer.Unitransformer(
        layer_stack=transformer.make_layer_stack(
            layers=layer_specs, layer_stack_cls=_LAYER_STACK, num_layers=1),
        d_model=D_MODEL, max_length=LENGTH, vocab_divisor=8, layout=layout,
        mesh_shape=mesh_shape, **kwargs)

  encoder = stack([[transformer_layers.SelfAttention, relative],
                   [switch_attention.SwitchAttention, switch]],
                  input_vocab_size=VOCAB, output_vocab_size=None, autoregressive=False,
                  name="encoder")
  decoder = stack([[transformer_layers.SelfAttention, relative],
                   [transformer_layers.EncDecAttention, attention_kwargs]],
                  input_vocab_size=VOCAB, output_vocab_size=VOCAB, autoregressive=True,
                  name="decoder")
  return transformer.Bitransformer(encoder, decoder)


def _run(attention_fn, mesh_shape="", layout="", weights=None):
  rng = np.random.RandomState(0)
  inputs = rng.randint(2, VOCAB, size=(BATCH, LENGTH)).astype(np.int32)
  targets = rng.randint(2, VOCAB, size=(BATCH, LENGTH)).astype(np.int32)
  dims = [mtf.Dimension("batch", BATCH), mtf.Dimension("length", LENGTH)]

  def build(mesh, tensors):
    del mesh
    model = _model(layout, mesh_shape)
    logits, loss = model.call_simple(
        tensors["inputs"], tensors["targets"], compute_loss=True, mode="train",
        variable_dtype=mtf.VariableDType(tf.float32))
    return {"loss": loss, "logits": logits}

  original = mtf_attention.attention
  mtf_attention.attention = attention_fn
  try:
    return run_on_mesh(build, {"inputs": (inputs, dims), "targets": (targets, dims)},
                       mesh_shape=mesh_shape, layout=layout, weights=weights, grad_of="loss")
  finally:
    mtf_attention.attention = original


@pytest.mark.parametrize("mesh_shape,layout", [
    ("", ""), ("model:2", "heads:model"), ("batch:2", "batch:batch")])
def test_heads_major_attention_equals_mesh_tf(mesh_shape, layout):
  reference = _run(attention_layout.MESH_TF_ATTENTION, mesh_shape, layout)
  run = _run(attention_layout.attention, mesh_shape, layout, weights=reference.variables)
  # Both started from the same weights (the second run assigned the first's).
  assert sorted(run.variables) == sorted(reference.variables)
  assert any("SwitchAttention" in name for name in reference.variable_grads)
  assert any("relative_attention_bias" in name for name in reference.variable_grads)
  for name in ("loss", "logits"):
    np.testing.assert_allclose(run.outputs[name], reference.outputs[name], rtol=1e-5,
                               atol=1e-6, err_msg=name)
  assert sorted(run.variable_grads) == sorted(reference.variable_grads)
  for name, grad in reference.variable_grads.items():
    assert np.abs(grad).max() > 0, name
    np.testing.assert_allclose(run.variable_grads[name], grad, rtol=1e-4, atol=1e-6,
                               err_msg=name)


def test_heads_major_order_puts_shared_dims_first_then_query_length():
  batch, length, heads, d_kv, memory = (
      mtf.Dimension(n, s) for n, s in
      (("batch", 2), ("length", 3), ("heads", 4), ("d_kv", 5), ("memory_length", 3)))
  q_shape = mtf.Shape([batch, length, heads, d_kv])
  memory_shape = mtf.Shape([batch, memory, heads, d_kv])
  assert attention_layout.heads_major_order(q_shape, memory_shape, d_kv) == [
      batch, heads, length, d_kv]


def test_install_replaces_and_uninstall_restores_mesh_tf_attention():
  try:
    attention_layout.install()
    assert mtf_attention.attention is attention_layout.attention
  finally:
    attention_layout.uninstall()
  assert mtf_attention.attention is attention_layout.MESH_TF_ATTENTION


def test_the_command_line_layout_setting_is_checked():
  assert attention_layout.use_heads_major({})
  assert attention_layout.use_heads_major({"SWITCH_ATTENTION_LAYOUT": "heads_major"})
  assert not attention_layout.use_heads_major({"SWITCH_ATTENTION_LAYOUT": "mesh_tf"})
  with pytest.raises(ValueError, match="SWITCH_ATTENTION_LAYOUT='mesh-tf'"):
    attention_layout.use_heads_major({"SWITCH_ATTENTION_LAYOUT": "mesh-tf"})
