"""tools/repro_speedup.py: the paper's step speed-up (dense steps to a Switch model's quality).

The arithmetic is checked on curves written by hand; one micro run (slow tier) trains dense
twice as long as its Switch twin through the command line and checks the tables against the
curves it wrote.
"""

import csv
import json
import os

import pytest

from switch_experiments import repro_curves, repro_scaling_plots, repro_speedup


def _curve(*points, std=0.0):
  return [{"step": s, "neg_log_perplexity": q, "std": std, "seeds": 1, "cpu_seconds": s * 0.5,
           "train_seconds": s * 0.25} for s, q in points]


DENSE = _curve((0, -9.0), (100, -6.0), (200, -5.0), (300, -4.6), (400, -4.4))


def test_speedup_interpolates_between_dense_checkpoints():
  # -5.5 lies halfway between dense's steps 100 (-6.0) and 200 (-5.0): dense step 150.
  result = repro_speedup.speedup_at(-5.5, 50, DENSE)
  assert result == {"dense_step": pytest.approx(150.0), "speedup": pytest.approx(3.0),
                    "lower_bound": None}
  assert repro_speedup.speedup_text(result) == "3.00x"


def test_speedup_beyond_the_dense_run_is_a_lower_bound():
  # Dense never reaches -4.3 in its 400 steps: at S = 100 the speed-up is above 400 / 100.
  result = repro_speedup.speedup_at(-4.3, 100, DENSE)
  assert result == {"dense_step": None, "speedup": None, "lower_bound": 4.0}
  assert repro_speedup.speedup_text(result) == "> 4.00x"


def test_speedup_curve_covers_every_switch_checkpoint_but_the_first():
  groups = {"dense": [DENSE], "switch_4": [_curve((0, -9.0), (100, -5.5), (200, -4.3))]}
  points = repro_speedup.speedup_curves(groups, DENSE)["switch_4"]
  assert [p["step"] for p in points] == [100, 200]
  assert points[0]["speedup"] == pytest.approx(1.5)  # dense step 150 / 100
  assert points[1]["speedup"] is None and points[1]["lower_bound"] == 2.0


def test_the_expert_count_panel_shows_each_seed_beside_the_seed_mean(tmp_path, monkeypatch):
  figures = []
  monkeypatch.setattr(repro_speedup.outputs, "save", lambda fig, path: figures.append(fig))
  groups = {"switch_4": [_curve((0, -9.0), (100, -5.5)), _curve((0, -9.0), (100, -5.3))],
            "switch_16": [_curve((0, -9.0), (100, -5.0))]}
  speedups = repro_speedup.speedup_curves(groups, DENSE)
  per_seed = {m: repro_speedup.seed_speedups(c, DENSE) for m, c in groups.items()}
  assert per_seed["switch_4"] == [pytest.approx(1.5), pytest.approx(1.7)]
  repro_speedup.plot_speedup_curves(str(tmp_path / "s.png"), speedups, 400, per_seed)
  (_, by_experts) = figures[0].axes
  (dots,) = by_experts.collections  # one seed of switch_16: no dots for it
  assert dots.get_offsets().tolist() == [[4, pytest.approx(1.5)], [4, pytest.approx(1.7)]]
  (line,) = by_experts.lines[:1]
  assert line.get_xdata().tolist() == [4, 16]  # the seed means


def test_overfitting_dense_curve_is_cut_at_its_best_checkpoint():
  falling = _curve((0, -9.0), (100, -5.0), (200, -4.5), (300, -4.7))
  cut, sentence = repro_speedup.usable_dense(falling)
  assert [r["step"] for r in cut] == [0, 100, 200]
  assert "overfits" in sentence and "up to step 200" in sentence
  # Within the seeds' spread, a lower last point is noise, not overfitting.
  noisy = _curve((0, -9.0), (100, -5.0), (200, -4.5), (300, -4.52), std=0.05)
  kept, sentence = repro_speedup.usable_dense(noisy)
  assert kept == noisy and sentence.startswith("No overfitting")


