"""The Switch layers inside a whole Mesh-TF Bitransformer: it trains, and the aux loss counts.

A tiny encoder-decoder (d_model 16, one block each, vocabulary 32, length 8) whose FFNs are
``mtf_switch.layers.SwitchFFN`` (or ``MoEFFN``) is trained on one fixed batch of a copy task
(targets = inputs, random token ids), lowered on two virtual CPU devices with data and expert
parallelism ("batch:batch;experts:batch"), the way ``mesh_tensorflow/transformer/utils.py``
builds its train op: gradients of the model loss, optimizer assignments, and the lowered
assignment operations as the train op.
"""

import dataclasses
import functools
from typing import Dict, List, Optional

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import transformer, transformer_layers

from mtf_switch import layers

F32 = mtf.VariableDType(tf.float32)
BF16 = mtf.VariableDType(tf.float32, tf.float32, tf.bfloat16)
BATCH, LENGTH, VOCAB, D_MODEL = 8, 8, 32, 16
MESH_SHAPE, LAYOUT = "batch:2", "batch:batch;experts:batch"
TRAIN_STEPS = 30

# 8 x 8 = 64 tokens in groups of 16: 4 groups, 2 per device; 4 experts, 2 per device.
SWITCH_KWARGS = dict(num_experts=4, hidden_size=32, group_size=16, capacity_factor_train=1.25,
                     load_balance_loss_coef=0.01, router_policy_train="argmax")
ATTENTION_KWARGS = {"num_heads": 2, "key_value_size": 8}

# The sublayers of mesh_tensorflow's defaults.gin; LayerStack has no defaults without gin.
_LAYER_STACK = functools.partial(
    transformer.LayerStack,
    sublayers_initial=[transformer.sublayer_dropout],
    sublayers_per_layer=[transformer.sublayer_rms_norm, transformer.sublayer_call_layer,
                         transformer.sublayer_dropout, transformer.sublayer_residual],
    sublayers_final=[transformer.sublayer_rms_norm, transformer.sublayer_dropout])


def _record_aux_losses(layer) -> List[mtf.Tensor]:
  """Makes this layer instance keep each aux loss it adds to the model's losses.

  Wrapping the instance, not subclassing, keeps the class name and so the variable scopes
  (".../SwitchFFN/router/kernel") exactly as a gin-configured model has them.
  """
  recorded = []
  apply = layer.apply

  def recording_apply(*args, **kwargs):
    result = apply(*args, **kwargs)
    recorded.append(result.aux_loss)
    return result

  layer.apply = recording_apply
  return recorded


def _tokens():
  # Ids from 2 up: 0 is padding and 1 is EOS in Mesh-TF's conventions.
  return np.random.RandomState(0).randint(2, VOCAB, size=(BATCH, LENGTH)).astype(np.int32)


def _bitransformer(ffn_cls, ffn_kwargs):
  """Encoder [SelfAttention, FFN] and decoder [SelfAttention, EncDecAttention, FFN]."""
  ffn = [ffn_cls, dict(ffn_kwargs)]

  def unitransformer(layer_specs, **kwargs):
    stack = transformer.make_layer_stack(layers=layer_specs, layer_stack_cls=_LAYER_STACK,
                                         num_layers=1)
    # vocab_divisor=8 keeps the padded vocabulary at 32, so the initial loss is about ln 32.
    return transformer.Unitransformer(
        layer_stack=stack, d_model=D_MODEL, max_length=LENGTH, vocab_divisor=8,
        layout=LAYOUT, mesh_shape=MESH_SHAPE, **kwargs)

  encoder = unitransformer(
      [[transformer_layers.SelfAttention, ATTENTION_KWARGS], ffn],
      input_vocab_size=VOCAB, output_vocab_size=None, autoregressive=False, name="encoder")
  decoder = unitransformer(
      [[transformer_layers.SelfAttention, ATTENTION_KWARGS],
       [transformer_layers.EncDecAttention, ATTENTION_KWARGS], ffn],
      input_vocab_size=VOCAB, output_vocab_size=VOCAB, autoregressive=True, name="decoder")
  return transformer.Bitransformer(encoder, decoder)


@dataclasses.dataclass
class TrainRun:
  losses: List[float]                     # losses[i] is the loss before step i; last: after
  initial_aux_losses: List[float]         # each Switch layer's aux loss before any step
  initial_values: Dict[str, np.ndarray]   # trainable variables before any step, by name
  switch_layers: int                      # how many FFN layers the model has


