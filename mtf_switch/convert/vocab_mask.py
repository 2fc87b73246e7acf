"""Logits of the padding ids of an imported vocabulary: -1e9, so that they never win a decode.

Mesh-TF rounds every vocabulary dimension up to a multiple of 128
(``Unitransformer.vocab_divisor``), and computes logits for the padding ids like for any other:
it never masks them (mesh_tensorflow/transformer/transformer.py, ``_call_internal``). An HF
model with 72 ids imports as a [128, d_model] table whose last 56 rows are zero, so their
logits are exactly 0 and would win a greedy decode whenever every real logit is negative; in
training they would add e^0 terms to every softmax that HF does not have.

Binding the HF vocabulary size (``from-hf`` writes it into model.gin when it pads)

    import mtf_switch.convert.vocab_mask
    mtf_switch.hf_vocab.size = 72

adds -1e9 to the logits of ids >= 72, in the logits the decoder returns (greedy and sampled
decoding, scoring) and in the ones its loss reads. With no binding, or no padding, models are
untouched. Mesh-TF builds the logits inside ``Unitransformer``, which offers no hook for it,
so the two methods are wrapped once, on this module's import, for every Unitransformer: the
wrappers do nothing unless the binding is there.
"""

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import transformer

import gin

PADDING_LOGIT = -1e9


@gin.configurable("hf_vocab", module="mtf_switch")
def hf_vocab(size=None):
  """The real (HF) vocabulary size of the model, or None: nothing is masked."""
  return size


def mask_padding_logits(logits: mtf.Tensor, vocab_dim: mtf.Dimension) -> mtf.Tensor:
  """[..., vocab] logits with PADDING_LOGIT added at ids >= hf_vocab()."""
  size = hf_vocab()
  if size is None or vocab_dim is None or vocab_dim not in logits.shape.dims:
    return logits
  if not 0 < size <= vocab_dim.size:
    raise ValueError(f"mtf_switch.hf_vocab.size={size} is not in 1..{vocab_dim.size} (the "
                     f"model's vocabulary dimension)")
  if size == vocab_dim.size:
    return logits
  padding = mtf.cast(mtf.greater_equal(mtf.range(logits.mesh, vocab_dim, tf.int32), size),
                     logits.dtype)
  return logits + padding * PADDING_LOGIT


_call_internal = transformer.Unitransformer._call_internal
_compute_loss = transformer.Unitransformer._compute_loss


def _masked_call_internal(self, context, inputs, targets=None):
  return mask_padding_logits(_call_internal(self, context, inputs, targets),
                             self.output_vocab_dim)


def _masked_compute_loss(self, context, logits, targets, output_vocab_dim):
  return _compute_loss(self, context, mask_padding_logits(logits, output_vocab_dim), targets,
                       output_vocab_dim)


if not getattr(transformer.Unitransformer, "_mtf_switch_vocab_mask", False):
  transformer.Unitransformer._call_internal = _masked_call_internal
  transformer.Unitransformer._compute_loss = _masked_compute_loss
  transformer.Unitransformer._mtf_switch_vocab_mask = True