def test_summary_rows_per_seed_speedups_and_their_spread():
  seeds = [_curve((0, -9.0), (100, -5.5)), _curve((0, -9.0), (100, -5.0)),
           _curve((0, -9.0), (100, -6.0))]
  # Per seed: dense steps 150, 200 and 100 over S = 100 -> 1.5, 2.0, 1.0 (std 0.5).
  assert repro_speedup.seed_speedups(seeds, DENSE) == pytest.approx([1.5, 2.0, 1.0])
  groups = {"dense": [DENSE], "switch_16": seeds}
  rows = repro_speedup.summary_rows(groups, DENSE, DENSE, examples_per_pass=200, batch_size=4)
  dense_row, switch_row = rows
  assert dense_row[:4] == ["dense", 1, 400, "8.00"]  # 400 steps x 4 / 200 per pass
  row = dict(zip(repro_speedup.SUMMARY_HEADER, switch_row, strict=True))
  assert row["final quality (seed mean)"] == pytest.approx(-5.5)
  assert row["dense at the same step"] == -6.0
  assert row["dense step reaching it"] == "150"
  assert row["step speed-up"] == "1.50x"
  assert row["speed-up per seed"] == "1.50, 2.00, 1.00"
  assert row["(speed-up - 1) / seed std"] == "1.0"  # (1.5 - 1) / 0.5
  assert row["passes"] == "2.00"
  assert row["CPU s per step"] == pytest.approx(0.5)
  assert row["gap / pooled seed std"] == "-"  # one dense seed: no pooled std
  # Two dense seeds at -6.0 +- 0.1 at step 100 (std 0.1414): pooled sqrt((0.5^2 + 0.02) / 2).
  dense_seeds = [_curve((0, -9.0), (100, -5.9)), _curve((0, -9.0), (100, -6.1))]
  rows = repro_speedup.summary_rows({"dense": dense_seeds, "switch_16": seeds}, DENSE,
                                    repro_curves.mean_curve(dense_seeds), None, 4)
  row = dict(zip(repro_speedup.SUMMARY_HEADER, rows[1], strict=True))
  assert row["gap / pooled seed std"] == f"{0.5 / ((0.25 + 0.02) / 2) ** 0.5:.1f}"


def test_goal_verdict_reads_the_rows():
  rows = [["dense"] + ["-"] * 12,
          ["switch_16", 3, 4000, "1", -4.0, 0.01, -4.1, "5.0", "9000", "2.25x", "-", "4.0",
           1.0],
          ["switch_64", 1, 4000, "1", -3.9, None, -4.1, "-", "not within 16000", "> 4.00x",
           "-", "-", 1.0]]
  verdict = repro_speedup.goal_verdict(rows)
  assert "switch_16: step speed-up 2.25x at step 4000 (goal >= 2x, 4.0 seed std above " \
         "1x): goal met." in verdict
  assert "switch_64: step speed-up > 4.00x at step 4000 (goal >= 3x, one seed): goal met." \
         in verdict
  assert "it grows with the number of experts" in verdict
  rows[1][11] = "2.0"  # not beyond 3 seed deviations
  assert "switch_16: step speed-up 2.25x" in repro_speedup.goal_verdict(rows)
  assert "(goal >= 2x, 2.0 seed std above 1x): goal NOT met" in repro_speedup.goal_verdict(
      rows)


def test_variants_train_dense_four_times_longer_dense_first(tmp_path):
  variants = repro_speedup.model_variants()
  names = [v.name for v in variants]
  assert names[:5] == ["dense", "switch_4", "switch_16", "switch_64", "switch_128"]
  assert set(names[5:]) == {"switch_16.seed2", "switch_64.seed2", "switch_16.seed3",
                            "switch_64.seed3", "dense.seed2", "dense.seed3"}
  steps = {v.name: v.steps for v in variants}
  assert steps["dense"] == steps["dense.seed3"] == 4000
  assert steps["switch_128"] == steps["switch_64.seed2"] == 1000
  assert all(repro_speedup.SCHEDULE_GIN in v.gin_files for v in variants)
  with pytest.raises(SystemExit, match="--dense_steps 2 is below --steps 4"):
    repro_speedup.main(["--steps", "4", "--dense_steps", "2", "--only", "none",
                        "--output_dir", str(tmp_path / "runs")])
  assert not (tmp_path / "runs").exists()  # refused before the run's settings were written


