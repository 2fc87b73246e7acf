"""tools/switch_vs_dense.py refuses bad arguments before it starts the command line, and names
its log files without a "/"."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tools"))

import cli_runs  # noqa: E402  (tools/)
import switch_vs_dense  # noqa: E402


@pytest.fixture
def no_cli(monkeypatch):
  """Records every command the script would start, without starting one."""
  started = []
  monkeypatch.setattr(cli_runs, "run_cli", lambda *args, **kwargs: started.append(args) or "")
  return started


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    (["--steps", "-5"], "--steps: expected an integer >= 1, got -5"),
    (["--steps", "ten"], "--steps: expected an integer >= 1, got 'ten'"),
    (["--checkpoint_every", "0"], "--checkpoint_every: expected an integer >= 1, got 0"),
    (["--eval_batches", "-1"], "--eval_batches: expected an integer >= 1, got -1"),
])
def test_bad_counts_are_refused_before_the_cli_starts(no_cli, capsys, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    switch_vs_dense.main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
  assert no_cli == []


def test_log_file_labels_have_no_slash(no_cli, tmp_path, monkeypatch):
  labels = []
  monkeypatch.setattr(cli_runs, "train", lambda *args: labels.append(args[5]) or True)
  with pytest.raises(SystemExit, match="no neg_log_perplexity"):  # the stub CLI prints nothing
    switch_vs_dense.main(["--steps", "3", "--output_dir", str(tmp_path)])
  assert labels == ["switch-switch_tiny"]
  assert all("/" not in args[3] for args in no_cli)  # the evaluation's label too


def test_full_comparison_hands_the_other_arguments_to_the_scaling_script(no_cli, monkeypatch):
  import repro_expert_scaling

  received = []
  monkeypatch.setattr(repro_expert_scaling, "main", lambda argv: received.append(argv) or 0)
  assert switch_vs_dense.main(["--full_comparison", "--only", "dense", "--steps", "50"]) == 0
  assert received == [["--only", "dense", "--steps", "50"]]
  assert no_cli == []  # the two-model comparison did not start


def test_both_models_train_from_one_seed(no_cli, tmp_path, monkeypatch):
  trained = []
  monkeypatch.setattr(cli_runs, "train", lambda *args: trained.append(args) or True)
  monkeypatch.setattr(cli_runs, "run_cli",
                      lambda *args, **kwargs: "neg_log_perplexity = -5.0")
  assert switch_vs_dense.main(["--steps", "3", "--seed", "7", "--output_dir", str(tmp_path)]) == 0
  assert len(trained) == 2
  for _, _, params, *_ in trained:
    assert "mtf_switch.init_seed.seed = 7" in params  # the initial weights
    assert "mesh_train_dataset_fn.seed = 7" in params  # the data order and span noise
    assert "utils.run.skip_seen_data = True" in params  # a resumed model does not replay
