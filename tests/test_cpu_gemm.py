"""The tuning for oneDNN's AVX2 sgemm (mtf_switch.cpu_gemm): when the forward pads its weights,
by hand, and that a packed FFN built for that sgemm gives the other build's values and
gradients."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import cpu_gemm, packed_experts


@pytest.mark.parametrize("rows, columns, dtype_size, pad", [
    (256, 2048, 4, 16),   # 1/256 + 1/2048 = 0.0044 >= 0.0038: no-copy, stride 8 KiB
    (64, 512, 4, 16),     # 1/64 + 1/512 = 0.0176
    (512, 512, 4, 16),    # 1/512 + 1/512 = 0.0039
    (320, 2048, 4, 0),    # 1/320 + 1/2048 = 0.0036: oneDNN packs, the stride does not matter
    (1024, 2048, 4, 0),   # 0.0015
    (256, 2000, 4, 0),    # 2000 is not a multiple of 256: no aliasing
    (256, 2048, 2, 0),    # bfloat16 does not go to the float32 sgemm
    (0, 2048, 4, 0),      # no rows expected
])
def test_forward_padding_by_hand(rows, columns, dtype_size, pad):
  with cpu_gemm.assume_onednn_avx2_sgemm(True):
    assert cpu_gemm.forward_padding(rows, columns, dtype_size) == pad
  with cpu_gemm.assume_onednn_avx2_sgemm(False):
    assert cpu_gemm.forward_padding(rows, columns, dtype_size) == 0


def test_the_machine_decides_outside_an_assumption(monkeypatch):
  for machine in (True, False):
    monkeypatch.setattr(cpu_gemm, "machine_runs_onednn_avx2_sgemm",
                        lambda machine=machine: machine)
    assert cpu_gemm.forward_padding(256, 2048, 4) == (16 if machine else 0)
    assert cpu_gemm.direct_transposed_products() is machine


def test_an_assumption_restores_the_previous_one():
  with cpu_gemm.assume_onednn_avx2_sgemm(True):
    with cpu_gemm.assume_onednn_avx2_sgemm(False):
      assert cpu_gemm.forward_padding(256, 2048, 4) == 0
    assert cpu_gemm.forward_padding(256, 2048, 4) == 16
  assert cpu_gemm._assumed is None


def test_avx512_cpus_and_onednn_off_do_not_pad(monkeypatch):
  from tensorflow.python.util import _pywrap_util_port
  avx2 = frozenset({"avx", "avx2", "fma"})
  for flags, onednn, expected in [
      (avx2, True, True),
      (avx2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}, True, False),
      (avx2, False, False),
      (frozenset(), True, False)]:
    monkeypatch.setattr(cpu_gemm, "_cpu_flags", lambda flags=flags: flags)
    monkeypatch.setattr(_pywrap_util_port, "IsMklEnabled", lambda onednn=onednn: onednn)
    assert cpu_gemm.machine_runs_onednn_avx2_sgemm() is expected


def _packed_ffn(tuned, activations):
  """Outputs, gradients (slots, kernels) and op types of a packed FFN: 2 experts, 1 group, 4
  slots (3 and 2 filled), d_model and hidden 256 (a multiple of 256: padding applies)."""
  rng = np.random.RandomState(0)
  d, h = 256, 256
  slots = rng.randn(2, 1, 4, d).astype(np.float32)
  slots[0, 0, 3:] = 0.0
  slots[1, 0, 2:] = 0.0
  kernels = [rng.randn(2, d, h).astype(np.float32) * 0.1 for _ in activations]
  kernels.append(rng.randn(2, h, d).astype(np.float32) * 0.1)
  with tf.Graph().as_default() as graph, cpu_gemm.assume_onednn_avx2_sgemm(tuned):
    slots_t = tf.constant(slots)
    kernel_ts = [tf.constant(k) for k in kernels]
    out = packed_experts._packed_slot_ffn(
        slots_t, tf.constant([[3.0], [2.0]]), *kernel_ts, activations=activations,
        dropout_rate=0.0, train=True, expected_fill=0.75)
    grads = tf.gradients(tf.reduce_sum(out * out), [slots_t] + kernel_ts)
    with tf.Session() as session:
      values = session.run([out] + grads)
    return values, {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("activations", [["relu"], ["gelu", "linear"]])
def test_the_tuned_ffn_gives_the_same_values_and_gradients(activations):
  padded, padded_ops = _packed_ffn(True, activations)
  plain, plain_ops = _packed_ffn(False, activations)
  # The tuned graph multiplies by padded copies; the other has no Pad op at all.
  assert "Pad" in padded_ops and "Pad" not in plain_ops
  # The same products summed in other orders: equal to float32 rounding at each array's scale.
  for a, b in zip(padded, plain, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
  assert np.abs(plain[0]).sum() > 0 and all(np.abs(g).sum() > 0 for g in plain[1:])


def _layer_pads(num_experts, tokens, group_size):
  """Pad ops in the lowered graph of a Switch layer (gather path, packed experts), d_model and
  d_ff 512, with padding allowed."""
  import mesh_tensorflow as mtf

  from mtf_switch import layers
  with tf.Graph().as_default() as graph, cpu_gemm.assume_onednn_avx2_sgemm(True):
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    dims = [mtf.Dimension("batch", 1), mtf.Dimension("length", tokens),
            mtf.Dimension("d_model", 512)]
    x = mtf.import_tf_tensor(mesh, tf.zeros([1, tokens, 512]), mtf.Shape(dims))
    layer = layers.SwitchFFN(num_experts=num_experts, hidden_size=512, group_size=group_size,
                             dispatch_path="gather", skip_empty_slots=True, summaries=False)
    out = layer.apply(x, train=True, variable_dtype=mtf.VariableDType(tf.float32))
    mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(mtf.Shape([]), "", ["/cpu:0"])
    lowering = mtf.Lowering(mesh.graph, {mesh: mesh_impl})
    lowering.export_to_tf_tensor(out.outputs)
    return sum(op.type == "Pad" for op in graph.get_operations())


def test_the_layer_pads_where_its_experts_get_few_rows():
  # 512 tokens over 8 experts: 64 rows each (1/64 + 1/512 >= 0.0038), wi and wo padded.
  assert _layer_pads(num_experts=8, tokens=512, group_size=512) == 2
  # 2048 tokens over 2 experts: 1024 rows each (1/1024 + 1/512 = 0.0029), never padded.
  assert _layer_pads(num_experts=2, tokens=2048, group_size=2048) == 0


def test_the_tuned_ffn_builds_under_tensorflow_v1_shapes():
  # The command line runs with v1 TensorShapes, whose sizes are Dimensions, not ints.
  tf.disable_v2_tensorshape()
  try:
    values, ops = _packed_ffn(True, ["relu"])
  finally:
    tf.enable_v2_tensorshape()
  assert "Pad" in ops and np.abs(values[0]).sum() > 0