def _csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_micro_run_trains_dense_longer_and_reads_speedups_off_its_curve(tmp_path):
  argv = ["--task", "switch_default_corpus_full_lm", "--steps", "4", "--dense_steps", "8",
          "--checkpoint_every", "2", "--batch_size", "4", "--eval_batches", "2",
          "--gin_file", "repro/micro.gin", "--experts", "2", "--seeds", "1",
          "--seeded_experts", "--evaluate_every", "4", "--output_dir", str(tmp_path / "runs"),
          "--results_dir", str(tmp_path / "results")]
  assert repro_speedup.main(argv) == 0
  results = tmp_path / "results"
  for name in ("README.md", "quality.png", "speedup.png", "curves.csv", "speedup.csv",
               "speedup_curve.csv"):
    assert os.path.getsize(results / name) > 0, name
  curves = {}
  for r in _csv(results / "curves.csv"):
    curves.setdefault(r["model"], []).append(
        {"step": int(r["step"]), "neg_log_perplexity": float(r["eval_neg_log_perplexity"])})
  assert [r["step"] for r in curves["dense"]] == [0, 2, 4, 6, 8]
  assert [r["step"] for r in curves["switch_2"]] == [0, 2, 4]
  dense, _ = repro_speedup.usable_dense(
      [dict(r, std=0.0) for r in curves["dense"]])
  for row in _csv(results / "speedup_curve.csv"):
    quality = float(row["switch quality (seed mean)"])
    step = int(row["switch step S"])
    assert quality == pytest.approx(next(r["neg_log_perplexity"] for r in curves["switch_2"]
                                         if r["step"] == step))
    expected = repro_speedup.speedup_text(repro_speedup.speedup_at(quality, step, dense))
    assert row["step speed-up"] == expected
  assert "dense trained 8 steps, Switch 4" in (results / "README.md").read_text()
  # Dense trained in two parts of 4 steps, each followed by an evaluation of its checkpoints.
  logs = sorted(os.listdir(tmp_path / "runs" / "dense" / "logs"))
  assert [name.split("_")[0] for name in logs].count("train") == 2, logs
  assert [name.split("_")[0] for name in logs].count("eval") == 2, logs


def test_a_cut_record_reports_its_later_checkpoints_and_plots_only_the_run_steps(tmp_path):
  dense = [{"step": s, "neg_log_perplexity": q, "std": 0.0}
           for s, q in [(0, -9.0), (100, -5.0), (200, -4.0), (300, -3.8), (400, -3.6)]]
  record = {"curve": [{"step": s, "neg_log_perplexity": q}
                      for s, q in [(0, -9.0), (50, -4.5), (100, -3.9), (150, -3.7)]],
            "training_scalars": {"moe/b/expert_load/000": {"50": 1.2, "100": 1.1, "150": 1.0}}}
  (tmp_path / "switch_4.json").write_text(json.dumps(record))
  curves = {"dense": dense, "switch_4": record["curve"][:2]}  # the run's steps: 50
  text = repro_speedup.beyond_run_text(str(tmp_path), curves, dense, 50)
  # -3.9 at S = 100: dense reaches it half-way from 200 to 300, 250 / 100; -3.7 at 150: 350.
  assert "S = 100: -3.9000, 2.50x" in text and "S = 150: -3.7000, 2.33x" in text
  assert "trained 150 steps, cut at 50" in text
  assert repro_speedup.beyond_run_text(str(tmp_path), curves, dense, 150) == ""
  scalars, _ = repro_scaling_plots.routing_records(str(tmp_path), curves)["switch_4"]
  assert scalars == {"moe/b/expert_load/000": {50: 1.2}}
