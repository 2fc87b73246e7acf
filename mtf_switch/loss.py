"""The token cross-entropy of Mesh-TF's transformers as one fused TensorFlow op per slice.

Mesh-TF's ``Unitransformer._compute_loss`` builds the loss from the [batch, length, vocab]
logits in separate steps: a float one-hot of the targets, ``reduce_logsumexp``, the
log-softmax, its product with the one-hot, a sum over the vocabulary, the z-loss, and the
gradient of each. Every step reads or writes a tensor of the logits' size, and on CPU those
passes are memory-bound: for a decoder-only model predicting all of its tokens (32 x 160
tokens x an 8k vocabulary: 168 MB per pass in float32) they were a large share of a training
step (``tools/profile_train_step.py --part logits/loss``).

``fused_cross_entropy`` computes the same loss with ``tf.nn.sparse_softmax_cross_entropy_with_logits``
(one kernel that also yields its gradient) and takes the log partition function for the
z-loss from it, log_z = cross-entropy + the target's logit (a gather, not a pass over the
vocabulary), so the gradient of z_loss * log_z^2 arrives as 2 z_loss log_z (softmax - onehot
+ onehot) = 2 z_loss log_z softmax, as Mesh-TF's. Same weights (padding id 0 left out,
``loss_on_targets_only``) and denominator as Mesh-TF's. It keeps Mesh-TF's own path where
it cannot be exact or cannot run: label smoothing (soft targets), a vocabulary split over a
mesh dimension (a slice would hold only part of each softmax), and inside a TPU computation.

Bind it for a model's decoder (or a decoder-only model's only stack):

    transformer.Unitransformer.loss_fn = @mtf_switch.fused_cross_entropy
"""

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import transformer

import gin
from mtf_switch import dispatch, embedding


def _vocab_is_split(model, vocab_dim: mtf.Dimension) -> bool:
  layout = getattr(model, "layout", "") or ""
  mesh_shape = getattr(model, "mesh_shape", "") or ""
  return embedding._is_split(vocab_dim, layout, mesh_shape)


def can_fuse(unitransformer, context, vocab_dim: mtf.Dimension) -> bool:
  """Whether the fused loss is exact and possible here (else Mesh-TF's own path runs)."""
  if unitransformer.label_smoothing:
    return False
  if dispatch.building_for_tpu():
    return False
  return not _vocab_is_split(getattr(context, "model", None), vocab_dim)


def _token_losses(logits: tf.Tensor, targets: tf.Tensor, z_loss: float) -> tf.Tensor:
  """One slice: [..., vocab] logits, [...] int targets -> [...] float32 losses."""
  logits32 = tf.cast(logits, tf.float32)
  labels = tf.maximum(tf.cast(targets, tf.int32), 0)
  losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits32)
  if z_loss:
    target_logits = tf.gather(logits32, labels[..., tf.newaxis], batch_dims=labels.shape.ndims)
    log_z = losses + tf.squeeze(target_logits, -1)
    losses += z_loss * tf.square(log_z)
  return tf.cast(losses, logits.dtype)


@gin.configurable(module="mtf_switch")
def fused_cross_entropy(unitransformer, context, logits: mtf.Tensor, targets: mtf.Tensor,
                        output_vocab_dim: mtf.Dimension) -> mtf.Tensor:
  """``Unitransformer.loss_fn``: the mean token loss of Mesh-TF's ``_compute_loss``, fused.

  logits: [batch..., length, vocab]; targets: [batch..., length] int ids (0 = padding).
  Returns the 0-dimensional loss (summed over tokens / ``loss_denominator``).
  """
  if not can_fuse(unitransformer, context, output_vocab_dim):
    # Mesh-TF's own path: the stock method runs when no loss_fn is set.
    loss_fn, unitransformer._loss_fn = unitransformer._loss_fn, None
    try:
      return unitransformer._compute_loss(context, logits, targets, output_vocab_dim)
    finally:
      unitransformer._loss_fn = loss_fn
  z_loss = unitransformer.z_loss if context.train else 0.0
  splittable = targets.shape.dims  # every dimension but the vocabulary
  loss = mtf.slicewise(
      lambda lg, tg: _token_losses(lg, tg, z_loss), [logits, targets],
      output_shape=targets.shape, output_dtype=logits.dtype, splittable_dims=splittable,
      name="fused_cross_entropy")
  weights = mtf.cast(mtf.greater(targets, 0), context.activation_dtype)
  if unitransformer.loss_on_targets_only:
    weights *= mtf.cast(mtf.logical_not(transformer.delimited_lm_inputs_mask(targets)),
                        dtype=context.activation_dtype)
  return (mtf.reduce_sum(loss * weights) /
          unitransformer.loss_denominator(targets, context.num_microbatches))
