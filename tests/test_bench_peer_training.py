"""tools/bench_peer_training.py: the peer's model and step, the ratios, the argument checks."""


import pytest

from switch_experiments import bench_peer_training as bench


def test_peer_capacity_is_the_projects_factor_per_sequence():
  # 128 tokens x 1.25 / 8 experts: the slots switch_tiny's capacity factor gives one sequence.
  assert bench.peer_expert_capacity() == 20


def test_peer_switch_has_one_sparse_ffn_second_in_each_stack():
  net = bench.build_peer_model("switch")
  for stack in (net.encoder, net.decoder):
    sparse = [block.is_sparse for block in stack.block]
    assert sparse == [False, True]
  assert net.config.d_model == 128 and net.config.vocab_size == 8192
  assert net.config.expert_capacity == 20 and net.config.num_experts == 8


def test_peer_dense_matches_the_tiny_sizes():
  net = bench.build_peer_model("dense")
  config = net.config
  assert (config.d_model, config.d_ff, config.d_kv, config.num_heads) == (128, 512, 32, 4)
  assert (config.num_layers, config.num_decoder_layers) == (2, 2)
  assert net.training


def test_peer_step_trains_and_times_itself():
  record = bench.run_peer("switch", batch_size=2, warmup_steps=1, timed_steps=2, threads=1)
  assert record["threads"] == 1
  assert record["loop_step_seconds"] > 0 and record["loop_cpu_seconds"] > 0
  assert record["reference_matmul_gflops"] > 0
  # Same batch every step at lr 0.01: the loss falls.
  assert record["last_loss"] < record["first_loss"]


def _record(step, cpu):
  return {"loop_step_seconds": step, "loop_cpu_seconds": cpu, "reference_matmul_gflops": 100.0}


def test_ratios_by_examples_and_by_cpu_seconds():
  samples = {("project", "dense"): [_record(0.5, 1.0), _record(0.3, 0.6), _record(0.4, 0.8)],
             ("peer", "dense"): [_record(0.2, 0.4)],
             ("project", "switch"): [_record(0.5, 1.0)],
             ("peer", "switch"): [{"error": "exit 1"}]}
  rows, ratios = bench.summarize(samples, batch_size=32)
  by_key = {(r["side"], r["model"]): r for r in rows}
  assert by_key[("project", "dense")]["step_seconds"] == 0.4  # the median
  assert by_key[("project", "dense")]["examples_per_second"] == 80.0
  assert ratios["project_over_peer_dense"] == 0.5  # 80 / 160 examples/s
  assert ratios["project_over_peer_dense_by_cpu_seconds"] == 0.5  # 0.4 / 0.8 CPU s
  assert ratios["project_switch_over_dense"] == pytest.approx(0.8)  # 64 / 80
  # A failed side gives its error row and no ratio that needs it.
  assert "error" in by_key[("peer", "switch")]
  assert "project_over_peer_switch" not in ratios and "peer_switch_over_dense" not in ratios


@pytest.mark.parametrize("flag", ["--threads=0", "--rounds=0", "--models=dense,moe",
                                  "--sides=project,hf"])
def test_bad_arguments_are_refused_before_any_run(flag, capsys):
  with pytest.raises(SystemExit) as exit_:
    bench.main([flag])
  assert exit_.value.code == 2
  assert flag.split("=")[1].split(",")[-1] in capsys.readouterr().err
