"""tools/profile_train_step.py's FLOP counts, by hand: 2 x m x k x n for each product."""


import tensorflow.compat.v1 as tf

from switch_experiments import profile_train_step as profile


def test_einsum_flops_counts_every_index_once():
  assert profile.einsum_flops("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]) == 2 * 2 * 3 * 4 * 5
  assert profile.einsum_flops("ij,jk->ik", [(3, 4), (4, 5)]) == 2 * 3 * 4 * 5
  assert profile.einsum_flops("...j,jk->...k", [(3, 4), (4, 5)]) == 0  # unknown: not guessed


def test_matmul_flops_reads_static_shapes_and_transposes():
  with tf.Graph().as_default():
    a, b = tf.zeros([6, 4]), tf.zeros([5, 4])
    assert profile.matmul_flops(tf.matmul(a, b, transpose_b=True).op) == 2 * 6 * 4 * 5
    batched = tf.matmul(tf.zeros([7, 6, 4]), tf.zeros([7, 4, 3])).op
    assert profile.matmul_flops(batched) == 2 * 7 * 6 * 4 * 3
    einsum = tf.einsum("btd,df->btf", tf.zeros([2, 3, 4]), tf.zeros([4, 8])).op
    assert profile.matmul_flops(einsum) == 2 * 2 * 3 * 4 * 8


def test_parts_follow_the_layer_scopes():
  assert profile.part_of("encoder/block_000/layer_001/SwitchFFN/router/einsum") == \
      "switch/moe layer"
  assert profile.part_of("decoder/block_000/layer_000/SelfAttention/einsum_1") == "attention"
  # The Switch layer's own noise and choices, though no router/dispatch scope names them.
  assert profile.part_of("while_loop/while/encoder/block_001/layer_001/SwitchFFN/random/"
                         "parallel/random_uniform") == "switch/moe layer"
  assert profile.part_of("encoder/block_001/layer_001/DenseReluDense/wi/einsum") == "dense ffn"
  assert profile.part_of("encoder/block_001/layer_001/DenseReluDense/wi_0/einsum") == "dense ffn"
  assert profile.part_of("while_loop/while/Switch_12") == "other"  # a control-flow op


def test_scopes_fold_layer_numbers_and_uniquifiers():
  assert profile._scope_of("while_loop/while/encoder/block_003/layer_001/SwitchFFN/"
                           "packed_expert_ffn_2/parallel/MatMul_7") == \
      "while_loop/while/encoder/block_*/layer_*/SwitchFFN/packed_expert_ffn/parallel"


def test_tracer_times_session_runs_and_the_loop_between_them(monkeypatch):
  """A fake clock: each session.run takes 1 s and the loop spends 2 s between runs, so a
  timed step is 1 s of session.run and 3 s of training loop."""
  clock = [0.0]
  monkeypatch.setattr(profile.time, "perf_counter", lambda: clock[0])
  # CPU time runs at half the wall clock (say, one of two cores busy).
  monkeypatch.setattr(profile.time, "process_time", lambda: clock[0] / 2)
  tracer = profile.make_step_tracer(warmup=2, traced=1, timed=3)
  for _ in range(2 + 3 + 1):
    tracer.before_run(None)
    clock[0] += 1.0
    tracer.after_run(None, tf.train.SessionRunValues(results=None, options=None,
                                                     run_metadata=None))
    clock[0] += 2.0
  assert tracer.untraced_seconds == [1.0, 1.0, 1.0]
  assert tracer.loop_seconds == [3.0, 3.0, 3.0]
  assert tracer.loop_cpu_seconds == [1.5, 1.5, 1.5]


def test_report_and_record_of_traced_steps_by_hand(capsys):
  """Two traced steps of two ops (no matmul, so no graph is read): per-step op seconds, the
  upper-median step times, and the parts, in the tables and in the JSON record."""
  import argparse
  import json
  import types

  attention = "decoder/block_000/layer_000/SelfAttention/Softmax"
  router = "encoder/block_000/layer_001/SwitchFFN/router/Softmax"
  tracer = types.SimpleNamespace(
      graph=None, untraced_seconds=[0.5, 0.7, 0.6], loop_seconds=[1.0, 3.0],
      loop_cpu_seconds=[], step_stats=[(2.0, [(attention, "Softmax", 300_000),
                                               (router, "Softmax", 100_000)]),
                                        (4.0, [(attention, "Softmax", 500_000)])])
  args = argparse.Namespace(gin_file=["models/switch_tiny.gin"], gin_param=[], task="t",
                            warmup_steps=1, top=5, part=["attention"])
  summary = profile.summarize(tracer)
  profile.print_tables(args, tracer, summary, reference=10.0)
  record = profile.json_record(args, tracer, summary, reference=10.0)
  assert record["step_wall_seconds"] == 4.0  # upper median of 2.0 and 4.0
  assert record["untraced_step_seconds"] == 0.6
  assert record["loop_step_seconds"] == 3.0 and record["loop_cpu_seconds"] is None
  assert record["op_seconds_per_step"] == 0.45  # (0.3 + 0.1 + 0.5) s over 2 steps
  assert record["parts"] == {"attention": 0.4, "switch/moe layer": 0.05}
  assert record["traced_steps"] == 2 and record["matmul_gflop_per_step"] == 0
  json.dumps(record)
  out = capsys.readouterr().out
  assert "| attention | 0.4000 | 88.9% | 1 |" in out
  assert "Inside part 'attention' (0.4000 op seconds per step)" in out