def _train(ffn_cls, ffn_kwargs, steps, variable_dtype=F32,
           initial_values: Optional[Dict[str, np.ndarray]] = None, seed=0) -> TrainRun:
  """Builds, lowers and trains the tiny model; returns the loss before each step and after."""
  graph = tf.Graph()
  with graph.as_default():
    tf.set_random_seed(seed)
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    tokens = mtf.import_tf_tensor(
        mesh, tf.constant(_tokens()),
        mtf.Shape([mtf.Dimension("batch", BATCH), mtf.Dimension("length", LENGTH)]))
    model = _bitransformer(ffn_cls, ffn_kwargs)
    ffn_layers = [layer for stack in (model.encoder.layer_stack, model.decoder.layer_stack)
                  for layer in stack.layers if isinstance(layer, ffn_cls)]
    recorded = [_record_aux_losses(layer) for layer in ffn_layers]
    _, loss = model.call_simple(tokens, tokens, compute_loss=True, mode="train",
                                variable_dtype=variable_dtype)
    variables = mtf_graph.trainable_variables
    grads = mtf.gradients([loss], [v.outputs[0] for v in variables])
    optimizer = mtf.optimize.AdamWeightDecayOptimizer(learning_rate=1e-2)
    updates = optimizer.apply_grads(grads, variables)
    aux_losses = [aux for layer_losses in recorded for aux in layer_losses]

    shape = mtf.convert_to_shape(MESH_SHAPE)
    mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(
        shape, LAYOUT, ["/cpu:%d" % i for i in range(shape.size)])
    lowering = mtf.Lowering(mtf_graph, {mesh: mesh_impl})
    tf_loss = tf.cast(lowering.export_to_tf_tensor(loss), tf.float32)
    tf_aux = [tf.cast(lowering.export_to_tf_tensor(a), tf.float32) for a in aux_losses]
    train_op = tf.group([lowering.lowered_operation(op) for op in updates])
    masters = {v.name: v.get_master() for v in variables}
    assigns = [tf.assign(masters[name], value) for name, value in (initial_values or {}).items()]
    init = tf.global_variables_initializer()
    copy_to_slices = lowering.copy_masters_to_slices()

    config = tf.ConfigProto(device_count={"CPU": 8}, intra_op_parallelism_threads=2,
                            inter_op_parallelism_threads=2)
    with tf.Session(graph=graph, config=config) as sess:
      sess.run(init)
      if assigns:
        sess.run(assigns)
      # The slices on each device start from the masters (and so from `initial_values`).
      sess.run(copy_to_slices)
      values, aux_values = sess.run([masters, tf_aux])
      losses = []
      for _ in range(steps):
        # Loss and update in separate runs: the reported loss is that of the weights before
        # the step, with no read/write race on the variable slices.
        losses.append(float(sess.run(tf_loss)))
        sess.run(train_op)
      losses.append(float(sess.run(tf_loss)))
  return TrainRun(losses=losses, initial_aux_losses=[float(a) for a in aux_values],
                  initial_values=values, switch_layers=len(ffn_layers))


@pytest.fixture(scope="module")
def switch_run():
  """Thirty training steps of the Switch Bitransformer (shared by several tests)."""
  return _train(layers.SwitchFFN, SWITCH_KWARGS, TRAIN_STEPS)


def test_switch_bitransformer_training_reduces_the_loss(switch_run):
  # The Switch layers replaced the dense FFNs of both stacks: their experts are model weights.
  names = set(switch_run.initial_values)
  assert "encoder/block_000/layer_001/SwitchFFN/router/kernel" in names
  assert "decoder/block_000/layer_002/SwitchFFN/router/kernel" in names
  assert switch_run.initial_values["decoder/block_000/layer_002/SwitchFFN/wi/kernel"].shape == (
      SWITCH_KWARGS["num_experts"], D_MODEL, SWITCH_KWARGS["hidden_size"])
  assert not any("DenseReluDense" in name for name in names)
  losses = switch_run.losses
  assert len(losses) == TRAIN_STEPS + 1
  assert np.all(np.isfinite(losses))
  # An untrained model is near uniform over the 32 ids: cross-entropy about ln 32 = 3.47, plus
  # the softmax z-loss and the aux losses.
  assert 3.2 < losses[0] < 4.5
  # Memorising one batch of copies: far below the start (observed about 0.1-0.5).
  assert losses[-1] < 0.5 * losses[0]
  assert min(losses[-10:]) < 0.25 * losses[0]


def test_aux_loss_of_both_switch_layers_is_part_of_the_training_loss(switch_run):
  """Same weights, load_balance_loss_coef 0.01 vs 0: the losses differ by the recorded aux."""
  assert switch_run.switch_layers == 2  # one in the encoder, one in the decoder
  aux = switch_run.initial_aux_losses
  assert len(aux) == 2
  # alpha * N * sum_i f_i P_i: at least ~alpha for a near-uniform router, at most alpha * N.
  for value in aux:
    assert 0.5 * 0.01 < value < 0.01 * SWITCH_KWARGS["num_experts"]

  no_aux = _train(layers.SwitchFFN, dict(SWITCH_KWARGS, load_balance_loss_coef=0.0), 0,
                  initial_values=switch_run.initial_values)
  assert no_aux.initial_aux_losses == [0.0, 0.0]
  assert sorted(no_aux.initial_values) == sorted(switch_run.initial_values)
  for name, value in switch_run.initial_values.items():
    np.testing.assert_array_equal(no_aux.initial_values[name], value, err_msg=name)
  difference = switch_run.losses[0] - no_aux.losses[0]
  np.testing.assert_allclose(difference, sum(aux), rtol=1e-4)


def test_bfloat16_activations_train_and_stay_finite(switch_run):
  # The float32 run's initial weights, so the first losses are directly comparable.
  run = _train(layers.SwitchFFN, SWITCH_KWARGS, 4, variable_dtype=BF16,
               initial_values=switch_run.initial_values)
  assert np.all(np.isfinite(run.losses))
  # Mesh-TF sums the loss in the activation dtype: bfloat16, ~3 significant digits.
  np.testing.assert_allclose(run.losses[0], switch_run.losses[0], rtol=0.02)
  assert run.losses[-1] < run.losses[0] - 0.5


def test_moe_top2_bitransformer_trains():
  run = _train(layers.MoEFFN, dict(SWITCH_KWARGS, capacity_factor_train=2.0), 4)
  assert run.switch_layers == 2
  assert np.all(np.isfinite(run.losses))
  assert 3.2 < run.losses[0] < 4.5
  assert run.losses[-1] < run.losses[0] - 0.5
