"""tools/switch_vs_dense.py, the main command: bad arguments refused before the command line
starts, both models seeded alike, its progress bar, verdict and headline lines checked by
hand, and (slow tier) a micro run whose result fields follow the model."""

import io
import os
import types

import pytest

from switch_experiments import repro_runs, switch_vs_dense


@pytest.fixture
def no_cli(monkeypatch):
  """Records every command the script would start, without starting one."""
  started = []
  monkeypatch.setattr(repro_runs, "run_cli",
                      lambda *args, **kwargs: started.append(args) or "")
  return started


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    (["--steps", "-5"], "--steps: expected an integer >= 1, got -5"),
    (["--steps", "ten"], "--steps: expected an integer >= 1, got 'ten'"),
    (["--experts", "0"], "--experts: expected an integer >= 1, got 0"),
    (["--eval_batches", "-1"], "--eval_batches: expected an integer >= 1, got -1"),
])
def test_bad_counts_are_refused_before_the_cli_starts(no_cli, capsys, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    switch_vs_dense.main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
  assert no_cli == []


def test_full_comparison_hands_the_other_arguments_to_the_headline_script(no_cli, monkeypatch):
  from switch_experiments import repro_speedup

  received = []
  monkeypatch.setattr(repro_speedup, "main", lambda argv: received.append(argv) or 0)
  assert switch_vs_dense.main(["--full_comparison", "--only", "dense", "--steps", "50"]) == 0
  assert received == [["--only", "dense", "--steps", "50"]]
  assert no_cli == []  # the two-model comparison did not start


def test_both_models_train_from_one_seed_on_one_schedule(no_cli, tmp_path, monkeypatch,
                                                         capsys):
  quality = {"switch": -4.9, "dense": -5.0}
  asked_from = []

  def evaluate(variant, settings, out, from_step=0):
    asked_from.append(from_step)
    return {10: quality[variant.name]}

  monkeypatch.setattr(repro_runs, "evaluate", evaluate)
  argv = ["--steps", "10", "--seed", "7", "--output_dir", str(tmp_path),
          "--pilot_dir", str(tmp_path / "no_pilot")]
  assert switch_vs_dense.main(argv) == 0
  assert len(no_cli) == 2
  for _, gin_files, params, mode, *_ in no_cli:
    assert mode == "train"
    assert "repro/constant_rsqrt.gin" in gin_files
    assert "mtf_switch.init_seed.seed = 7" in params  # the initial weights
    assert "mesh_train_dataset_fn.seed = 7" in params  # the data order
    assert "utils.run.train_steps = 10" in params
  assert "mtf_switch.SwitchFFN.num_experts = 16" in no_cli[0][2]
  # Only the Switch twin gets the dense FFN's init scale; step 0 is never evaluated.
  assert "repro/twin_init.gin" in no_cli[0][1]
  assert "repro/twin_init.gin" not in no_cli[1][1]
  assert asked_from == [1, 1]
  out = capsys.readouterr().out
  assert "Switch - dense = +0.1000 nats. No committed pilot" in out
  assert '"gap": 0.1' in out


def _progress(label, step, total, speed, loss=3.5):
  return types.SimpleNamespace(label=label, step=step, total_steps=total, speed=speed,
                               loss=loss)


class _Tty(io.StringIO):
  def isatty(self):
    return True


def test_progress_bar_time_left_counts_the_models_still_to_train():
  stream = _Tty()
  bar = switch_vs_dense.ProgressBar(["switch", "dense"], steps=100, stream=stream)
  bar(_progress("switch", 50, 100, speed=2.0))
  # 50 steps of switch left and 100 of dense, at 2 steps/s: 75 s.
  assert stream.getvalue().startswith("\rswitch [###############---------------] step    50"
                                      "/100")
  assert "2.00 steps/s  ~1:15 left" in stream.getvalue()
  bar(_progress("dense", 100, 100, speed=4.0))
  assert stream.getvalue().endswith("~0:00 left    \n")  # the last step ends the line


def test_progress_bar_in_a_log_prints_a_line_per_tenth_not_per_step():
  stream = io.StringIO()
  bar = switch_vs_dense.ProgressBar(["switch", "dense"], steps=200, stream=stream)
  for model in ("switch", "dense"):
    for step in range(0, 201):
      bar(_progress(model, step, 200, speed=float("nan") if step == 0 else 3.0))
  lines = stream.getvalue().splitlines()
  assert len(lines) == 22  # tenths 0..10 of each model
  assert "starting" in lines[0] and "\r" not in stream.getvalue()


def test_verdict_against_the_pilot_spread():
  pilot = {"spread": 0.02, "seeds": [1, 2, 3]}
  ahead = switch_vs_dense.verdict(0.05, pilot)
  assert ahead.startswith("Switch is ahead of its dense twin by 0.0500 nats, more than the "
                          "seed spread of this command (0.0200 nats")
  short = switch_vs_dense.verdict(0.015, pilot)
  assert "NOT beyond the seed spread" in short and "grow by 0.0050 nats" in short
  behind = switch_vs_dense.verdict(-0.01, pilot)
  assert behind.startswith("Switch is behind its dense twin by 0.0100 nats: NOT beyond")
  assert "grow by 0.0300 nats" in behind


def test_spread_is_the_larger_range_over_seeds():
  assert switch_vs_dense.spread_of({"switch": [-4.0, -4.03, -4.01],
                                    "dense": [-4.1, -4.12, -4.08]}) == pytest.approx(0.04)


def test_headline_lines_read_the_committed_table(tmp_path):
  assert switch_vs_dense.headline_lines(str(tmp_path)) == [
      "No headline run committed yet (python tools/repro_speedup.py)."]
  (tmp_path / "speedup.csv").write_text(
      "model,seeds,steps,step speed-up\ndense,3,16000,-\nswitch_64,3,4000,> 4.00x\n")
  lines = switch_vs_dense.headline_lines(str(tmp_path))
  assert lines[0].startswith("Committed headline run (python tools/repro_speedup.py")
  assert lines[1:] == ["  switch_64 (3 seed(s)) at step 4000: step speed-up > 4.00x"]


@pytest.mark.slow
def test_micro_run_result_fields_follow_the_model(tmp_path, capsys):
  """Two micro runs of the same models, trained 2 and 6 steps: each run's fields are its own
  (steps, both qualities better after more training, the gap its own difference). Run-to-run
  float noise of the multi-threaded kernels is ~2e-3 here, so two runs that differ only in
  a small setting could not be told apart; 4 more training steps move quality far more."""
  runs = {}
  for steps in (2, 6):
    argv = ["--task", "switch_default_corpus_full_lm", "--steps", str(steps), "--batch_size",
            "4", "--eval_batches", "2", "--gin_file", "repro/micro.gin", "--experts", "2",
            "--output_dir", str(tmp_path / f"s{steps}"),
            "--pilot_dir", str(tmp_path / "no_pilot")]
    assert switch_vs_dense.main(argv) == 0
    json_line = capsys.readouterr().out.strip().splitlines()[-1]
    runs[steps] = __import__("json").loads(json_line)
  finals = {s: {r["model"]: r["neg_log_perplexity"] for r in run["results"]}
            for s, run in runs.items()}
  for model in ("switch", "dense"):
    assert finals[6][model] > finals[2][model] + 0.01, (model, finals)
  for s, run in runs.items():
    assert run["steps"] == s and {r["steps"] for r in run["results"]} == {s}
    assert run["gap"] == pytest.approx(finals[s]["switch"] - finals[s]["dense"], abs=1e-4)
    assert os.path.getsize(run["plot"]) > 0
