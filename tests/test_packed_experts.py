"""The packed expert FFN's written-out gradient, on numbers small enough to check by hand.

(tests/test_gather_dispatch.py checks the whole gather path, packed experts included, against
the einsum path for every configuration and layout; these pin the pieces down one by one.)
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import cpu_gemm, packed_experts


def _run(fetches):
  with tf.Session() as session:
    return session.run(fetches)


@pytest.fixture(autouse=True)
def _not_tuned_for_avx2_sgemm():
  """The forms these tests name are those of a machine without oneDNN's AVX2 sgemm; the
  tuning for it has its own tests below and in test_cpu_gemm.py."""
  with cpu_gemm.assume_onednn_avx2_sgemm(False):
    yield


@pytest.mark.parametrize("min_weight_bytes, form", [(0, "Transpose"), (1 << 20, "MatMul")])
def test_transposed_product_is_a_times_b_transposed(monkeypatch, min_weight_bytes, form):
  monkeypatch.setattr(packed_experts, "TRANSPOSED_PRODUCT_MIN_WEIGHT_BYTES", min_weight_bytes)
  with tf.Graph().as_default():
    a = tf.constant([[1.0, 2.0]])
    b = tf.constant([[3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    product = packed_experts._transposed_product(a, b)
    assert product.op.type == form  # b is 24 bytes: each limit picks its form
    # [1*3 + 2*4, 1*5 + 2*6, 1*7 + 2*8]
    np.testing.assert_array_equal(_run(product), [[11.0, 17.0, 23.0]])


@pytest.mark.parametrize("min_weight_bytes, form", [(0, "Transpose"), (1 << 20, "BatchMatMulV2")])
def test_transposed_product_batches_over_the_experts(
    monkeypatch, min_weight_bytes, form):
  monkeypatch.setattr(packed_experts, "TRANSPOSED_PRODUCT_MIN_WEIGHT_BYTES", min_weight_bytes)
  with tf.Graph().as_default():
    a = tf.constant([[[1.0, 2.0]], [[0.0, -1.0]]])  # [2, 1, 2]
    b = tf.constant([[[3.0, 4.0], [5.0, 6.0]], [[1.0, 1.0], [2.0, 3.0]]])  # [2, 2, 2]
    product = packed_experts._transposed_product(a, b)
    assert product.op.type == form  # each b[i] is 16 bytes: each limit picks its form
    # expert 0: [1*3 + 2*4, 1*5 + 2*6]; expert 1: [0*1 - 1*1, 0*2 - 1*3]
    np.testing.assert_array_equal(_run(product), [[[11.0, 17.0]], [[-1.0, -3.0]]])


@pytest.fixture(params=[("batched", "direct"), ("stacked", "direct"), ("batched", "transposed"),
                        ("stacked", "transposed"), ("batched", "avx2 sgemm")])
def weight_gradient_form(request, monkeypatch):
  """Each test runs with both layouts of the backward (batched over the 2 slots per expert
  here, or per expert and stacked), both forms of the input gradients' products (the
  weights here are 4 bytes), and the batched layout as built for oneDNN's AVX2 sgemm (input
  gradients per expert, direct)."""
  weights, products = request.param
  monkeypatch.setattr(packed_experts, "BATCHED_BACKWARD_MAX_SLOTS",
                      2 if weights == "batched" else 1)
  monkeypatch.setattr(packed_experts, "TRANSPOSED_PRODUCT_MIN_WEIGHT_BYTES",
                      0 if products == "transposed" else 1 << 20)
  with cpu_gemm.assume_onednn_avx2_sgemm(products == "avx2 sgemm"):
    yield request.param


@pytest.mark.parametrize("avx2_sgemm, form", [(False, "Transpose"), (True, "MatMul")])
def test_a_large_weight_takes_the_direct_form_for_the_avx2_sgemm(
    monkeypatch, avx2_sgemm, form):
  monkeypatch.setattr(packed_experts, "TRANSPOSED_PRODUCT_MIN_WEIGHT_BYTES", 0)
  with tf.Graph().as_default(), cpu_gemm.assume_onednn_avx2_sgemm(avx2_sgemm):
    product = packed_experts._transposed_product(tf.constant([[1.0, 2.0]]),
                                                 tf.constant([[3.0, 4.0], [5.0, 6.0]]))
    assert product.op.type == form
    np.testing.assert_array_equal(_run(product), [[11.0, 17.0]])


def _relu_ffn(slots, counts, wi, wo):
  """Outputs and the gradients of sum(outputs) for slots [2, 1, 2, 1] (2 experts, 1 group,
  2 slots, d_model 1) and hidden size 1."""
  with tf.Graph().as_default():
    slots_t, wi_t, wo_t = (tf.constant(v, tf.float32) for v in (slots, wi, wo))
    out = packed_experts._packed_slot_ffn(slots_t, tf.constant(counts, tf.float32), wi_t, wo_t,
                                          activations=["relu"], dropout_rate=0.0, train=True)
    grads = tf.gradients(tf.reduce_sum(out), [slots_t, wi_t, wo_t])
    return _run([out] + grads)


def test_packed_ffn_values_and_gradients_by_hand(weight_gradient_form):
  # Expert 0 holds one token (2.0) and an empty slot; expert 1 holds two (1.0 and -3.0).
  slots = [[[[2.0], [0.0]]], [[[1.0], [-3.0]]]]
  counts = [[1.0], [2.0]]
  wi = [[[1.5]], [[2.0]]]
  wo = [[[3.0]], [[-1.0]]]
  out, d_slots, d_wi, d_wo = _relu_ffn(slots, counts, wi, wo)
  # y = relu(x wi) wo: expert 0: relu(3) * 3 = 9; expert 1: relu(2) * -1 = -2, relu(-6) = 0.
  np.testing.assert_allclose(out.reshape(-1), [9.0, 0.0, -2.0, 0.0])
  # dy/dx = wi wo where x wi > 0; an empty slot gets no gradient.
  np.testing.assert_allclose(d_slots.reshape(-1), [4.5, 0.0, -2.0, 0.0])
  # dy/dwi = x wo over the active rows: expert 0: 2 * 3; expert 1: 1 * -1 (the -3 is inactive).
  np.testing.assert_allclose(d_wi.reshape(-1), [6.0, -1.0])
  # dy/dwo = relu(x wi): expert 0: 3; expert 1: 2 + 0.
  np.testing.assert_allclose(d_wo.reshape(-1), [3.0, 2.0])


def test_empty_slots_are_ignored_even_when_they_hold_garbage(weight_gradient_form):
  # The FFN reads only the filled prefix of each expert's slots: whatever sits in an empty
  # slot changes neither the outputs nor the weight gradients.
  clean = _relu_ffn([[[[2.0], [0.0]]], [[[1.0], [-3.0]]]], [[1.0], [2.0]],
                    [[[1.5]], [[2.0]]], [[[3.0]], [[-1.0]]])
  dirty = _relu_ffn([[[[2.0], [7.0]]], [[[1.0], [-3.0]]]], [[1.0], [2.0]],
                    [[[1.5]], [[2.0]]], [[[3.0]], [[-1.0]]])
  for a, b in zip(clean, dirty, strict=True):
    np.testing.assert_array_equal(a, b)
