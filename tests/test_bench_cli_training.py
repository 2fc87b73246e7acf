"""tools/bench_cli_training.py: what each variant adds to the training command it starts."""

import argparse
import subprocess

import pytest

from switch_experiments import bench_cli_training as bench

ARGS = argparse.Namespace(task="t", warmup_steps=1, timed_steps=1, batch_size=4)


def _started(monkeypatch, model, variant, extra_env=None):
  """(command, environment) of the training process run_variant starts."""
  seen = {}

  def fake_run(command, env, **kwargs):
    seen["command"], seen["env"] = command, env
    return subprocess.CompletedProcess(command, 0, stdout='{"ok": 1}\n', stderr="")

  monkeypatch.setattr(bench.subprocess, "run", fake_run)
  assert bench.run_variant(model, variant, ARGS, extra_env=extra_env) == {"ok": 1}
  return seen["command"], seen["env"]


def test_step_variants_combine_their_binding_and_environment(monkeypatch):
  monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
  command, env = _started(monkeypatch, "dense", "one_microbatch+onednn_off",
                          extra_env={"TF_NUM_INTRAOP_THREADS": "1"})
  assert ("--gin_param=utils.serialize_num_microbatches.tokens_per_microbatch_per_replica "
          "= None") in command
  assert env["TF_ENABLE_ONEDNN_OPTS"] == "0"
  assert env["TF_NUM_INTRAOP_THREADS"] == "1"
  assert "--gin_file=models/t5_tiny.gin" in command


def test_default_adds_nothing(monkeypatch):
  monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
  command, env = _started(monkeypatch, "switch", "default")
  assert not [c for c in command if "serialize_num_microbatches" in c or "SwitchFFN" in c]
  assert "TF_ENABLE_ONEDNN_OPTS" not in env


@pytest.mark.parametrize("variant", ["onednn_on", "one_microbatch+packed"])
def test_unknown_variants_are_refused(variant, capsys):
  with pytest.raises(SystemExit) as exit_:
    bench.main(["--variants", f"default,{variant}"])
  assert exit_.value.code == 2
  assert variant in capsys.readouterr().err


def test_inter_op_1_sets_one_inter_op_thread_over_the_callers_pools(monkeypatch):
  # bench_peer_training passes its --threads as both pools; the variant's own setting wins.
  command, env = _started(monkeypatch, "switch", "inter_op_1",
                          extra_env={"TF_NUM_INTEROP_THREADS": "2",
                                     "TF_NUM_INTRAOP_THREADS": "2"})
  assert env["TF_NUM_INTEROP_THREADS"] == "1"
  assert env["TF_NUM_INTRAOP_THREADS"] == "2"
  assert not [c for c in command if "gin_param" in c and "batch_size" not in c]
