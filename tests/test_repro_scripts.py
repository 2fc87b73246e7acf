"""The paper-reproduction scripts (tools/repro_*.py) run end to end at a micro size.

Each script trains a model or two for a handful of steps (gin/repro/micro.gin: d_model 32,
32/8-token sequences, batch 4) on the embedded default corpus, so no shared data is needed,
evaluates every checkpoint and writes its CSV, PNG and markdown. A few minutes in all, most of
it TensorFlow start-up: one process per training and per evaluation.
"""

import csv
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

import repro_common  # noqa: E402
import repro_expert_scaling  # noqa: E402
import repro_stability  # noqa: E402
import repro_table1  # noqa: E402

MICRO = ["--task", "switch_default_corpus_span_corruption", "--steps", "4",
         "--checkpoint_every", "2", "--batch_size", "4", "--eval_batches", "2",
         "--gin_file", "repro/micro.gin"]

pytestmark = pytest.mark.slow


def _dirs(tmp_path, name):
  return ["--output_dir", str(tmp_path / "runs" / name),
          "--results_dir", str(tmp_path / "results" / name)]


def _csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _outputs_exist(results_dir, *names):
  for name in ("README.md", "quality.png", "curves.csv", *names):
    assert os.path.getsize(results_dir / name) > 0, name


def test_expert_scaling_runs_and_resumes(tmp_path, capsys):
  argv = MICRO + ["--experts", "2"] + _dirs(tmp_path, "scaling")
  assert repro_expert_scaling.main(argv) == 0
  results = tmp_path / "results" / "scaling"
  _outputs_exist(results, "speedup.csv")
  rows = _csv(results / "curves.csv")
  assert {r["model"] for r in rows} == {"dense", "switch_2"}
  # Every checkpoint (0, 2, 4) of both models is evaluated, with a real perplexity.
  assert sorted(int(r["step"]) for r in rows if r["model"] == "dense") == [0, 2, 4]
  assert all(-20.0 < float(r["eval_neg_log_perplexity"]) < 0.0 for r in rows)
  assert [r["model"] for r in _csv(results / "speedup.csv")] == ["dense", "switch_2"]
  markdown = (results / "README.md").read_text()
  assert "7.5x" in markdown and "--experts 2" in markdown

  # Rerunning the same command trains and evaluates nothing again.
  capsys.readouterr()
  assert repro_expert_scaling.main(argv) == 0
  out = capsys.readouterr().out
  assert ": training " not in out and ": evaluating " not in out
  assert _csv(results / "curves.csv") == rows
  # --report_only writes the same results from what is on disk.
  assert repro_expert_scaling.main(argv + ["--report_only"]) == 0
  assert _csv(results / "curves.csv") == rows


def test_changed_training_settings_refuse_to_resume(tmp_path):
  argv = MICRO + ["--experts", "2", "--only", "none"] + _dirs(tmp_path, "scaling")
  repro_expert_scaling.main(argv)
  with pytest.raises(SystemExit, match="batch_size"):
    repro_expert_scaling.main(argv + ["--batch_size", "8"])
  # A directory from before initialisation was seeded is not resumed as a seeded one.
  settings = tmp_path / "runs" / "scaling" / "settings.json"
  recorded = json.loads(settings.read_text())
  del recorded["init_seed"]
  settings.write_text(json.dumps(recorded))
  with pytest.raises(SystemExit, match="init_seed"):
    repro_expert_scaling.main(argv)


def test_table1_top2_moe_row(tmp_path):
  argv = MICRO + ["--only", "moe_cf1.0", "--threshold", "-30"] + _dirs(tmp_path, "table1")
  assert repro_table1.main(argv) == 0
  results = tmp_path / "results" / "table1"
  _outputs_exist(results, "table1.csv")
  (row,) = _csv(results / "table1.csv")
  assert row["model"] == "moe_cf1.0"
  assert row["first step >= -30.0000"] == "0"  # any model beats a threshold of -30
  assert row["tokens dropped (train)"].endswith("%")
  assert float(row["examples/s (train)"]) > 0


def test_stability_bfloat16_row(tmp_path):
  argv = MICRO + ["--table", "2", "--only", "bfloat16_f32_router"] + _dirs(tmp_path, "stab")
  assert repro_stability.main(argv) == 0
  results = tmp_path / "results" / "stab"
  _outputs_exist(results, "final.csv")
  markdown = (results / "README.md").read_text()
  assert "| bfloat16 | not run |" in markdown  # only the float32-router row was asked for
  assert [r["model"] for r in _csv(results / "final.csv")] == ["bfloat16_f32_router"]
  # The model's graph seed is its data seed (1 here), so a rerun starts from the same weights.
  # (t5 records each command line under commands/; evaluation binds no seed, so that its
  # validation sample is the same for every model.)
  commands = (tmp_path / "runs" / "stab" / "bfloat16_f32_router" / "commands").iterdir()
  assert any("mtf_switch.init_seed.seed = 1" in c.read_text() for c in commands)


def test_stability_variants_share_one_baseline():
  names = [v.name for v in repro_stability.variants_for(["2", "3", "c"])]
  assert len(names) == len(set(names)) == 11
  assert names[:3] == ["baseline", "bfloat16_f32_router", "bfloat16_everywhere"]
  assert repro_stability.init_variant("0.1", 1) is repro_stability.policy_variant("input_jitter")


def test_first_step_reaching_uses_checkpoints_only():
  curve = [{"step": 0, "train_seconds": 0.0, "neg_log_perplexity": -9.0},
           {"step": 10, "train_seconds": 5.0, "neg_log_perplexity": -5.0},
           {"step": 20, "train_seconds": 9.0, "neg_log_perplexity": -4.0}]
  assert repro_common.first_step_reaching(curve, -4.5)["step"] == 20
  assert repro_common.first_step_reaching(curve, -3.0) is None
  assert repro_common.examples_per_second(curve, 4) == pytest.approx(20 * 4 / 9.0)
