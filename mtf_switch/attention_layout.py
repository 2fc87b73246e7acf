"""Dot-product attention with its operands laid out heads-major, so that every product is a
plain batched matmul.

Mesh-TF's ``attention.attention`` multiplies queries [batch, length, heads, d_kv] with keys
[batch, memory_length, heads, d_kv] into logits [batch, length, heads, memory_length]: the
einsum's batch dimensions (batch, heads) are not leading, so TensorFlow's CPU einsum transposes
its 5-D operands (with the microbatch's outer dimension) around every one of the six products
of a step (two forward, four backward). Profiled on the tiny language models
(``tools/profile_train_step.py``, 32 x 160 tokens) those products ran at 4-14 GFLOP/s against
25-70 for the step's other matmuls.

``attention`` here computes the same function with q, k and v transposed once to
[other dims..., heads, length, d] (dims shared by queries and memory first, then the query
positions, then the channel), which makes logits [batch, heads, length, memory_length] and
each product a batched matmul over leading dimensions; the output is transposed back to the
shape mesh-tf's function returns. Only the order of the summations' operands changes: results
equal mesh-tf's to float rounding (tests/test_attention_layout.py).

``install`` puts it in place of ``mesh_tensorflow.transformer.attention.attention``, which
mesh-tf's attention layers look up at call time (``SelfAttention``, ``EncDecAttention`` and
the Switch attention of ``mtf_switch.attention``); ``switch_cli.patches`` lists it.
"""

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import attention as mtf_attention

# mesh-tf's own function, kept for ``uninstall`` and for the tests that compare the two.
MESH_TF_ATTENTION = mtf_attention.attention


def shared_dims(q_shape: mtf.Shape, memory_shape: mtf.Shape, key_dim: mtf.Dimension) -> list:
  """The dims q shares with the memory but the channel, in the memory's order (e.g. [batch,
  heads]): the leading, batch dimensions of every heads-major product."""
  return [d for d in memory_shape.dims if d in q_shape.dims and d != key_dim]


def heads_major_order(q_shape: mtf.Shape, memory_shape: mtf.Shape, key_dim: mtf.Dimension):
  """The dims of q reordered: those q shares with the memory first (in the memory's order),
  then q's own (its length), then ``key_dim``.

  Args:
    q_shape: queries' shape, e.g. [batch, length, heads, d_kv].
    memory_shape: keys' shape, e.g. [batch, memory_length, heads, d_kv].
    key_dim: the channel the logits sum over.
  Returns:
    a list of mtf.Dimension, e.g. [batch, heads, length, d_kv].
  """
  shared = shared_dims(q_shape, memory_shape, key_dim)
  own = [d for d in q_shape.dims if d not in shared and d != key_dim]
  return shared + own + [key_dim]


def _memory_order(shape: mtf.Shape, shared, memory_length_dim, channel_dim):
  """[shared..., any other memory dims..., memory_length, channel] for keys or values."""
  rest = [d for d in shape.dims if d not in shared and d not in (memory_length_dim, channel_dim)]
  return shared + rest + [memory_length_dim, channel_dim]


def attention(q, k, v, memory_length_dim, key_dim, value_dim, bias=None, dropout_rate=0.0,
              dropout_broadcast_dims=None, extra_logit=None, context=None, float32_logits=True,
              z_loss_coeff=None):
  """mesh-tf's ``attention.attention`` (same arguments, same result), heads-major inside.

  Args:
    q: [other_query_dims..., key_dim], e.g. [batch, length, heads, d_kv].
    k: [other_memory_dims..., memory_length, key_dim].
    v: [other_memory_dims..., memory_length, value_dim].
    (the rest): as mesh-tf's function.
  Returns:
    [q.shape - key_dim + value_dim], in q's order.
  """
  if z_loss_coeff is not None:
    # The z-loss path is mesh-tf's own; it is not used by any model here and stays untouched.
    return MESH_TF_ATTENTION(
        q, k, v, memory_length_dim, key_dim, value_dim, bias=bias, dropout_rate=dropout_rate,
        dropout_broadcast_dims=dropout_broadcast_dims, extra_logit=extra_logit,
        context=context, float32_logits=float32_logits, z_loss_coeff=z_loss_coeff)
  orig_q_shape = q.shape
  q, k, v, bias = mtf_attention.maybe_reshape_attention_input_for_2d_sharding(
      context, q, k, v, bias, [key_dim, value_dim])
  outputs_shape = q.shape - key_dim + value_dim
  q_order = heads_major_order(q.shape, k.shape, key_dim)
  shared = shared_dims(q.shape, k.shape, key_dim)
  q = mtf.transpose(q, q_order)
  k = mtf.transpose(k, _memory_order(k.shape, shared, memory_length_dim, key_dim))
  v = mtf.transpose(v, _memory_order(v.shape, shared, memory_length_dim, value_dim))
  if float32_logits:
    k = mtf.cast(k, tf.float32)
    q = mtf.cast(q, tf.float32)
  logits = mtf.layers.us_einsum([q, k], reduced_dims=[key_dim])
  if bias is not None:
    # The sum keeps the logits' heads-major order whatever the bias's order is.
    logits = mtf.add(logits, mtf.cast(bias, logits.dtype), output_shape=logits.shape)
  weights = mtf.softmax(logits, memory_length_dim, extra_logit=extra_logit)
  weights = mtf.cast(weights, v.dtype)
  weights = mtf.dropout(
      weights, context.train, 1.0 - dropout_rate,
      noise_shape=weights.shape - dropout_broadcast_dims)
  heads_major_outputs = mtf.Shape(q_order[:-1] + [value_dim])
  outputs = mtf.einsum([weights, v], heads_major_outputs)
  outputs = mtf.transpose(outputs, outputs_shape)
  return mtf.reshape(outputs, orig_q_shape - key_dim + value_dim)


# The environment variable that chooses the command line's attention, and its values.
LAYOUT_VARIABLE = "SWITCH_ATTENTION_LAYOUT"
LAYOUTS = ("heads_major", "mesh_tf")


def use_heads_major(environ) -> bool:
  """Whether the command line installs ``attention``: yes unless ``SWITCH_ATTENTION_LAYOUT``
  is ``mesh_tf`` (how the benchmarks time mesh-tf's own); any other value is an error."""
  value = environ.get(LAYOUT_VARIABLE, "heads_major")
  if value not in LAYOUTS:
    raise ValueError(f"{LAYOUT_VARIABLE}={value!r}: expected one of {', '.join(LAYOUTS)}")
  return value == "heads_major"


def install():
  """Replaces mesh-tf's ``attention.attention`` with ``attention`` (idempotent)."""
  mtf_attention.attention = attention


def uninstall():
  """Puts mesh-tf's own function back."""
  mtf_attention.attention = MESH_TF_ATTENTION
